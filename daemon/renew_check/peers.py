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
from hook.config import Config
from hook.dns import Resolver
from hook.errors import PostfixError
from hook.peers import (
    LogError,
    Tally,
    TlsRptRecord,
    TlsRptReport,
    TlsRptSummary,
    choose_log_source,
    log_findings,
    lookup_tlsrpt,
    mailbox_messages,
    read_recent_events,
    read_report_file,
    report_time,
    reports_from_message,
    summarise_reports,
    tally,
    tlsrpt_findings,
)
from hook.postfix import Postfix
from hook.verdict import Code, Problem, Status, worst

PARAMS = ("maillog_file", "myhostname", "smtp_tls_CAfile", "smtp_tls_CApath",
          "smtpd_tls_exclude_ciphers", "smtp_tls_exclude_ciphers")
DAY = 86400.0
LAST_REPORTS = 5


@dataclass(frozen=True)
class PeersView:
    source: str
    """What was read: a file path, ``the systemd journal``, or why nothing was."""
    tally: Tally | None
    hours: float = 24.0
    records: tuple[TlsRptRecord, ...] = ()
    reports: tuple[TlsRptReport, ...] = ()
    summary: TlsRptSummary = field(default_factory=TlsRptSummary)
    problems: tuple[Problem, ...] = ()

    @property
    def status(self) -> Status:
        return worst(tuple(p.status for p in self.problems))


def seen_by_peers(config: Config, postfix: Postfix, *, report_files: Sequence[Path] = (),
                  dns: bool = True, now: float | None = None,
                  resolver: Resolver | None = None) -> PeersView:
    """Never raises for an unreadable log, mailbox, report or DNS answer: they are problems."""
    now = time.time() if now is None else now
    try:
        params = postfix.parameters(*PARAMS)
    except PostfixError:
        params = {}
    try:
        names = postfix.syslog_names()
    except PostfixError:
        names = ()
    source, tally, problems = _from_the_log(config, params, now, names)
    records: tuple[TlsRptRecord, ...] = ()
    if dns:
        records = _tlsrpt_records(postfix, resolver or Resolver.from_config(config.dns))
        problems += [r.problem for r in records if r.problem is not None]
    reports, unread = _reports(config, report_files)
    problems += unread
    good = sorted((r for r in reports if not r.error), key=report_time)
    if not report_files:  # the mailbox: the reports of the last week count
        good = [r for r in good if now - (report_time(r) or now) < 7 * DAY]
    our_mx = {params.get("myhostname", ""), *config.deploy.names}
    problems += tlsrpt_findings(good, {n for n in our_mx if n})
    summary = summarise_reports([*good, *(r for r in reports if r.error)])
    return PeersView(source, tally, 24.0, records, tuple(good[-LAST_REPORTS:]), summary,
                     tuple(problems))


def _from_the_log(config: Config, params: dict[str, str], now: float,
                  postfix_names: tuple[str, ...] = ()) -> tuple[str, Tally | None, list[Problem]]:
    """Where the log is, what its last 24 h say, and the findings (or why it is unread)."""
    p = config.peers
    choice = choose_log_source(p.log_source.value, p.log_file, params.get("maillog_file", ""),
                            p.journal_directory)
    if choice.kind == "none":
        quiet = p.log_source.value == "off"
        return choice.why, None, [] if quiet else [Problem(
            Code.LOG_UNREADABLE, Status.OK, f"Postfix's log: {choice.why}",
            "set [peers] log_file or log_source")]
    source = str(choice.path) if choice.kind == "file" else "the systemd journal"
    try:
        names = tuple(dict.fromkeys([*p.syslog_names, *postfix_names]))
        counted = tally(read_recent_events(choice, now - DAY, names, now=now),
                              p.ignore_clients)
    except (LogError, OSError) as exc:
        return source, None, [Problem(Code.LOG_UNREADABLE, Status.WARNING, f"Postfix's log: {exc}",
                                      "set [peers] log_file, or run renew-check as a user who "
                                      "can read the log")]
    return source, counted, list(log_findings(counted, params))


def _tlsrpt_records(postfix: Postfix, resolver: Resolver) -> tuple[TlsRptRecord, ...]:
    """The ``_smtp._tls`` record of each domain Postfix receives mail for (50 at most)."""
    try:
        domains = sorted(mx.accepted_domains(postfix).domains)
    except PostfixError:
        domains = []
    return tuple(lookup_tlsrpt(domain, resolver) for domain in domains[:50])


def _reports(config: Config, report_files: Sequence[Path],
             ) -> tuple[list[TlsRptReport], list[Problem]]:
    """The reports given as files and those in ``[peers] tlsrpt_mailbox``."""
    reports: list[TlsRptReport] = []
    for path in report_files:
        reports += read_report_file(path)
    box = config.peers.tlsrpt_mailbox
    if box is None:
        return reports, []
    notes: list[str] = []
    try:
        for key, raw in mailbox_messages(box, (), notes):
            reports += reports_from_message(raw, f"{box} {key}")
    except (LogError, OSError) as exc:
        notes.append(f"tlsrpt_mailbox: {exc}")
    return reports, [Problem(Code.LOG_UNREADABLE, Status.WARNING, n, "check [peers] tlsrpt_mailbox")
                     for n in notes]
