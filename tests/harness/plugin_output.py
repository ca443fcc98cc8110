"""A small reader of Nagios plugin output, written from the plugin guidelines (not from our
renderer), so tests check ``renew-check`` against the format monitoring systems parse.

    STATUS: text | 'label'=value[UOM];[warn];[crit];[min];[max] ...
    long text (more lines)

Thresholds are ranges ``[@]start:end`` (``start`` defaults to 0, ``~`` is minus infinity,
an empty ``end`` is infinity); an alert fires when the value is outside the range, or
inside it with ``@``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

STATES = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}
UOMS = {"", "s", "ms", "us", "%", "B", "KB", "MB", "TB", "c"}
_NUM = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"@?(?:(?:~|{_NUM})?:)?(?:{_NUM})?")
_ITEM = re.compile(rf"\s*('(?:[^']|'')+'|[^'=\s]+)=({_NUM})([A-Za-z%]*)((?:;[^;\s]*){{0,4}})")


class FormatError(AssertionError):
    """The output does not follow the plugin guidelines."""


@dataclass(frozen=True)
class Perf:
    label: str
    value: float
    uom: str
    warn: str
    crit: str
    minimum: float | None
    maximum: float | None


@dataclass(frozen=True)
class PluginOutput:
    state: str
    text: str
    perfdata: tuple[Perf, ...]
    long_text: tuple[str, ...]

    def perf(self, label: str) -> Perf:
        found = [p for p in self.perfdata if p.label == label]
        if len(found) != 1:
            raise KeyError(f"{label!r} in {[p.label for p in self.perfdata]}")
        return found[0]


def parse(stdout: str) -> PluginOutput:
    """Split the first line into state, text and perfdata; raise FormatError if malformed."""
    if not stdout.strip():
        raise FormatError("no output: the guidelines require at least a status line")
    first, *rest = stdout.rstrip("\n").split("\n")
    text, _, perf = first.partition("|")
    match = re.match(r"(?:[A-Z0-9_]+ )?(OK|WARNING|CRITICAL|UNKNOWN)\s*[:-]\s", text + " ")
    if not match:
        raise FormatError(f"status line does not start with a state: {first!r}")
    return PluginOutput(match.group(1), text.strip(), _perfdata(perf), tuple(rest))


def _perfdata(text: str) -> tuple[Perf, ...]:
    items = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _ITEM.match(text, pos)
        if not m:
            raise FormatError(f"bad perfdata at {text[pos:]!r}")
        label, value, uom, rest = m.groups()
        if uom not in UOMS:
            raise FormatError(f"{label}: unit {uom!r} is not one of {sorted(UOMS)}")
        fields = (rest[1:].split(";") if rest else []) + [""] * 4
        warn, crit, low, high = fields[:4]
        for r in (warn, crit):
            if r and not _RANGE.fullmatch(r):
                raise FormatError(f"{label}: {r!r} is not a range")
        for b in (low, high):
            if b and not re.fullmatch(_NUM, b):
                raise FormatError(f"{label}: min/max {b!r} is not a number")
        if label.startswith("'"):
            label = label[1:-1].replace("''", "'")
        items.append(Perf(label, float(value), uom, warn, crit,
                          float(low) if low else None, float(high) if high else None))
        pos = m.end()
    return tuple(items)


def alerts(range_text: str, value: float) -> bool:
    """Does ``value`` raise an alert against the threshold range ``range_text``?"""
    if not range_text:
        return False
    inside = range_text.startswith("@")
    body = range_text.lstrip("@")
    if ":" in body:
        start_text, end_text = body.split(":", 1)
        start = -math.inf if start_text == "~" else float(start_text or 0)
    else:
        start, end_text = 0.0, body
    end = float(end_text) if end_text else math.inf
    within = start <= value <= end
    return within if inside else not within


def implied_state(perf: Perf) -> int:
    """The least state the thresholds of one perfdata item call for."""
    if alerts(perf.crit, perf.value):
        return 2
    return 1 if alerts(perf.warn, perf.value) else 0
