"""When to alert: on a change of state, again every ``repeat_interval`` while a problem
persists, and once when it is resolved. Pure functions over :class:`~daemon.state.Check`.

A restart loads the previous checks, so a problem that was already alerted is not
alerted again before its repeat time: no alert storm after a reboot or a crash loop.
"""

from __future__ import annotations

from dataclasses import replace
from enum import StrEnum

from daemon.state import Check, Kind
from hook.alert import Alert

OK = "ok"


class Reason(StrEnum):
    NEW = "new"
    """A problem appeared or changed (another status or other codes)."""
    REPEAT = "repeat"
    """The same problem still persists after ``repeat_interval``."""
    RESOLVED = "resolved"
    """A check that had a problem is fine again."""


def advance(prev: Check | None, new: Check, now: float, repeat_interval: float
            ) -> tuple[Check, Reason | None]:
    """Merge ``new`` (a fresh result) with ``prev``; say whether to alert and why.

    The returned check carries ``since`` (when this state began) and ``last_alert``; the
    caller sets ``last_alert`` to ``now`` once an alert was actually delivered.
    """
    same = prev is not None and (prev.status, prev.codes) == (new.status, new.codes)
    merged = replace(new, since=prev.since if same and prev else now,
                     last_alert=prev.last_alert if same and prev else 0.0)
    if not new.sha256 and prev is not None:  # keep the last certificate seen
        merged = replace(merged, sha256=prev.sha256, not_before=prev.not_before,
                         not_after=prev.not_after)
    if new.last_ok == 0.0 and prev is not None:
        merged = replace(merged, last_ok=prev.last_ok)
    if new.status == OK:
        if prev is not None and prev.status != OK and prev.last_alert:
            return merged, Reason.RESOLVED
        return merged, None
    if not same:
        return merged, Reason.NEW
    if merged.last_alert == 0.0 or now - merged.last_alert >= repeat_interval:
        return merged, Reason.REPEAT if merged.last_alert else Reason.NEW
    return merged, None


WHAT = {Kind.PROBE: "service", Kind.EXPIRY: "certificate", Kind.DEPLOY: "deploy",
        Kind.POSTFIX: "Postfix configuration"}


def alert_for(check: Check, reason: Reason, host: str | None = None) -> Alert:
    """The alert to send for ``check``: names host, lineage, service, problem and fix."""
    codes = ", ".join(check.codes) or check.status
    subject = check.subject if check.kind in (Kind.PROBE, Kind.POSTFIX) else \
        f"lineage {check.subject}"
    if reason is Reason.RESOLVED:
        summary = f"resolved: {WHAT[check.kind]} {subject} is ok again"
        severity, problem, action = "resolved", "resolved", "nothing: this is the all-clear"
    else:
        again = " (still)" if reason is Reason.REPEAT else ""
        summary = f"{codes}{again}: {WHAT[check.kind]} {subject}"
        severity, problem = check.status, codes
        action = check.action or "see the detail above and run 'renew-check' on the host"
    kwargs = {"host": host} if host else {}
    return Alert(summary=summary, problem=problem, action=action, lineage=check.lineage,
                 service=check.subject if check.kind is Kind.PROBE else "",
                 detail=check.detail, severity=severity, **kwargs)
