"""The Nagios plugin conventions ``renew-check`` follows (the Nagios plugin guidelines, as
kept by the Monitoring Plugins project).

* The first line of stdout is the status line, ``STATUS: text | perfdata``; more lines
  (the details) may follow.
* Exit codes: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; every usage or configuration error
  is UNKNOWN (argparse's own exit 2 would read as CRITICAL).
* Performance data: ``'label'=value[UOM];[warn];[crit];[min];[max]``. A threshold is a
  *range*: an alert is raised when the value falls outside it, so "warn below 20 days
  left" is ``20:`` (a bare ``20`` would mean "warn above 20").
* ``-w``/``--warning`` and ``-c``/``--critical`` take days, as in check_ssl_cert, or a
  share of the certificate's lifetime (``25%``).

Kept free of heavy imports: every ``renew-check`` run loads it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from typing import NoReturn

from hook.exits import RenewCheckExit


class PluginArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors exit UNKNOWN (3) with a status line."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        print(f"UNKNOWN: usage: {message}")
        sys.exit(RenewCheckExit.UNKNOWN)

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse's own asks shutil for the width on each add_argument: shutil (with bz2
        # and lzma, ~3 ms) would load on every run, for help text that is rarely printed.
        return self.formatter_class(prog=self.prog, width=_columns() - 2)  # type: ignore[call-arg]


def _columns() -> int:
    """The terminal width as ``shutil.get_terminal_size()`` gives it (``COLUMNS``, then the
    terminal on stdout, else 80)."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 80
    return columns


def _label(text: str) -> str:
    """Quote a perfdata label: single quotes when it has spaces or specials, ' doubled."""
    text = text.replace("=", "_")
    if re.fullmatch(r"[A-Za-z0-9_.:/\[\]-]+", text):
        return text
    return "'" + text.replace("'", "''") + "'"


def _num(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))


def below(limit: float | None) -> str:
    """The range that alerts when a value drops below ``limit`` (``limit:``)."""
    return "" if limit is None else f"{_num(round(limit, 2))}:"


def perf(label: str, value: float, uom: str = "", warn: str = "", crit: str = "",
         minimum: float | None = None, maximum: float | None = None) -> str:
    """One perfdata item, e.g. ``days_left=12.5;20:;10:;0;``."""
    bounds = ";".join("" if b is None else _num(b) for b in (minimum, maximum))
    return f"{_label(label)}={_num(value)}{uom};{warn};{crit};{bounds}"


@dataclass(frozen=True)
class Threshold:
    """A ``-w``/``-c`` value: days left (``days``) or a share of the lifetime (``fraction``)."""

    days: float | None = None
    fraction: float | None = None


def threshold(text: str) -> Threshold:
    """``20`` or ``20.5`` (days, as in check_ssl_cert) or ``25%`` (of the lifetime).

    Raises :class:`argparse.ArgumentTypeError` (a usage error: UNKNOWN).
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected days (e.g. 20, as check_ssl_cert) or a share of the "
            "certificate's lifetime (e.g. 25%)")
    number = float(match.group(1))
    if match.group(2):
        if not 0 < number < 100:
            raise argparse.ArgumentTypeError(f"{text!r}: a share of the lifetime is above 0% "
                                             "and below 100%")
        return Threshold(fraction=number / 100)
    return Threshold(days=number)


def seconds(text: str) -> float:
    """A positive number of seconds (``--timeout``); else a usage error."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 3600:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds, above 0 and below 3600")
    return value
