"""Render ``renew-check`` results: one JSON schema, a table on a terminal, plain text else.

Models (:mod:`daemon.renew_check.survey`, :mod:`hook.tls.judgement`,
:mod:`hook.pipeline`) know nothing about
output; this module knows nothing about how they were computed.

JSON schema ``postfix-certwatch/renew-check/1`` (every command prints this shape; keys
are never removed or renamed within a schema version, only added)::

    {
      "schema": "postfix-certwatch/renew-check/1",
      "command": "check" | "probe" | "dry-run" | "peers",
      "status": "ok" | "warning" | "critical" | "unknown",
      "exit_code": 0 | 1 | 2 | 3,            # Nagios
      "checked_at": "2026-11-26T10:00:00Z",
      "summary": "one line",
      "certificates": [ {                    # check: every certificate Postfix reads
          "name", "lineage" (path|null), "files": [..], "used_by": [..],
          "leaf_sha256", "names": [..], "not_before", "not_after",
          "days_left", "lifetime_days", "lifetime_left" (0..1),
          "status", "problems": [PROBLEM],
          "dns": null | {                    # DANE, MX coverage, MTA-STS (daemon.renew_check.dnsstatus)
              "status", "problems": [PROBLEM], "notes": [..],
              "dane": null | {"mode", "status", "refused", "problems", "notes",
                  "hosts": [{"host", "owner", "state", "security", "resolver",
                             "records": [..], "match_served": [..], "match_on_disk": [..],
                             "add_for_rollover": [RR line], "publish": [RR line],
                             "rollover": [RR line], "match_new", "match_old"}]},
              "mx": null | {"status", "domains": [{"domain", "sources", "security",
                  "mx": [{"preference", "name", "addresses", "here", "covered",
                          "implicit"}], "uncovered": [..]}], "problems", "notes"},
              "uncovered_domains": [..],
              "mta_sts": [{"domain", "status", "policy_id", "url", "mode", "max_age",
                           "mx": [..], "problems", "notes"}] } } ],
      "services": [ {                        # check and probe: every TLS service probed
          "target": "host:port", "host", "port", "implicit_tls", "servername",
          "service" (master.cf name|null), "role": "mx"|"submission"|"submissions",
          "status", "problems": [PROBLEM], "leaf_sha256", "expected_sha256": [..],
          "not_after", "lifetime_left", "protocol", "cipher", "starttls_advertised",
          "seconds",
          "deep": null | {"accepted": {"anonymous"|"TLSv1"|"TLSv1.1": "TLSv1.2 AECDH-..."},
                          "refused": [..], "inconclusive": {name: reason}, "seconds"} } ],
      "audit": [PROBLEM],                    # check: Postfix TLS configuration findings
      "lineages": [ {                        # dry-run: the deploy pipeline's report
          "lineage", "status", "outcome", "message", "steps": [..],
          "old_sha256", "new_sha256", "services": [..],
          "warnings": [..], "notes": [..], "dane": null | {the deploy gate's result} } ],
      "peers": null | {                      # check and peers: what peers saw (daemon.renew_check.peers)
          "status", "source", "log": null | {"hours", "sessions": [{"direction", "level", "count"}],
              "failures": [{"direction", "failure", "count"}], "failed_inbound_sessions",
              "failed_inbound_clients", "anonymous_cipher": {"inbound", "outbound"},
              "untrusted_outbound"},
          "tlsrpt_records": [{"domain", "security", "record", "rua": [..]}],
          "reports": [{"organization", "report_id", "start", "end", "policies": [{"policy_type",
                       "domain", "successful", "failed", "failures": {result_type: n}}]}],
          "report_totals": {"reports", "sessions", "failures", "errors"}, "problems": [PROBLEM] }
    }
    PROBLEM = {"code": "<hook.verdict.Code>", "status": "...", "detail": "...", "fix": "..."}

A problem whose status is ``ok`` is advice; it never raises the exit code.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from daemon.renew_check import nagios
from hook.verdict import Problem, Status

if TYPE_CHECKING:
    from daemon.renew_check.dnsstatus import DnsStatus
    from daemon.renew_check.peers import PeersView
    from daemon.renew_check.survey import CertCheck, Survey
    from hook.pipeline import Report
    from hook.tls import Thresholds, Verdict

SCHEMA = "postfix-certwatch/renew-check/1"
_COLOURS = {Status.OK: "32", Status.WARNING: "33", Status.CRITICAL: "31", Status.UNKNOWN: "35"}


# ------------------------------------------------------------------------------ JSON
def _iso(t: dt.datetime | None) -> str | None:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t else None


def problem_json(p: Problem) -> dict[str, str]:
    return {"code": p.code.value, "status": p.status.value, "detail": p.detail, "fix": p.fix}


def verdict_json(v: Verdict, service: str | None = None,
                 expected: Sequence[str] = ()) -> dict[str, Any]:
    deep = None
    if v.deep is not None:
        deep = {"accepted": {e.value: what for e, what in v.deep.accepted},
                "refused": [e.value for e in v.deep.refused],
                "inconclusive": {e.value: why for e, why in v.deep.inconclusive},
                "seconds": round(v.deep.seconds, 4)}
    t = v.target
    return {"target": t.label, "host": t.host, "port": t.port, "implicit_tls": t.implicit_tls,
            "servername": t.servername, "service": service,
            "role": v.role.value if v.role else None, "status": v.status.value,
            "problems": [problem_json(p) for p in v.problems], "leaf_sha256": v.leaf_sha256,
            "expected_sha256": list(expected), "not_after": _iso(v.not_after),
            "lifetime_left": None if v.lifetime_left is None else round(v.lifetime_left, 4),
            "protocol": v.protocol or None, "cipher": v.cipher or None,
            "starttls_advertised": v.starttls_advertised, "seconds": round(v.seconds, 4),
            "deep": deep}


def cert_json(c: CertCheck) -> dict[str, Any]:
    def r(x: float | None, n: int) -> float | None:
        return None if x is None else round(x, n)

    return {"name": c.name, "lineage": c.lineage, "files": list(c.files),
            "used_by": list(c.used_by), "leaf_sha256": c.leaf_sha256, "names": list(c.names),
            "not_before": _iso(c.not_before), "not_after": _iso(c.not_after),
            "days_left": r(c.days_left, 2), "lifetime_days": r(c.lifetime_days, 2),
            "lifetime_left": r(c.lifetime_left, 4), "status": c.status.value,
            "problems": [problem_json(p) for p in c.problems],
            "dns": c.dns.as_record() if c.dns is not None else None}


def report_json(report: Report, status: Status) -> dict[str, Any]:
    return {"lineage": report.lineage, "status": status.value, "outcome": report.outcome.value,
            "message": report.message, "steps": list(report.steps),
            "old_sha256": report.old_sha256, "new_sha256": report.new_sha256,
            "services": list(report.services), "warnings": list(report.warnings),
            "notes": list(report.notes), "dane": report.dane.as_record() if report.dane else None}


def document(command: str, status: Status, summary: str, *,
             certificates: Iterable[dict[str, Any]] = (), services: Iterable[dict[str, Any]] = (),
             audit: Iterable[Problem] = (), lineages: Iterable[dict[str, Any]] = (),
             checked_at: dt.datetime | None = None,
             peers: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"schema": SCHEMA, "command": command, "status": status.value,
            "exit_code": status.exit_code,
            "checked_at": _iso(checked_at or dt.datetime.now(dt.UTC)), "summary": summary,
            "certificates": list(certificates), "services": list(services),
            "audit": [problem_json(p) for p in audit], "lineages": list(lineages),
            "peers": peers}


def survey_json(s: Survey) -> dict[str, Any]:
    return document("check", s.status, survey_summary(s), checked_at=s.checked_at,
                    certificates=[cert_json(c) for c in s.certificates],
                    services=[verdict_json(x.verdict, x.service, x.expected_sha256)
                              for x in s.services], audit=s.audit)


def probe_json(verdicts: Sequence[Verdict], status: Status) -> dict[str, Any]:
    return document("probe", status, counts_summary([p for v in verdicts for p in v.problems],
                                                    f"{len(verdicts)} target(s)"),
                    services=[verdict_json(v) for v in verdicts])


# ------------------------------------------------------------------------------ text
def counts_summary(problems: Iterable[Problem], what: str) -> str:
    counts = {s: 0 for s in (Status.CRITICAL, Status.WARNING, Status.UNKNOWN)}
    for p in problems:
        if p.status in counts:
            counts[p.status] += 1
    bad = ", ".join(f"{n} {s.value}" for s, n in counts.items() if n)
    return f"{what}: {bad or 'no problems'}"


def survey_summary(s: Survey) -> str:
    """Counts, then the worst finding and where (what an alert's subject line needs)."""
    text = counts_summary(s.problems, f"{len(s.certificates)} certificate(s), "
                          f"{len(s.services)} TLS service(s)")
    found: list[tuple[Problem, str]] = [
        *((p, f"certificate {c.name.rsplit('/', 1)[-1]}") for c in s.certificates
          for p in c.problems),
        *((p, f"DNS of {c.name.rsplit('/', 1)[-1]}") for c in s.certificates if c.dns
          for p in c.dns.problems),
        *((p, x.verdict.target.label) for x in s.services for p in x.verdict.problems),
        *((p, "postfix config") for p in s.audit)]
    bad = [f for f in found if f[0].status is not Status.OK]
    if not bad:
        return text
    top, where = max(bad, key=lambda f: f[0].status.rank)  # max keeps the first of a rank
    return f"{text}; worst: {top.code.value} on {where}"


def _days_perf(label: str, days_left: float, lifetime_days: float | None,
               thresholds: Thresholds | None) -> str:
    warn = crit = ""
    if thresholds is not None and lifetime_days:
        w, k = thresholds.limits(lifetime_days)
        warn, crit = nagios.below(w), nagios.below(k)
    return nagios.perf(label, round(days_left, 2), "", warn, crit,
                       0 if days_left >= 0 else None)


def _perfdata(certs: Sequence[CertCheck], thresholds: Thresholds | None) -> str:
    """``'NAME days_left'=D;W:;C:;0;`` per certificate (alert below W and C days)."""
    parts = [_days_perf(f"{c.name.rsplit('/', 1)[-1]} days_left", c.days_left,
                        c.lifetime_days, thresholds)
             for c in certs if c.days_left is not None]
    return (" | " + " ".join(parts)) if parts else ""


def probe_perfdata(verdicts: Sequence[Verdict], thresholds: Thresholds | None,
                   now: dt.datetime | None = None) -> str:
    """``time=S s`` (connect, SMTP dialogue, STARTTLS and handshake) and ``days_left``
    per target; labels carry the target when there are several."""
    now = now or dt.datetime.now(dt.UTC)
    parts = []
    for v in verdicts:
        prefix = f"{v.target.label} " if len(verdicts) > 1 else ""
        parts.append(nagios.perf(f"{prefix}time", round(v.seconds, 6), "s", minimum=0))
        if v.not_after is not None:
            days = (v.not_after - now).total_seconds() / 86400
            lifetime = ((v.not_after - v.not_before).total_seconds() / 86400
                        if v.not_before is not None else None)
            parts.append(_days_perf(f"{prefix}days_left", days, lifetime, thresholds))
    return (" | " + " ".join(parts)) if parts else ""


class Lines:
    """Rows of (status, subject, text, fix), printed as a table or as plain lines.

    A row with status ``ok`` and a problem code is advice: shown as ``note``.
    """

    def __init__(self) -> None:
        self.rows: list[tuple[str, Status, str, str, str]] = []

    def add(self, status: Status, subject: str, text: str, fix: str = "",
            advice: bool = False) -> None:
        tag = "note" if advice else status.value
        self.rows.append((tag, status, subject, text, fix))

    def problems(self, subject: str, problems: Sequence[Problem], fallback: str,
                 where: str = "") -> None:
        """One row per problem (``where: `` dropped from details: the subject says it)."""
        if not any(p.status is not Status.OK for p in problems):
            self.add(Status.OK, subject, fallback)
        for p in problems:
            detail = p.detail.removeprefix(f"{where}: ") if where else p.detail
            self.add(p.status, subject, f"{p.code.value}: {detail}", p.fix,
                     advice=p.status is Status.OK)

    def plain(self) -> list[str]:
        out = []
        for tag, _, subject, text, fix in self.rows:
            out.append(f"{tag.upper():<8} {subject}: {text}")
            if fix:
                out.append(f"         fix: {fix}")
        return out

    def table(self, width: int | None = None) -> list[str]:
        import shutil  # noqa: PLC0415 - only on a terminal
        import textwrap  # noqa: PLC0415

        width = width or shutil.get_terminal_size((120, 24)).columns
        subj_w = min(34, max((len(r[2]) for r in self.rows), default=10))
        text_w = max(30, width - subj_w - 12)
        out = [f"{'STATUS':<9} {'CHECK':<{subj_w}}  DETAIL", "-" * min(width, subj_w + 12 + text_w)]
        last = None
        for tag, status, subject, text, fix in self.rows:
            colour = "36" if tag == "note" else _COLOURS[status]
            shown = subject if subject != last else ""
            if shown and last is not None:
                out.append("")
            last = subject
            body = textwrap.wrap(text, text_w) or [""]
            if fix:  # never wrapped: a fix is a command to copy and paste
                body.append("fix: " + fix)
            out.append(f"\x1b[{colour}m{tag:<9}\x1b[0m {shown:<{subj_w}}  {body[0]}")
            out.extend(f"{'':<9} {'':<{subj_w}}  {line}" for line in body[1:])
        return out


def survey_text(s: Survey, *, tty: bool, thresholds: Thresholds | None = None) -> str:
    lines = Lines()
    for c in s.certificates:
        if c.not_after is not None and c.lifetime_left is not None:
            fallback = (f"valid until {c.not_after:%Y-%m-%d %H:%M} UTC, {c.days_left:.1f} days "
                        f"({c.lifetime_left:.0%} of {c.lifetime_days:.0f} days) left; "
                        f"sha256 {(c.leaf_sha256 or '')[:16]}")
        else:
            fallback = "unreadable"
        lines.problems(f"cert {c.name.rsplit('/', 1)[-1]}", c.problems, fallback,
                       f"certificate {c.name}")
        if c.dns is not None:
            _dns_lines(lines, f"dns {c.name.rsplit('/', 1)[-1]}", c.dns)
    for x in s.services:
        v = x.verdict
        compared = "as on disk" if x.expected_sha256 else "(not compared: files unreadable)"
        fallback = (f"{v.protocol} {v.cipher}, serves {(v.leaf_sha256 or '')[:16]} {compared} "
                    f"({v.seconds * 1000:.0f} ms)")
        name = x.service if x.service == v.target.label else f"{x.service} {v.target.label}"
        lines.problems(f"{name} ({v.role.value if v.role else '?'})", v.problems, fallback,
                       v.target.label)
    for p in s.audit:
        lines.add(p.status, "postfix config", f"{p.code.value}: {p.detail}", p.fix,
                  advice=p.status is Status.OK)
    head = f"{s.status.name}: {survey_summary(s)}"
    if tty:
        return "\n".join([head, "", *lines.table()])
    return "\n".join([head + _perfdata(s.certificates, thresholds), *lines.plain()])


def _dns_lines(lines: Lines, subject: str, d: DnsStatus) -> None:
    """DANE per host, MX coverage, MTA-STS: one line each when fine, else the problems."""
    facts: list[str] = []
    if d.dane is not None:
        for h in d.dane.hosts:
            matched = ", ".join(r.params for r in h.match_old) or "none"
            facts.append(f"DANE {h.host}: {h.state.value}" + (
                f", {len(h.records)} record(s), served chain matches {matched}"
                if h.records else ""))
            add = [line for line in h.rollover if line.split(" IN TLSA ", 1)[-1]
                   not in {str(r) for r in h.records}]
            if add and any(r.usable for r in h.records) and h.answer.security.value == "secure":
                facts.append(f"DANE {h.host}: before a key rollover add " + " | ".join(add))
    if d.mx is not None:
        here = sorted({h.name for dom in d.mx.domains for h in dom.here})
        facts.append(f"MX: {len(d.mx.domains)} accepted domain(s), MX here: "
                     f"{', '.join(here) or 'none'}, not covered: "
                     f"{', '.join(d.mx.uncovered_domains) or 'none'}")
    for r in d.mta_sts:
        if r.policy is not None:
            facts.append(f"MTA-STS {r.domain}: mode {r.policy.mode.value}, max_age "
                         f"{r.policy.max_age} s, mx {', '.join(r.policy.mx)}")
    lines.problems(subject, d.problems, "; ".join(facts) or "nothing to check")
    if any(p.status is not Status.OK for p in d.problems):
        for fact in facts:
            lines.add(Status.OK, subject, fact, advice=True)


def probe_text(verdicts: Sequence[Verdict], status: Status, *, tty: bool,
               thresholds: Thresholds | None = None) -> str:
    lines = Lines()
    for v in verdicts:
        fallback = (f"{v.protocol} {v.cipher}, leaf sha256 {v.leaf_sha256}, valid until "
                    f"{v.not_after:%Y-%m-%d} ({v.seconds * 1000:.0f} ms)" if v.not_after else "ok")
        t = v.target
        subject = f"{t.servername} {t.label}" if t.servername and t.servername != t.host else t.label
        lines.problems(subject, v.problems, fallback, t.label)
    head = f"{status.name}: " + counts_summary([p for v in verdicts for p in v.problems],
                                               f"{len(verdicts)} target(s)")
    if tty:
        return "\n".join([head, "", *lines.table()])
    return "\n".join([head + probe_perfdata(verdicts, thresholds), *lines.plain()])


def dry_run_text(items: Sequence[tuple[Report, Status]], status: Status, *, tty: bool) -> str:
    lines = Lines()
    for report, st in items:
        said = report.message
        if not said.startswith(report.outcome.value.split("_")[0]):  # never "refused: refused:"
            said = f"{report.outcome.value}: {said}"
        lines.add(st, f"lineage {report.lineage}", said)
        for step in report.steps:
            lines.add(Status.OK, f"lineage {report.lineage}", f"would: {step}")
    head = f"{status.name}: dry run of the deploy pipeline for {len(items)} lineage(s)"
    return "\n".join([head, "", *lines.table()] if tty else [head, *lines.plain()])


# ------------------------------------------------------------------------------ peers
def peers_json(v: PeersView) -> dict[str, Any]:
    """The ``peers`` key: the log's last 24 h, TLSRPT records and reports, findings."""
    t = v.tally
    log: dict[str, Any] | None = None
    if t is not None:
        log = {"hours": v.hours,
               "sessions": [{"direction": d, "level": lv, "count": n} for (d, lv), n in
                            sorted(t.levels.items())],
               "failures": [{"direction": d, "failure": f, "count": n} for (d, f), n in
                            sorted(t.failures.items())],
               "failed_inbound_sessions": t.failed_sessions,
               "failed_inbound_clients": len(t.failed_clients),
               "anonymous_cipher": {"inbound": t.anonymous_in_count, "outbound": t.anonymous_out_count},
               "untrusted_outbound": t.untrusted_out_count}
    return {"status": v.status.value, "source": v.source, "log": log,
            "tlsrpt_records": [{"domain": r.domain, "security": r.security.value, "record": r.record,
                                "rua": list(r.rua)} for r in v.records],
            "reports": [{"organization": r.organization, "report_id": r.report_id, "start": r.start,
                         "end": r.end, "policies": [
                             {"policy_type": p.policy_type, "domain": p.domain,
                              "successful": p.successful, "failed": p.failed,
                              "failures": {f.result_type: f.sessions for f in p.failures}}
                             for p in r.policies]} for r in v.reports],
            "report_totals": {"reports": v.summary.reports, "sessions": dict(v.summary.sessions),
                              "failures": dict(v.summary.failures), "errors": v.summary.errors},
            "problems": [problem_json(p) for p in v.problems]}


def peers_summary(v: PeersView) -> str:
    """One line: what peers saw in the last 24 h and in the reports."""
    from hook.peers import Direction  # noqa: PLC0415

    parts = []
    t = v.tally
    if t is not None:

        parts.append(f"24h in {t.count(Direction.INBOUND)} TLS ({t.failed_sessions} failed from "
                     f"{len(t.failed_clients)} client(s)), out {t.count(Direction.OUTBOUND)} TLS "
                     f"({t.failed(Direction.OUTBOUND)} failed, {t.untrusted_out_count} untrusted)")
    else:
        parts.append(f"no log ({v.source})")
    published = sum(1 for r in v.records if r.record)
    if v.records:
        parts.append(f"TLSRPT published for {published}/{len(v.records)} domain(s)")
    if v.summary.reports or v.summary.errors:
        parts.append(f"{v.summary.reports} report(s), {sum(v.summary.failures.values())} failed "
                     "session(s) reported")
    return "; ".join(parts)


def peers_perfdata(v: PeersView) -> str:
    from hook.peers import Direction  # noqa: PLC0415

    t = v.tally
    if t is None:
        return ""

    return (f" peers_in_tls={t.count(Direction.INBOUND)} peers_in_failed={t.failed_sessions}"
            f" peers_out_tls={t.count(Direction.OUTBOUND)} peers_out_failed={t.failed(Direction.OUTBOUND)}"
            f" tlsrpt_failed={sum(v.summary.failures.values())}")


def peers_lines(v: PeersView) -> list[str]:
    """The short "seen by peers" section for text output."""
    out = [f"seen by peers ({v.source}): {peers_summary(v)}"]
    for r in v.records:
        state = f"{r.record} ({r.security.value})" if r.record else f"none ({r.security.value})"
        out.append(f"  _smtp._tls.{r.domain}: {state}")
    for rep in v.reports:
        failed = sum(p.failed for p in rep.policies)
        ok = sum(p.successful for p in rep.policies)
        out.append(f"  report {rep.organization} {rep.end[:10]} {rep.report_id}: {ok} ok, "
                   f"{failed} failed")
    for p in v.problems:
        tag = "advice" if p.status is Status.OK else p.status.value
        out.append(f"  {tag}: {p.code.value}: {p.detail}" + (f"\n    fix: {p.fix}" if p.fix else ""))
    return out


def peers_text(v: PeersView) -> str:
    """``renew-check peers``: a Nagios first line (status, summary | perfdata), then the section."""
    head = f"{v.status.name}: seen by peers: {peers_summary(v)}"
    perf = peers_perfdata(v)
    return "\n".join([head + (f" |{perf}" if perf else ""), *peers_lines(v)[1:]])
