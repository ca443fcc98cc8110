"""Postfix's own TLS log lines, parsed into typed events (what peers saw of our TLS).

Pure functions over text: where the lines come from is :mod:`hook.peers.maillog`.
The lines recognised (Postfix 3.x, ``smtpd_tls_loglevel``/``smtp_tls_loglevel`` >= 1)::

    inbound (smtpd, tlsproxy)
      {Anonymous|Untrusted|Trusted|Verified} TLS connection established from H[A]: P with cipher C ...
      SSL_accept error from H[A]: REASON                    -> Failure.HANDSHAKE
      warning: TLS library problem: ...                     -> Failure.TLS_LIBRARY (no peer)
      lost connection after STARTTLS from H[A]              -> Failure.LOST_AFTER_STARTTLS
    outbound (smtp)
      {Anonymous|Untrusted|Trusted|Verified} TLS connection established to H[A]:PORT: P with cipher C ...
      certificate verification failed for H[A]:PORT: REASON -> Failure.VERIFICATION_FAILED
      SSL_connect error to H[A]:PORT: REASON                -> Failure.HANDSHAKE
      ... relay=H[A]:PORT, ... status=deferred (Server certificate not trusted|not verified)
      ... (TLS is required, but was not offered by host H[A])
      ... relay=H[A]:PORT, ... (Cannot start TLS: REASON)

"Anonymous" on the *server* side only means the client sent no certificate (the usual
case); it is an anonymous *cipher* (``ADH-``/``AECDH-``, aNULL: no server certificate at
all) that :attr:`TlsEvent.anonymous_cipher` flags. No mail address is ever kept: a
``status=`` line gives us its relay host and the TLS reason, nothing else.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass
from enum import StrEnum


class Direction(StrEnum):
    INBOUND = "inbound"
    """Clients connecting to our smtpd (or tlsproxy in front of postscreen)."""
    OUTBOUND = "outbound"
    """Our smtp client delivering to other servers."""


class Level(StrEnum):
    """Postfix's word for an established TLS session."""

    ANONYMOUS = "anonymous"
    UNTRUSTED = "untrusted"
    TRUSTED = "trusted"
    VERIFIED = "verified"


class Failure(StrEnum):
    HANDSHAKE = "handshake"
    """SSL_accept / SSL_connect failed (the peer hung up or sent an alert)."""
    TLS_LIBRARY = "tls_library"
    """OpenSSL's reason for the previous failure (logged as a warning, without the peer)."""
    LOST_AFTER_STARTTLS = "lost_after_starttls"
    """The client hung up right after STARTTLS (often: it did not like our certificate)."""
    VERIFICATION_FAILED = "verification_failed"
    NOT_TRUSTED = "not_trusted"
    NOT_VERIFIED = "not_verified"
    TLS_NOT_OFFERED = "tls_not_offered"
    CANNOT_START_TLS = "cannot_start_tls"


LEVELS = {"Anonymous": Level.ANONYMOUS, "Untrusted": Level.UNTRUSTED, "Trusted": Level.TRUSTED,
          "Verified": Level.VERIFIED}
INBOUND_PROCESSES = frozenset({"smtpd", "tlsproxy", "postscreen"})
OUTBOUND_PROCESSES = frozenset({"smtp", "lmtp"})
MAX_TEXT = 160
"""Longest reason text kept (OpenSSL reasons are short; a longer one is cut)."""


@dataclass(frozen=True, slots=True)
class TlsEvent:
    """One TLS outcome seen in Postfix's log."""

    time: float
    """Unix time of the log line (syslog lines have no year: the most recent past one)."""
    direction: Direction
    level: Level | None = None
    """Set for an established session."""
    failure: Failure | None = None
    """Set for a failure."""
    host: str = ""
    """Peer host name as Postfix logged it (``unknown`` without reverse DNS); "" if none."""
    address: str = ""
    port: int = 0
    protocol: str = ""
    cipher: str = ""
    reason: str = ""
    process: str = ""
    """``smtpd``, ``smtp``, ``tlsproxy`` (the part after the syslog name's slash)."""
    pid: int = 0

    @property
    def anonymous_cipher(self) -> bool:
        """An aNULL cipher: the server sent no certificate, so nothing could be verified."""
        return is_anonymous_cipher(self.cipher)

    @property
    def peer(self) -> str:
        return f"{self.host}[{self.address}]" if self.address else self.host


def is_anonymous_cipher(cipher: str) -> bool:
    c = cipher.upper()
    return c.startswith(("ADH-", "AECDH-")) or "_ANON_" in c or c.startswith("ANON")


# ``HOST[ADDR]`` and an optional ``:PORT``; ADDR may be IPv6 (``ipv6:`` prefix is not logged)
_PEER = r"(?P<host>[^\s\[\]]*)\[(?P<addr>[^\]\s]*)\](?::(?P<port>\d+))?"
_ESTABLISHED = re.compile(
    r"(?P<level>Anonymous|Untrusted|Trusted|Verified) TLS connection established "
    r"(?P<dir>from|to) " + _PEER + r": (?P<proto>\S+) with cipher (?P<cipher>\S+)")
_ACCEPT_ERROR = re.compile(r"SSL_(?:accept|connect) error (?:from|to) " + _PEER + r":? ?(?P<reason>.*)")
_LOST = re.compile(r"lost connection after STARTTLS from " + _PEER)
_VERIFY_FAILED = re.compile(r"certificate verification failed for " + _PEER + r": (?P<reason>.*)")
_RELAY = re.compile(r"relay=" + _PEER)
_NOT_OFFERED = re.compile(r"TLS is required, but was not offered by host " + _PEER)
_CANNOT_START = re.compile(r"Cannot start TLS: (?P<reason>[^)]*)")
_EMAIL = re.compile(r"<[^<>\s]*@[^<>\s]*>|\S+@\S+")

# the syslog header: "Dec 02 03:17:08 host postfix/smtpd[123]: " or RFC 3339 time first
_HEADER = re.compile(
    r"(?:(?P<mon>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) (?P<hms>\d\d:\d\d:\d\d)"
    r"|(?P<iso>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?)) "
    r"\S+ (?P<ident>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: ")
_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_NEEDLES = ("TLS", "SSL_", "certificate")
"""A line without any of these is not ours: tested before any regular expression (fast)."""


def interesting(message: str) -> bool:
    return any(n in message for n in _NEEDLES)


def parse_message(message: str, ident: str, pid: int, when: float) -> TlsEvent | None:
    """Parse one message (the part after ``ident[pid]: ``) of a Postfix process.

    ``ident`` is the syslog identifier (``postfix/smtpd``, ``postfix-out/smtp``)."""
    if not interesting(message):
        return None
    process = ident.rpartition("/")[2]
    if process in INBOUND_PROCESSES:
        direction = Direction.INBOUND
    elif process in OUTBOUND_PROCESSES:
        direction = Direction.OUTBOUND
    else:
        return None
    if "TLS connection established" in message:
        m = _ESTABLISHED.search(message)
        if m is None:
            return None
        return TlsEvent(when, Direction.INBOUND if m["dir"] == "from" else Direction.OUTBOUND,
                        level=LEVELS[m["level"]], host=m["host"], address=m["addr"],
                        port=int(m["port"] or 0), protocol=m["proto"], cipher=m["cipher"],
                        process=process, pid=pid)
    if "TLS library problem" in message:
        return TlsEvent(when, direction, failure=Failure.TLS_LIBRARY,
                        reason=_clean(message.split("TLS library problem:", 1)[-1]),
                        process=process, pid=pid)
    if "SSL_accept error" in message or "SSL_connect error" in message:
        m = _ACCEPT_ERROR.search(message)
        return _failure(when, direction, Failure.HANDSHAKE, m, process, pid)
    if "lost connection after STARTTLS" in message:
        return _failure(when, Direction.INBOUND, Failure.LOST_AFTER_STARTTLS, _LOST.search(message),
                        process, pid)
    if direction is not Direction.OUTBOUND:
        return None
    if "certificate verification failed" in message:
        return _failure(when, direction, Failure.VERIFICATION_FAILED, _VERIFY_FAILED.search(message),
                        process, pid)
    if "TLS is required, but was not offered" in message:
        return _failure(when, direction, Failure.TLS_NOT_OFFERED, _NOT_OFFERED.search(message),
                        process, pid)
    if "Server certificate not trusted" in message:
        failure = Failure.NOT_TRUSTED
    elif "Server certificate not verified" in message:
        failure = Failure.NOT_VERIFIED
    elif "Cannot start TLS" in message:
        failure = Failure.CANNOT_START_TLS
    else:
        return None
    relay = _RELAY.search(message)
    event = _failure(when, direction, failure, relay, process, pid)
    if failure is Failure.CANNOT_START_TLS and (r := _CANNOT_START.search(message)):
        return TlsEvent(event.time, direction, failure=failure, host=event.host,
                        address=event.address, port=event.port, reason=_clean(r["reason"]),
                        process=process, pid=pid)
    return event


def _failure(when: float, direction: Direction, failure: Failure, m: re.Match[str] | None,
             process: str, pid: int) -> TlsEvent:
    if m is None:
        return TlsEvent(when, direction, failure=failure, process=process, pid=pid)
    groups = m.groupdict()
    return TlsEvent(when, direction, failure=failure, host=m["host"], address=m["addr"],
                    port=int(groups.get("port") or 0), reason=_clean(groups.get("reason") or ""),
                    process=process, pid=pid)


def _clean(text: str) -> str:
    return _EMAIL.sub("<address>", text.strip())[:MAX_TEXT]


class LineParser:
    """Parse whole syslog-format lines (a mail.log file, Postfix's ``maillog_file``).

    Syslog timestamps carry no year (and no zone: local time); the parser assumes the
    most recent such moment not more than a day ahead of ``now``. Day starts are cached,
    so a long log costs one ``mktime`` per day, not per line.
    """

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now
        self._days: dict[tuple[str, str], float] = {}

    def parse(self, line: str) -> TlsEvent | None:
        if not interesting(line):
            return None
        h = _HEADER.match(line)
        if h is None:
            return None
        message = line[h.end():].rstrip("\n")
        when = self._time(h)
        return parse_message(message, h["ident"], int(h["pid"] or 0), when)

    def _time(self, h: re.Match[str]) -> float:
        if h["iso"]:
            try:
                t = dt.datetime.fromisoformat(h["iso"])
            except ValueError:
                return 0.0
            return (t if t.tzinfo else t.astimezone()).timestamp()
        key = (h["mon"], h["day"])
        start = self._days.get(key)
        if start is None:
            start = self._day_start(_MONTHS.get(h["mon"], 1), int(h["day"]))
            self._days[key] = start
        hh, mm, ss = h["hms"].split(":")
        return start + int(hh) * 3600 + int(mm) * 60 + int(ss)

    def _day_start(self, month: int, day: int) -> float:
        year = time.localtime(self.now).tm_year
        for y in (year, year - 1):
            try:
                start = time.mktime((y, month, day, 0, 0, 0, 0, 0, -1))
            except (OverflowError, ValueError):
                return 0.0
            if start <= self.now + 86400:
                return start
        return start


def parse_lines(lines: list[str], now: float | None = None) -> list[TlsEvent]:
    """Every TLS event in ``lines`` (syslog format), in order."""
    parser = LineParser(now)
    return [e for line in lines if (e := parser.parse(line)) is not None]
