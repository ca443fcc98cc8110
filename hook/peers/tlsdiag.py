"""What Postfix's TLS log lines mean: a tally of events, findings with the exact
``postconf -e`` fix, and the comparison of inbound failures before and after a renewal.

Pure functions over :class:`~hook.peers.tlslog.TlsEvent` (the daemon keeps its own
running counters; ``renew-check`` tallies the last day). The findings follow a trap that
costs admins hours (an anonymous aNULL cipher makes Postfix log "Untrusted"/"Anonymous"
whatever the certificate is, because no certificate is sent at all):

* an **anonymous cipher** (ADH/AECDH) inbound: the client never saw our certificate,
  so it cannot have checked the renewed one; ``smtpd_tls_exclude_ciphers = aNULL``;
* an **anonymous cipher** outbound: ``smtp_tls_exclude_ciphers = aNULL``;
* **Untrusted outbound** while ``smtp_tls_CAfile`` and ``smtp_tls_CApath`` are unset:
  Postfix's client has no CA to verify any server with; set ``smtp_tls_CAfile``. Or a
  server that was Trusted/Verified earlier and is Untrusted now: its chain changed or our
  CA bundle lacks its CA (inspect it with ``posttls-finger``; an aNULL cipher logs
  "Anonymous", not "Untrusted", so excluding aNULL is no fix for this one).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hook.peers.tlslog import Direction, Failure, Level, TlsEvent
from hook.verdict import Code, Problem, Status

CA_BUNDLES = (Path("/etc/ssl/certs/ca-certificates.crt"), Path("/etc/pki/tls/certs/ca-bundle.crt"))
"""Debian's and RHEL's CA bundle, for the ``smtp_tls_CAfile`` fix."""
SESSION_FAILURES = frozenset({Failure.HANDSHAKE, Failure.LOST_AFTER_STARTTLS})
"""Inbound failures that end a session (one failed session often logs both)."""
MAX_NAMES = 20


@dataclass
class Tally:
    """Counts of TLS events; peer sets are capped (:data:`MAX_NAMES`)."""

    levels: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(direction, level) -> sessions."""
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(direction, failure) -> lines."""
    failed_sessions: int = 0
    """Inbound sessions that failed during or right after STARTTLS (deduplicated)."""
    failed_clients: set[str] = field(default_factory=set)
    anonymous_in: set[str] = field(default_factory=set)
    anonymous_in_count: int = 0
    anonymous_out: set[str] = field(default_factory=set)
    anonymous_out_count: int = 0
    untrusted_out: set[str] = field(default_factory=set)
    untrusted_out_count: int = 0
    verified_out: set[str] = field(default_factory=set)
    """Servers seen Trusted or Verified."""
    first: float = 0.0
    last: float = 0.0
    _last_failure: dict[int, float] = field(default_factory=dict, repr=False)

    def add(self, e: TlsEvent) -> None:
        self.first = min(self.first or e.time, e.time)
        self.last = max(self.last, e.time)
        if e.level is not None:
            self.levels[(e.direction.value, e.level.value)] += 1
            if e.anonymous_cipher:
                if e.direction is Direction.INBOUND:
                    self.anonymous_in_count += 1
                    _cap_add(self.anonymous_in, e.address or e.host)
                else:
                    self.anonymous_out_count += 1
                    _cap_add(self.anonymous_out, e.host)
            elif e.direction is Direction.OUTBOUND and e.level is Level.UNTRUSTED:
                self.untrusted_out_count += 1
                _cap_add(self.untrusted_out, e.host)
            elif e.direction is Direction.OUTBOUND and e.level in (Level.TRUSTED, Level.VERIFIED):
                _cap_add(self.verified_out, e.host)
            return
        if e.failure is None:
            return
        self.failures[(e.direction.value, e.failure.value)] += 1
        if is_failed_session(e, self._last_failure):
            self.failed_sessions += 1
            _cap_add(self.failed_clients, e.address or e.host)

    def count(self, direction: Direction, level: Level | None = None) -> int:
        return sum(n for (d, lv), n in self.levels.items()
                   if d == direction.value and (level is None or lv == level.value))

    def failed(self, direction: Direction) -> int:
        return sum(n for (d, f), n in self.failures.items()
                   if d == direction.value and f != Failure.TLS_LIBRARY.value)


def is_failed_session(e: TlsEvent, recent: dict[int, float]) -> bool:
    """True once per failed inbound session: the ``lost connection after STARTTLS`` that
    follows an ``SSL_accept error`` of the same smtpd process (within 2 s) is the same
    session. An smtpd process serves one client after another, so two ``SSL_accept
    error`` lines of one process are always two sessions, however close together.
    ``recent`` (pid -> time of an ``SSL_accept error`` not yet followed by its ``lost
    connection``) is pruned here so it stays small."""
    if e.direction is not Direction.INBOUND or e.failure not in SESSION_FAILURES:
        return False
    if not e.pid:
        return True
    if e.failure is Failure.HANDSHAKE:
        recent[e.pid] = e.time
        if len(recent) > 512:
            for pid in [p for p, t in recent.items() if t < e.time - 2]:
                del recent[pid]
        return True
    before = recent.pop(e.pid, None)  # the lost connection ends that session
    return before is None or e.time - before > 2


def _cap_add(names: set[str], name: str) -> None:
    if name and len(names) < MAX_NAMES:
        names.add(name)


def is_ignored(e: TlsEvent, ignore: Collection[str]) -> bool:
    """An inbound session from one of ``ignore`` (our own probes, local monitoring)."""
    return e.direction is Direction.INBOUND and bool(e.address) and e.address in ignore


def tally(events: Iterable[TlsEvent], ignore: Collection[str] = ()) -> Tally:
    t = Tally()
    for e in events:
        if not is_ignored(e, ignore):
            t.add(e)
    return t


def _list(names: Iterable[str]) -> str:
    shown = sorted(names)
    return ", ".join(shown[:5]) + (f" and {len(shown) - 5} more" if len(shown) > 5 else "")


def ca_bundle(candidates: Iterable[Path] = CA_BUNDLES) -> Path:
    for path in candidates:
        if path.is_file():
            return path
    return CA_BUNDLES[0]


def findings(t: Tally, params: Mapping[str, str], bundle: Path | None = None) -> list[Problem]:
    """The anonymous-cipher and untrusted-outbound diagnoses, each with the fix to type.

    ``params``: Postfix's ``smtp_tls_CAfile``, ``smtp_tls_CApath``,
    ``smtpd_tls_exclude_ciphers`` and ``smtp_tls_exclude_ciphers`` (missing = unset)."""
    out: list[Problem] = []
    if t.anonymous_in_count:
        out.append(Problem(
            Code.PEER_ANONYMOUS_CIPHER, Status.WARNING,
            f"{t.anonymous_in_count} inbound TLS session(s) from {_list(t.anonymous_in)} used an "
            "anonymous (aNULL) cipher: our smtpd sent no certificate, so those clients never "
            "saw (or checked) the renewed one, and their logs say 'Untrusted' or 'Anonymous' "
            "whatever the certificate is",
            _exclude_fix("smtpd_tls_exclude_ciphers", params)))
    if t.anonymous_out_count:
        out.append(Problem(
            Code.PEER_ANONYMOUS_CIPHER, Status.WARNING,
            f"{t.anonymous_out_count} outbound TLS session(s) to {_list(t.anonymous_out)} used an "
            "anonymous (aNULL) cipher: the server sent no certificate, so Postfix logs "
            "'Anonymous'/'Untrusted' even when the server's certificate is fine",
            _exclude_fix("smtp_tls_exclude_ciphers", params)))
    if t.untrusted_out_count:
        no_ca = not params.get("smtp_tls_CAfile", "").strip() and \
            not params.get("smtp_tls_CApath", "").strip()
        again = t.untrusted_out & t.verified_out
        if no_ca:
            path = bundle or ca_bundle()
            out.append(Problem(
                Code.PEER_UNTRUSTED, Status.WARNING,
                f"{t.untrusted_out_count} outbound TLS session(s) to {_list(t.untrusted_out)} "
                "were 'Untrusted': smtp_tls_CAfile and smtp_tls_CApath are unset, so Postfix's "
                "SMTP client has no CA to verify any server with",
                f"postconf -e 'smtp_tls_CAfile = {path}' && postfix reload"))
        elif again:  # (an aNULL cipher logs 'Anonymous', not 'Untrusted': not that)
            host = sorted(again)[0]
            ca = params.get("smtp_tls_CAfile", "").strip() or params.get("smtp_tls_CApath", "").strip()
            out.append(Problem(
                Code.PEER_UNTRUSTED, Status.WARNING,
                f"outbound TLS to {_list(again)} was Trusted/Verified and is now 'Untrusted': "
                "the server's certificate or chain changed, or our CA bundle lacks its new CA",
                f"inspect the server's chain: posttls-finger -c -l verify -P /etc/ssl/certs "
                f"'{host}'; if it verifies there, the CA bundle Postfix uses ({ca}) lacks that "
                f"CA: postconf -e 'smtp_tls_CAfile = {bundle or ca_bundle()}' && postfix reload"))
    return out


def _merged(params: Mapping[str, str], name: str) -> str:
    have = [c.strip() for c in params.get(name, "").replace(",", " ").split() if c.strip()]
    return ", ".join([*have, "aNULL"] if "aNULL" not in have else have)


def _exclude_fix(name: str, params: Mapping[str, str]) -> str:
    return f"postconf -e '{name} = {_merged(params, name)}' && postfix reload"


@dataclass(frozen=True)
class Comparison:
    """Failed inbound TLS sessions after a renewal against the rate before it."""

    renewal: float
    start: float
    end: float
    after: int
    clients: int
    before_per_hour: float

    @property
    def hours(self) -> float:
        return max((self.end - self.start) / 3600, 1 / 60)

    def rise(self, min_failures: int) -> bool:
        """At least ``min_failures`` and more than twice the hourly rate before."""
        return self.after >= min_failures and self.after / self.hours > 2 * self.before_per_hour

    def describe(self, lineage: str = "") -> str:
        when = _utc(self.renewal)
        what = f" of {lineage}" if lineage else ""
        since = (f"since the renewal{what} at {when}" if self.start == self.renewal else
                 f"in the last {self.hours:.1f} h (the renewal{what} was at {when})")
        return (f"{since}: {self.after} inbound STARTTLS failure(s) from {self.clients} "
                f"client(s), before: {self.before_per_hour:.1f} an hour")


def _utc(t: float) -> str:
    import time  # noqa: PLC0415

    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))
