"""The daemon's view of what peers see: it follows Postfix's log (file or journal), keeps
counters and a minute-by-minute history of failed inbound TLS sessions, and turns them
into checks (alerted like every other check by :mod:`daemon.renew_daemon.policy`)::

    check (kind peers)   status
    ───────────────────  ─────────────────────────────────────────────────────────────
    log                  warning when the log cannot be read (log_unreadable)
    tls                  seed-000 findings of the last day: anonymous (aNULL) ciphers,
                         Untrusted outbound without a CA (peer_anonymous_cipher, peer_untrusted)
    renewal LINEAGE      failed inbound STARTTLS sessions since the lineage's last deploy,
                         against the 24 h before (peer_failures_after_renewal)
    tlsrpt               TLSRPT reports whose failures name our MX (tlsrpt_failure)

Its state (log position or journal cursor, counters, history) is ``peers.json`` in the
state directory, next to ``daemon.json``: a restart neither loses nor repeats lines.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.renew_daemon.state import Check, DeployInfo, Kind
from hook import files
from hook.config import Config
from hook.peers import (
    Choice,
    Comparison,
    Direction,
    FileFollower,
    FilePosition,
    JournalFollower,
    LineParser,
    LogError,
    Tally,
    TlsEvent,
    choose_log_source,
    is_ignored,
    log_findings,
    mailbox_messages,
    report_time,
    reports_from_message,
    summarise_reports,
    tlsrpt_findings,
)
from hook.verdict import Code, Problem, Status, worst

FILENAME = "peers.json"
VERSION = 1
MINUTE = 60
HISTORY = 2 * 86400
"""Failed-session minutes kept (the 24 h before a renewal, and the window after it)."""
BASELINE = 86400
MIN_BASELINE = 900
"""Less log history than this before a renewal: no comparison (no baseline to compare with)."""
CLIENTS_PER_MINUTE = 32
MAILBOX_INTERVAL = 300
"""Seconds between reads of ``peers.tlsrpt_mailbox`` (reports come a few a day; an mbox
is read up to 64 MiB, too much for every ``peers.interval`` tick)."""
TALLY_SPAN = 86400


@dataclass
class PeerState:
    """What ``peers.json`` holds."""

    source: str = ""
    """``file:PATH`` or ``journal``: a change of source starts afresh."""
    position: dict[str, Any] | None = None
    cursor: str = ""
    since: float = 0.0
    """When log history begins (the first line read)."""
    levels: Counter[str] = field(default_factory=Counter)
    """``direction level`` -> established sessions (totals for the metrics)."""
    failures: Counter[str] = field(default_factory=Counter)
    """``direction failure`` -> failure lines."""
    domains: Counter[str] = field(default_factory=Counter)
    """``domain level`` -> outbound sessions; at most ``peers.domain_table_size`` domains."""
    lines: int = 0
    """TLS events read."""
    minutes: dict[int, list[Any]] = field(default_factory=dict)
    """minute start -> [failed inbound sessions, [client addresses (capped)]]."""
    tally_start: float = 0.0
    tally: Tally = field(default_factory=Tally)
    previous: Tally = field(default_factory=Tally)
    """The tally of the 24 h before ``tally_start`` (findings look at both)."""
    tlsrpt: dict[str, Any] = field(default_factory=dict)
    """TLSRPT: seen report ids, counters by policy and result, the last reports."""
    known_domains: set[str] = field(default_factory=set, repr=False)
    """The domains of ``domains`` (not saved: made again from it), so that the table's cap
    costs a set lookup per event, not a pass over the table."""

    def __post_init__(self) -> None:
        self.known_domains = {k.rsplit(" ", 1)[0] for k in self.domains}

    def to_json(self) -> dict[str, Any]:
        return {"version": VERSION, "source": self.source, "position": self.position,
                "cursor": self.cursor, "since": self.since, "levels": dict(self.levels),
                "failures": dict(self.failures), "domains": dict(self.domains),
                "lines": self.lines, "minutes": {str(k): v for k, v in self.minutes.items()},
                "tally_start": self.tally_start, "tally": tally_json(self.tally),
                "previous": tally_json(self.previous), "tlsrpt": self.tlsrpt}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PeerState:
        if data.get("version") != VERSION:
            raise ValueError(f"unknown peers state version {data.get('version')!r}")
        return cls(str(data.get("source", "")), data.get("position"), str(data.get("cursor", "")),
                   float(data.get("since", 0.0)), Counter(data.get("levels", {})),
                   Counter(data.get("failures", {})), Counter(data.get("domains", {})),
                   int(data.get("lines", 0)),
                   {int(k): [int(v[0]), list(v[1])] for k, v in data.get("minutes", {}).items()},
                   float(data.get("tally_start", 0.0)), tally_from(data.get("tally", {})),
                   tally_from(data.get("previous", {})), dict(data.get("tlsrpt", {})))


def tally_json(t: Tally) -> dict[str, Any]:
    return {"levels": [[d, lv, n] for (d, lv), n in t.levels.items()],
            "failures": [[d, f, n] for (d, f), n in t.failures.items()],
            "failed_sessions": t.failed_sessions, "failed_clients": sorted(t.failed_clients),
            "anonymous_in": sorted(t.anonymous_in), "anonymous_in_count": t.anonymous_in_count,
            "anonymous_out": sorted(t.anonymous_out), "anonymous_out_count": t.anonymous_out_count,
            "untrusted_out": sorted(t.untrusted_out), "untrusted_out_count": t.untrusted_out_count,
            "verified_out": sorted(t.verified_out), "first": t.first, "last": t.last}


def tally_from(data: dict[str, Any]) -> Tally:
    t = Tally()
    t.levels.update({(str(d), str(lv)): int(n) for d, lv, n in data.get("levels", [])})
    t.failures.update({(str(d), str(f)): int(n) for d, f, n in data.get("failures", [])})
    for name in ("failed_sessions", "anonymous_in_count", "anonymous_out_count", "untrusted_out_count"):
        setattr(t, name, int(data.get(name, 0)))
    for name in ("failed_clients", "anonymous_in", "anonymous_out", "untrusted_out", "verified_out"):
        setattr(t, name, {str(x) for x in data.get(name, [])})
    t.first, t.last = float(data.get("first", 0.0)), float(data.get("last", 0.0))
    return t


def load(state_dir: Path) -> tuple[PeerState, str]:
    path = state_dir / FILENAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return PeerState(), ""
    except OSError as exc:
        return PeerState(), f"cannot read {path}: {exc.strerror}; starting afresh"
    try:
        return PeerState.from_json(json.loads(raw)), ""
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        with contextlib.suppress(OSError):
            os.replace(path, path.with_name(path.name + ".corrupt"))
        return PeerState(), f"{path}: unreadable ({exc}); moved aside, starting afresh"


def save(state_dir: Path, state: PeerState) -> None:
    files.ensure_private_dir(state_dir, 0o755)
    files.atomic_write(state_dir / FILENAME,
                       json.dumps(state.to_json(), separators=(",", ":")).encode() + b"\n",
                       mode=0o644)


def domain_of(host: str) -> str:
    """``mx1.mail.example.com`` -> ``example.com`` (a coarse but bounded label)."""
    host = host.lower().rstrip(".")
    if not host or host == "unknown" or host.replace(".", "").isdigit() or ":" in host:
        return "unknown"
    labels = host.split(".")
    return ".".join(labels[-2:]) if len(labels) >= 2 else host


class PeerWatch:
    """Reads new log lines each tick and judges them; owned by the daemon's Watcher."""

    def __init__(self, config: Config, log: Any) -> None:
        self.config = config
        self.log = log
        self.state, note = load(config.deploy.state_dir)
        if note:
            log.warning("peers_state", note=note)
        self.choice: Choice | None = None
        self.file: FileFollower | None = None
        self.journal: JournalFollower | None = None
        self.error = ""
        self.params: dict[str, str] = {}
        self.postfix_names: tuple[str, ...] = ()
        """Postfix's own ``syslog_name`` values (main.cf and master.cf's ``-o``)."""
        self.mailbox_read_at: float | None = None

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def save(self) -> None:
        self._remember_position()
        save(self.config.deploy.state_dir, self.state)

    # ------------------------------------------------------------------ reading
    def set_params(self, params: dict[str, str], syslog_names: tuple[str, ...] = ()) -> None:
        """Postfix parameters: ``maillog_file`` and the ones the findings name; the
        ``syslog_name`` values Postfix's services log under (journal matches)."""
        self.params = params
        self.postfix_names = syslog_names

    @property
    def syslog_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*self.config.peers.syslog_names, *self.postfix_names]))

    def _open(self) -> None:
        p = self.config.peers
        choice = choose_log_source(p.log_source.value, p.log_file, self.params.get("maillog_file", ""),
                                p.journal_directory)
        names = self.syslog_names
        if self.choice == choice and (self.journal is None or self.journal.syslog_names == names):
            return
        self._remember_position()  # a new follower goes on from the old one's place
        self.close()
        self.choice, self.file, self.journal = choice, None, None
        source = f"file:{choice.path}" if choice.kind == "file" else choice.kind
        if source != self.state.source:  # another source: its positions mean nothing here
            self.state.source, self.state.position, self.state.cursor = source, None, ""
        if choice.kind == "file" and choice.path is not None:
            self.file = FileFollower(
                choice.path, FilePosition.from_json(self.state.position))
        elif choice.kind == "journal":
            self.journal = JournalFollower(self.state.cursor, names, choice.path)
        self.log.info("peers_source", kind=choice.kind, path=str(choice.path) if choice.path else None,
                      why=choice.why)

    def read(self, now: float) -> int:
        """Read what is new; returns the number of TLS events. Never raises for the log."""
        self._open()
        events: list[TlsEvent] = []
        try:
            if self.file is not None:
                parser = LineParser(now)
                events = [e for line in self.file.read() if (e := parser.parse(line)) is not None]
            elif self.journal is not None:
                events = self.journal.read()
            self.error = ""
        except (LogError, OSError) as exc:
            self.error = str(exc)
            self.close()
            self.choice = None  # try again next tick
        for e in events:
            self.add(e, now)
        self._prune(now)
        return len(events)

    def _remember_position(self) -> None:
        if self.file is not None and (pos := self.file.position) is not None:
            self.state.position = pos.to_json()
        if self.journal is not None:
            self.state.cursor = self.journal.cursor

    def add(self, e: TlsEvent, now: float) -> None:
        if is_ignored(e, self.config.peers.ignore_clients):
            return
        s = self.state
        s.lines += 1
        if not s.since:
            s.since = e.time or now
        if not s.tally_start:
            s.tally_start = e.time or now
        if e.level is not None:
            s.levels[f"{e.direction.value} {e.level.value}"] += 1
            if e.direction is Direction.OUTBOUND:
                domain = domain_of(e.host)
                known = s.known_domains
                if domain not in known and len(known) >= self.config.peers.domain_table_size:
                    domain = "other"
                known.add(domain)
                s.domains[f"{domain} {e.level.value}"] += 1
        elif e.failure is not None:
            s.failures[f"{e.direction.value} {e.failure.value}"] += 1
        before = s.tally.failed_sessions
        s.tally.add(e)
        if s.tally.failed_sessions > before:
            minute = int(e.time // MINUTE * MINUTE)
            slot = s.minutes.setdefault(minute, [0, []])
            slot[0] += 1
            client = e.address or e.host
            if client not in slot[1] and len(slot[1]) < CLIENTS_PER_MINUTE:
                slot[1].append(client)

    def _prune(self, now: float) -> None:
        s = self.state
        if len(s.minutes) > 0:
            cutoff = now - HISTORY - self.config.peers.renewal_window
            for minute in [m for m in s.minutes if m < cutoff]:
                del s.minutes[minute]
        if s.tally_start and now - s.tally_start > TALLY_SPAN:
            s.previous, s.tally, s.tally_start = s.tally, Tally(), now

    # ------------------------------------------------------------------ judging
    def failed_between(self, start: float, end: float) -> tuple[int, int]:
        count, clients = 0, set()
        for minute, (n, who) in self.state.minutes.items():
            if start <= minute < end:
                count += n
                clients.update(who)
        return count, len(clients)

    def comparison(self, renewal: float, now: float) -> Comparison | None:
        """Failed sessions since ``renewal`` (the minute it happened counts as after; after
        ``renewal_window``, the last hour) against the hourly rate in the 24 h before."""
        s = self.state
        covered = renewal - max(s.since, renewal - BASELINE)
        if not s.since or covered < MIN_BASELINE:
            return None
        minute = int(renewal // MINUTE * MINUTE)
        before, _ = self.failed_between(renewal - covered, minute)
        start = renewal if now <= renewal + self.config.peers.renewal_window else now - 3600
        after, clients = self.failed_between(minute if start == renewal else start, now + MINUTE)
        return Comparison(renewal, start, max(now, start + MINUTE), after, clients,
                                  before / (covered / 3600))

    def read_reports(self, now: float, our_mx: set[str]) -> int:
        """Read new mail in ``peers.tlsrpt_mailbox``; returns the number of reports."""
        path = self.config.peers.tlsrpt_mailbox
        if path is None or (self.mailbox_read_at is not None
                            and 0 <= now - self.mailbox_read_at < MAILBOX_INTERVAL):
            return 0
        self.mailbox_read_at = now
        rpt = self.state.tlsrpt
        seen: list[str] = rpt.setdefault("seen", [])
        sessions, failures = Counter(rpt.get("sessions", {})), Counter(rpt.get("failures", {}))
        last: list[dict[str, Any]] = rpt.setdefault("last", [])
        found: list[dict[str, Any]] = rpt.setdefault("findings", [])
        count = 0
        notes: list[str] = []
        try:
            for key, raw in mailbox_messages(path, seen, notes):
                seen.append(key)
                # saved before the message is parsed: one that kills us (memory) is not
                # parsed again after the restart, over and over
                rpt["sessions"], rpt["failures"] = dict(sessions), dict(failures)
                self.save()
                for r in reports_from_message(raw, f"{path} {key}"):
                    if r.error:
                        self.log.warning("tlsrpt", source=r.source, error=r.error)
                        continue
                    if r.note:
                        self.log.warning("tlsrpt", source=r.source, note=r.note)
                    count += 1
                    rpt["reports"] = int(rpt.get("reports", 0)) + 1
                    summary = summarise_reports([r])
                    sessions.update(summary.sessions)
                    failures.update(summary.failures)
                    last.append({"organization": r.organization, "report_id": r.report_id,
                                 "end": r.end, "failures": dict(summary.failures),
                                 "sessions": dict(summary.sessions)})
                    if now - (report_time(r) or now) < 7 * 86400:  # older: history
                        found += [{"time": now, "detail": p.detail, "fix": p.fix}
                                  for p in tlsrpt_findings([r], our_mx)]
            rpt["error"] = "; ".join(notes)
        except (LogError, OSError) as exc:
            rpt["error"] = f"{path}: {exc}"
        rpt["seen"] = seen[-2000:]
        rpt["last"] = last[-10:]
        rpt["findings"] = [f for f in found if now - f["time"] < 7 * 86400][-20:]
        rpt["sessions"], rpt["failures"] = dict(sessions), dict(failures)
        return count

    def _tlsrpt_check(self, now: float) -> Check:
        rpt = self.state.tlsrpt
        problems = [Problem(Code.TLSRPT_FAILURE, Status.WARNING, f["detail"], f["fix"])
                    for f in rpt.get("findings", [])]
        if rpt.get("error"):
            problems.append(Problem(Code.LOG_UNREADABLE, Status.WARNING, rpt["error"],
                                    "check [peers] tlsrpt_mailbox"))
        return _check("tlsrpt", problems, now)

    def checks(self, now: float, deploys: dict[str, DeployInfo]) -> list[Check]:
        """The peers checks for this tick (see the module docstring)."""
        out = [self._log_check(now), self._tls_check(now)]
        if self.config.peers.tlsrpt_mailbox is not None:
            out.append(self._tlsrpt_check(now))
        for name, info in sorted(deploys.items()):
            if info.last_success:
                out.append(self._renewal_check(name, info.last_success, now))
        return out

    def _log_check(self, now: float) -> Check:
        choice = self.choice
        if self.error or choice is None or choice.kind == "none":
            why = self.error or (choice.why if choice else "not opened")
            disabled = choice is not None and self.config.peers.log_source.value == "off"
            return Check(Kind.PEERS, "log", status=Status.OK.value if disabled else Status.WARNING.value,
                         codes=() if disabled else (Code.LOG_UNREADABLE.value,),
                         detail=f"Postfix's log: {why}", last_run=now,
                         action="set [peers] log_file (or log_source = \"journal\") in the config, "
                                "or give the daemon read access to the log")
        where = str(choice.path) if choice.kind == "file" else "the systemd journal"
        return Check(Kind.PEERS, "log", status=Status.OK.value, detail=f"reading {where}",
                     last_run=now, last_ok=now)

    def _tls_check(self, now: float) -> Check:
        merged = Tally()
        for t in (self.state.previous, self.state.tally):
            merged.levels.update(t.levels)
            merged.failures.update(t.failures)
            merged.anonymous_in_count += t.anonymous_in_count
            merged.anonymous_out_count += t.anonymous_out_count
            merged.untrusted_out_count += t.untrusted_out_count
            for name in ("anonymous_in", "anonymous_out", "untrusted_out", "verified_out"):
                getattr(merged, name).update(getattr(t, name))
        problems = log_findings(merged, self.params)
        return _check("tls", problems, now)

    def _renewal_check(self, lineage: str, renewal: float, now: float) -> Check:
        cmp = self.comparison(renewal, now)
        window = self.config.peers.renewal_window
        if cmp is None or now - renewal > window + BASELINE:
            return Check(Kind.PEERS, f"renewal {lineage}", status=Status.OK.value, lineage=lineage,
                         detail="" if cmp else "not enough log history before the renewal",
                         last_run=now, last_ok=now)
        detail = cmp.describe(lineage)
        if not cmp.rise(self.config.peers.min_failures):
            return Check(Kind.PEERS, f"renewal {lineage}", status=Status.OK.value, lineage=lineage,
                         detail=detail, last_run=now, last_ok=now)
        return Check(Kind.PEERS, f"renewal {lineage}", status=Status.WARNING.value,
                     codes=(Code.PEER_FAILURES_AFTER_RENEWAL.value,), lineage=lineage,
                     detail=detail, last_run=now,
                     action="clients fail the TLS handshake with the renewed certificate: check "
                            "the chain and key type ('renew-check'), the clients' errors "
                            "('SSL_accept error' lines in Postfix's log), and whether they pin "
                            "the old key (DANE 3 1 1 records: 'renew-check' shows them)")


def _check(subject: str, problems: list[Problem], now: float) -> Check:
    status = worst([p.status for p in problems])
    return Check(Kind.PEERS, subject, status=status.value, codes=tuple(p.code.value for p in problems),
                 detail="; ".join(p.detail for p in problems),
                 action=" ; ".join(dict.fromkeys(p.fix for p in problems if p.fix)),
                 last_run=now, last_ok=now)
