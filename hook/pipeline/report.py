"""What a run did: the :class:`Report`, built from the stages' typed results.

A stage that ends the run says so with an :class:`Ending` (outcome, message, problems);
a failure after the first write is a :class:`StageFailure` that the rollback turns into one.
:class:`hook.pipeline.draft.Draft` collects the stages' results as the run goes and builds
the report of whichever ending came.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import TYPE_CHECKING

from hook.postfix.tls_files import Mode, Usage
from hook.verdict import Problem

if TYPE_CHECKING:
    from hook.dns.dane import DaneResult


class Outcome(StrEnum):
    DEPLOYED = "deployed"
    WOULD_DEPLOY = "would_deploy"
    SKIPPED = "skipped"
    REFUSED = "refused"
    REFUSED_IN_PLACE = "refused_in_place"
    """Refused, but Postfix reads certbot's files in place: new smtpd processes are
    already loading the refused files. Not "nothing changed": act now."""
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"


def refusal_outcome(use: Usage) -> Outcome:
    """A refusal leaves the old pair served, except when Postfix reads certbot's files in
    place: those ARE the refused files, and each new smtpd process loads them."""
    return Outcome.REFUSED_IN_PLACE if use.mode is Mode.IN_PLACE else Outcome.REFUSED


@dataclass(frozen=True)
class Ending:
    """How a run ends: its outcome, the message for the admin, why (if refused)."""

    outcome: Outcome
    message: str
    problems: tuple[Problem, ...] = ()
    warnings: tuple[str, ...] = ()
    """Warnings of the last stages (trust anchors), after those of the checks."""
    notes: tuple[str, ...] = ()
    """Notes of the last stages (what a dry run did not check), after the DANE gate's."""


@dataclass(frozen=True)
class StageFailure:
    """A stage after the first write failed (apply, reload, prove): rolled back."""

    stage: str
    reason: str


Timings = tuple[tuple[str, float], ...]
"""(stage, seconds) in the order the stages ran, then ``("total", seconds)``."""


class Clock:
    """Seconds per stage (a stage that runs twice adds up), for the report's timings."""

    def __init__(self) -> None:
        self._start = self._last = time.monotonic()
        self._laps: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.monotonic()
        self._laps[stage] = round(self._laps.get(stage, 0.0) + now - self._last, 4)
        self._last = now

    def timings(self) -> Timings:
        return (*self._laps.items(), ("total", round(time.monotonic() - self._start, 4)))


@dataclass(frozen=True)
class Report:
    """What one run did (or, with ``dry_run``, would do)."""

    outcome: Outcome
    lineage: str
    message: str
    mode: str = ""
    dry_run: bool = False
    old_sha256: str | None = None
    new_sha256: str | None = None
    bundle: str | None = None
    steps: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    timings: Timings = ()
    warnings: tuple[str, ...] = ()
    problems: tuple[Problem, ...] = ()
    """Every reason the run refused, the worst first (the message starts with it)."""
    notes: tuple[str, ...] = ()
    """Facts worth a line that are not problems (e.g. "the zone is not DNSSEC-signed")."""
    dane: DaneResult | None = None
    """The DANE gate's result; None before it ran or with ``dns.dane = "off"``."""

    @property
    def publish(self) -> tuple[str, ...]:
        """The TLSA RR lines the DANE gate asks for (zone-file syntax, one per line)."""
        return self.dane.publish if self.dane is not None else ()

    def as_record(self) -> dict[str, object]:
        """Plain data for JSON (the deploy record, the log line): problems as their
        one-line text, timings as an object, the DANE gate's result under ``dane``."""
        data: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(outcome=self.outcome.value, steps=list(self.steps),
                    services=list(self.services), timings=dict(self.timings),
                    warnings=list(self.warnings), problems=[str(p) for p in self.problems],
                    notes=list(self.notes),
                    dane=self.dane.as_record() if self.dane is not None else None)
        return data
