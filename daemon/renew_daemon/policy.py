"""When to alert: on a change of state, again every ``repeat_interval`` while a problem
persists, and once when it is resolved. Pure functions over :class:`~daemon.renew_daemon.state.Check`.

A restart loads the previous checks, so a problem that was already alerted is not
alerted again before its repeat time: no alert storm after a reboot or a crash loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from enum import StrEnum

from daemon.renew_daemon.state import Check, Kind
from hook.alert import Alert
from hook.verdict import Status, worst

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
        Kind.POSTFIX: "Postfix configuration", Kind.PEERS: "seen by peers:"}


def alert_for(check: Check, reason: Reason, host: str | None = None) -> Alert:
    """The alert to send for ``check``: names host, lineage, service, problem and fix."""
    codes = ", ".join(check.codes) or check.status
    subject = check.subject if check.kind in (Kind.PROBE, Kind.POSTFIX, Kind.PEERS) else \
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


def digest(items: Sequence[tuple[Check, Reason]], host: str | None = None) -> Alert:
    """One alert for several checks that changed in the same job: a renewal that did
    not reach Postfix is one mail naming its three services, not three mails."""
    if len(items) == 1:
        return alert_for(items[0][0], items[0][1], host=host)
    parts = [(c, alert_for(c, r, host=host)) for c, r in items]
    resolved = all(r is Reason.RESOLVED for _, r in items)
    subjects = ", ".join(c.subject for c, _ in items)
    if resolved:
        summary, problem = f"resolved: {len(items)} checks ok again ({subjects})", "resolved"
        severity, action = "resolved", "nothing: this is the all-clear"
    else:
        bad = [c for c, r in items if r is not Reason.RESOLVED]
        problem = ", ".join(sorted({code for c in bad for code in c.codes} or {bad[0].status}))
        summary = f"{problem}: {len(items)} checks ({subjects})"
        severity = worst([Status(c.status) for c in bad]).value
        actions = list(dict.fromkeys(a.action for _, a in parts if a.severity != "resolved"))
        action = actions[0] if len(actions) == 1 else "".join(f"\n- {a}" for a in actions)
    if len(summary) > 160:
        summary = summary[:157] + "..."
    detail = "\n".join(f"* {a.summary}" + (f"\n  {a.detail}" if a.detail else "")
                       for _, a in parts)
    kwargs = {"host": host} if host else {}
    return Alert(summary=summary, problem=problem, action=action,
                 lineage=", ".join(dict.fromkeys(c.lineage for c, _ in items if c.lineage)),
                 service=", ".join(c.subject for c, _ in items if c.kind is Kind.PROBE),
                 detail=detail, severity=severity, **kwargs)
