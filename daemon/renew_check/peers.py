"""``renew-check``'s "seen by peers" section: the last 24 h of Postfix's TLS log lines,
whether each domain Postfix receives mail for publishes ``_smtp._tls`` (TLSRPT), and the
reports that arrived (``[peers] tlsrpt_mailbox``, or files on the command line).
Models only; rendering is :mod:`daemon.renew_check.render`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from daemon.renew_check import mx
from hook import tlsrpt
from hook.config import Config
from hook.dns.resolver import Resolver
from hook.errors import PostfixError
from hook.postfix import maillog, tlsdiag
from hook.postfix.instance import Postfix
from hook.verdict import Code, Problem, Status, worst

PARAMS = ("maillog_file", "myhostname", "smtp_tls_CAfile", "smtp_tls_CApath",
          "smtpd_tls_exclude_ciphers", "smtp_tls_exclude_ciphers")
DAY = 86400.0
LAST_REPORTS = 5


@dataclass(frozen=True)
class PeersView:
    source: str
    """What was read: a file path, ``the systemd journal``, or why nothing was."""
    tally: tlsdiag.Tally | None
    hours: float = 24.0
    records: tuple[tlsrpt.TlsRptRecord, ...] = ()
    reports: tuple[tlsrpt.Report, ...] = ()
    summary: tlsrpt.Summary = field(default_factory=tlsrpt.Summary)
    problems: tuple[Problem, ...] = ()

    @property
    def status(self) -> Status:
        return worst(tuple(p.status for p in self.problems))


def seen_by_peers(config: Config, postfix: Postfix, *, report_files: Sequence[Path] = (),
                  dns: bool = True, now: float | None = None,
                  resolver: Resolver | None = None) -> PeersView:
    """Never raises for an unreadable log, mailbox, report or DNS answer: they are problems."""
    now = time.time() if now is None else now
    problems: list[Problem] = []
    try:
        params = postfix.parameters(*PARAMS)
    except PostfixError:
        params = {}
    p = config.peers
    choice = maillog.choose(p.log_source.value, p.log_file, params.get("maillog_file", ""),
                            p.journal_directory)
    tally = None
    source = choice.why
    if choice.kind != "none":
        source = str(choice.path) if choice.kind == "file" else "the systemd journal"
        try:
            tally = tlsdiag.tally(maillog.read_recent(choice, now - DAY, p.syslog_names, now=now),
                                  p.ignore_clients)
            problems += tlsdiag.findings(tally, params)
        except (maillog.LogError, OSError) as exc:
            problems.append(Problem(Code.LOG_UNREADABLE, Status.WARNING, f"Postfix's log: {exc}",
                                    "set [peers] log_file, or run renew-check as a user who can "
                                    "read the log"))
    elif p.log_source.value != "off":
        problems.append(Problem(Code.LOG_UNREADABLE, Status.OK, f"Postfix's log: {choice.why}",
                                "set [peers] log_file or log_source"))
    records: list[tlsrpt.TlsRptRecord] = []
    if dns:
        resolver = resolver or Resolver.from_config(config.dns)
        try:
            domains = sorted(mx.accepted_domains(postfix).domains)
        except PostfixError:
            domains = []
        for domain in domains[:50]:
            rec = tlsrpt.lookup(domain, resolver)
            records.append(rec)
            if rec.problem is not None:
                problems.append(rec.problem)
    reports: list[tlsrpt.Report] = []
    for path in report_files:
        reports += tlsrpt.read_file(path)
    if p.tlsrpt_mailbox is not None:
        try:
            for key, raw in tlsrpt.mailbox_messages(p.tlsrpt_mailbox):
                reports += tlsrpt.from_message(raw, f"{p.tlsrpt_mailbox} {key}")
        except (maillog.LogError, OSError) as exc:
            problems.append(Problem(Code.LOG_UNREADABLE, Status.WARNING,
                                    f"tlsrpt_mailbox: {exc}", "check [peers] tlsrpt_mailbox"))
    good = sorted((r for r in reports if not r.error), key=tlsrpt.report_time)
    if not report_files:  # the mailbox: the reports of the last week count
        good = [r for r in good if now - (tlsrpt.report_time(r) or now) < 7 * DAY]
    our_mx = {params.get("myhostname", ""), *config.deploy.names}
    problems += tlsrpt.findings(good, {n for n in our_mx if n})
    summary = tlsrpt.summarise([*good, *(r for r in reports if r.error)])
    return PeersView(source, tally, 24.0, tuple(records), tuple(good[-LAST_REPORTS:]), summary,
                     tuple(problems))
