"""The exit codes of the three programs: one table per program, each code with its meaning.

This module is the only place the numbers are defined; the command-line front ends
return these members, ``renew-check``'s codes are also :attr:`hook.verdict.Status.exit_code`,
and the README's exit-code tables are checked against these enums (``tests/test_readme.py``).
Every member carries a one-line ``meaning``.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Self


class DocumentedExit(IntEnum):
    """An exit code with a one-line meaning (``member.meaning``); subclasses hold the codes."""

    meaning: str

    def __new__(cls, value: int, meaning: str = "") -> Self:
        member = int.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        return member


class DeployHookExit(DocumentedExit):
    """``postfix-deploy-hook``."""

    OK = 0, "deployed and proven (with --dry-run: would deploy)"
    INTERNAL = 1, "internal error (the alert still goes out)"
    USAGE = 2, "usage or configuration error, or no usable lineage"
    REFUSED = 3, ("refused before any change: validation failed, the DANE gate found no "
                  "matching TLSA record, or Postfix is stopped or fails 'postfix check'; "
                  "the old certificate is still served")
    ROLLED_BACK = 4, "reload or proof failed; the previous certificate was restored and proven"
    ROLLBACK_FAILED = 5, "the rollback failed too: act now"
    NOTHING_TO_DO = 6, "the lineage is not used by Postfix (0 when run by certbot)"
    REFUSED_IN_PLACE = 7, ("refused, but Postfix reads certbot's live/ files in place, so new "
                           "smtpd processes already load the refused files: act now, then "
                           "'renew-check adopt'")
    DEADLINE = 8, ("the run passed deploy.hook_deadline: what it changed was rolled back "
                   "(the message says whether that worked) and certbot can go on")


class RenewCheckExit(DocumentedExit):
    """``renew-check`` (every command): the Nagios plugin convention; a usage error (an
    unknown option, a bad value) is UNKNOWN too, never argparse's 2 (CRITICAL to Nagios)."""

    OK = 0, "OK: no problem (advice, shown as note, never raises the code)"
    WARNING = 1, "WARNING: the worst finding is a warning"
    CRITICAL = 2, "CRITICAL: the worst finding is critical"
    UNKNOWN = 3, ("UNKNOWN: the check could not run (usage or configuration error, unreadable "
                   "files, internal error)")


class RenewDaemonExit(DocumentedExit):
    """``renew-daemon``."""

    OK = 0, "stopped by SIGTERM or SIGINT"
    INTERNAL = 1, "internal error (systemd restarts it)"
    USAGE = 2, "command-line usage error (argparse)"
    CONFIG = 78, ("configuration error (EX_CONFIG; in the unit's RestartPreventExitStatus=: "
                  "a restart would not help)")


PROGRAMS: dict[str, type[DocumentedExit]] = {
    "postfix-deploy-hook": DeployHookExit,
    "renew-check": RenewCheckExit,
    "renew-daemon": RenewDaemonExit,
}
"""Console script -> its exit codes."""
