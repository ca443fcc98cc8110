"""Connect to an SMTP service, run STARTTLS (or implicit TLS) and collect what is served.

A failed probe is a result, not an exception: :func:`probe` always returns a
:class:`ProbeResult` whose ``failure`` says what went wrong. Judging the served chain
(trust, names, dates) is separate, in :mod:`hook.tls.judgement`; this module only observes.

Three kinds of observation:

* :func:`probe` - one handshake with a modern client (TLS 1.2+, no anonymous ciphers):
  the served chain, protocol, cipher, and whether STARTTLS was advertised.
* :func:`probe_deep` - extra handshakes that OpenSSL 3 refuses by default: an anonymous
  (``aNULL``) cipher, TLS 1.0 and TLS 1.1. The probe lowers its *own* security level
  (``@SECLEVEL=0``) for these handshakes only, in contexts of their own.
* :func:`map_bounded` / :func:`probe_many` - many targets concurrently, with a bound on
  the connections open to one host at a time (postscreen and anvil count them).

Time limits: ``timeout`` is an overall deadline for one connection (connect, every
read, STARTTLS, handshake, QUIT); ``connect_timeout`` and ``read_timeout`` bound one
step each and never outlive the overall deadline.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from cryptography import x509

from hook.tls.smtp import Deadline, DeadlineExceeded, SMTPConnection, SMTPProtocolError, ehlo_keywords

_DER = 2  # _ssl.ENCODING_DER
_PLAINTEXT_REASONS = ("WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE",
                      "UNKNOWN_PROTOCOL", "HTTP_REQUEST")


class Failure(StrEnum):
    """Why no TLS session could be observed."""

    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    BUSY = "busy"
    NO_STARTTLS = "no_starttls"
    STARTTLS_REFUSED = "starttls_refused"
    HANDSHAKE_FAILED = "handshake_failed"
    PROTOCOL_ERROR = "protocol_error"
    WRONG_MODE = "wrong_tls_mode"
    """STARTTLS asked of an implicit-TLS port or the other way round (try the other)."""
    NAME_UNRESOLVED = "dns_lookup_failed"
    """The host name does not resolve: a DNS problem, not a Postfix one."""


@dataclass(frozen=True)
class Target:
    """Where to probe: ``implicit_tls`` for port-465 style, else SMTP + STARTTLS."""

    host: str
    port: int
    implicit_tls: bool = False
    servername: str | None = None

    @property
    def label(self) -> str:
        if self.port == 0:  # an input that did not parse (see hook.endpoint): as given
            return self.host
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def sni(self) -> str | None:
        """The SNI name sent: ``servername``, else the host unless it is an address."""
        return self.servername or (None if _is_ip(self.host) else self.host)


@dataclass(frozen=True)
class Handshake:
    """What one TLS handshake showed."""

    chain: tuple[x509.Certificate, ...]
    protocol: str
    cipher: str
    starttls_advertised: bool

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]


@dataclass(frozen=True)
class ProbeResult:
    target: Target
    handshake: Handshake | None
    failure: Failure | None
    detail: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.handshake is not None


class Extra(StrEnum):
    """The extra handshakes of :func:`probe_deep`."""

    ANONYMOUS = "anonymous"
    TLS1 = "TLSv1"
    TLS1_1 = "TLSv1.1"


@dataclass(frozen=True)
class DeepResult:
    """What the extra (deliberately weak) handshakes showed.

    ``accepted`` maps each extra handshake the server completed to what was negotiated
    (``"TLSv1.2 AECDH-AES256-SHA"``); ``refused`` lists those it turned down;
    ``inconclusive`` those that could not be tried (timeout, busy, ...) with the reason.
    ``weak_handshake`` is the session seen over the oldest accepted protocol: when a
    server speaks nothing newer, it is the only way to see its certificate.
    """

    target: Target
    accepted: tuple[tuple[Extra, str], ...]
    refused: tuple[Extra, ...]
    inconclusive: tuple[tuple[Extra, str], ...]
    weak_handshake: Handshake | None
    seconds: float

    @property
    def anonymous_cipher(self) -> str | None:
        return next((what for extra, what in self.accepted if extra is Extra.ANONYMOUS), None)

    @property
    def weak_protocols(self) -> tuple[str, ...]:
        return tuple(extra.value for extra, _ in self.accepted if extra is not Extra.ANONYMOUS)


class _Fail(Exception):
    def __init__(self, failure: Failure, detail: str) -> None:
        super().__init__(detail)
        self.failure = failure
        self.detail = detail


def default_context() -> ssl.SSLContext:
    """A context that observes whatever the server sends; trust is judged afterwards."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def extra_context(extra: Extra) -> ssl.SSLContext:
    """A context for one deliberately weak handshake, at OpenSSL security level 0.

    Only :func:`probe_deep` uses these; the default probe keeps OpenSSL's defaults.
    """
    ctx = default_context()
    with warnings.catch_warnings():  # ssl.TLSVersion.TLSv1/TLSv1_1 are deprecated: on purpose
        warnings.simplefilter("ignore", DeprecationWarning)
        if extra is Extra.ANONYMOUS:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # TLS 1.3 has no anonymous suites
            # Anonymous ECDH first: the same answer as ADH, ~20x cheaper for both sides
            # than finite-field DH; ADH only for servers that offer nothing else.
            ctx.set_ciphers("kECDHE+aNULL:aNULL:!eNULL:@SECLEVEL=0")
        else:
            version = ssl.TLSVersion.TLSv1 if extra is Extra.TLS1 else ssl.TLSVersion.TLSv1_1
            ctx.minimum_version = version
            ctx.maximum_version = version
            ctx.set_ciphers("ALL:!aNULL:@SECLEVEL=0")
    return ctx


_CONTEXTS: dict[str, ssl.SSLContext] = {}
_CONTEXTS_LOCK = threading.Lock()


def _context(key: str) -> ssl.SSLContext:
    """One context per kind per process, built lazily (building one costs ~1 ms)."""
    ctx = _CONTEXTS.get(key)
    if ctx is None:
        with _CONTEXTS_LOCK:
            ctx = _CONTEXTS.get(key)
            if ctx is None:
                ctx = default_context() if key == "default" else extra_context(Extra(key))
                _CONTEXTS[key] = ctx
    return ctx


def probe(target: Target, *, timeout: float = 10.0, context: ssl.SSLContext | None = None,
          ehlo_name: str | None = None, connect_timeout: float | None = None,
          read_timeout: float | None = None, handshake_timeout: float | None = None,
          ) -> ProbeResult:
    """Probe one target within ``timeout`` seconds overall; never raises for the network.

    ``connect_timeout``, ``read_timeout`` (each SMTP reply) and ``handshake_timeout``
    bound one step each, inside the overall ``timeout``.
    """
    start = time.monotonic()
    steps = _Steps(connect_timeout, read_timeout, handshake_timeout)
    try:
        handshake = _probe(target, Deadline(timeout), context or _context("default"),
                           ehlo_name or _ehlo_name(), steps)
    except _Fail as fail:
        return ProbeResult(target, None, fail.failure, fail.detail, time.monotonic() - start)
    return ProbeResult(target, handshake, None, "", time.monotonic() - start)


def probe_deep(target: Target, *, timeout: float = 10.0, ehlo_name: str | None = None,
               extras: Sequence[Extra] = tuple(Extra), budget: float | None = None) -> DeepResult:
    """Try the weak handshakes one after the other (one connection each, never parallel).

    ``budget``: seconds for all of them together (each still at most ``timeout``); an
    extra handshake left when it is spent is ``inconclusive`` ("not tried"), never waited
    for."""
    start = time.monotonic()
    end = start + (budget if budget is not None else timeout * len(extras))
    accepted: list[tuple[Extra, str]] = []
    refused: list[Extra] = []
    unsure: list[tuple[Extra, str]] = []
    weak: Handshake | None = None
    for extra in extras:
        left = min(timeout, end - time.monotonic())
        if left < MIN_STEP:
            unsure.append((extra, "not tried: the target's time budget was spent"))
            continue
        res = probe(target, timeout=left, context=_context(extra.value), ehlo_name=ehlo_name)
        if res.handshake is not None:
            accepted.append((extra, f"{res.handshake.protocol} {res.handshake.cipher}"))
            if extra is not Extra.ANONYMOUS and weak is None and res.handshake.chain:
                weak = res.handshake
        elif res.failure is Failure.HANDSHAKE_FAILED:
            refused.append(extra)
        else:
            unsure.append((extra, f"{res.failure.value if res.failure else 'unknown'}: {res.detail}"))
    return DeepResult(target, tuple(accepted), tuple(refused), tuple(unsure), weak,
                      time.monotonic() - start)


MIN_STEP = 0.2
"""Seconds: a deep handshake with less time left than this is not started."""
MARGIN = 1.0
"""Seconds a target's result may take beyond its timeout (closing, the polite QUIT)."""


def probe_bounded(target: Target, *, timeout: float, deep: bool
                  ) -> tuple[ProbeResult, DeepResult | None]:
    """One probe and, when ``deep`` and :func:`worth_going_deep`, the extra handshakes,
    all within ``timeout`` (+ :data:`MARGIN`): the deep checks get what the first probe
    left, and those that do not fit are reported as not tried."""
    start = time.monotonic()
    res = probe(target, timeout=timeout)
    if not (deep and worth_going_deep(res)):
        return res, None
    return res, probe_deep(target, timeout=timeout,
                           budget=max(0.0, timeout - (time.monotonic() - start)))


Resolver = Callable[..., list[tuple[Any, ...]]]


def per_address(target: Target, resolve: Resolver = socket.getaddrinfo) -> list[Target]:
    """One target per address of a host name (IPv4 and IPv6), each sending the name as
    SNI: a dual-stack MX is checked on both families. An address, or a name that does
    not resolve (the probe then reports it), stays as it is."""
    if _is_ip(target.host):
        return [target]
    try:
        infos = resolve(target.host, target.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return [target]
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if len(addresses) <= 1:
        return [target]
    sni = target.servername or target.host
    return [Target(a, target.port, target.implicit_tls, sni) for a in addresses]


def worth_going_deep(result: ProbeResult) -> bool:
    """Deep checks after this result? Not when the host is down, busy or tarpitting:
    three more connections would only triple the wait."""
    return result.ok or result.failure in (Failure.HANDSHAKE_FAILED, Failure.PROTOCOL_ERROR)


_T = TypeVar("_T")
_R = TypeVar("_R")


def map_bounded(func: Callable[[_T], _R], items: Iterable[_T], *, host: Callable[[_T], str],
                per_host: int = 4, workers: int = 32) -> list[_R]:
    """``[func(item) for item in items]`` run concurrently, in order, with at most
    ``per_host`` calls at a time for items of the same ``host(item)``."""
    todo = list(items)
    if not todo:
        return []
    gates: defaultdict[str, threading.BoundedSemaphore] = defaultdict(
        lambda: threading.BoundedSemaphore(max(1, per_host)))
    for item in todo:  # create every gate up front: defaultdict is not thread-safe
        _ = gates[host(item)]

    def gated(item: _T) -> _R:
        with gates[host(item)]:
            return func(item)

    if len(todo) == 1:
        return [gated(todo[0])]
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415 - one target needs none

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo))),
                            thread_name_prefix="probe") as pool:
        return list(pool.map(gated, todo))


def probe_many(targets: Iterable[Target], *, timeout: float = 10.0, per_host: int = 4,
               workers: int = 32) -> list[ProbeResult]:
    """:func:`probe` every target concurrently (results in the order given)."""
    return map_bounded(lambda t: probe(t, timeout=timeout), targets, host=lambda t: t.host,
                       per_host=per_host, workers=workers)


@dataclass(frozen=True)
class _Steps:
    connect: float | None
    read: float | None
    handshake: float | None


_EHLO_NAME: str | None = None


def _ehlo_name() -> str:
    global _EHLO_NAME  # noqa: PLW0603 - the host name, looked up once per process
    if _EHLO_NAME is None:
        name = socket.gethostname()
        _EHLO_NAME = name if "." in name else f"{name}.localdomain"
    return _EHLO_NAME


def _probe(target: Target, deadline: Deadline, ctx: ssl.SSLContext, ehlo: str,
           steps: _Steps) -> Handshake:
    try:
        sock = socket.create_connection((target.host, target.port),
                                        timeout=deadline.left(steps.connect))
    except socket.gaierror as exc:
        raise _Fail(Failure.NAME_UNRESOLVED, f"{target.label}: the host name does not resolve "
                    f"({exc.strerror or exc})") from exc
    except (DeadlineExceeded, TimeoutError) as exc:
        raise _Fail(Failure.TIMEOUT, f"connect to {target.label} timed out") from exc
    except OSError as exc:
        raise _Fail(Failure.UNREACHABLE, f"connect to {target.label}: {exc.strerror or exc}") from exc
    with contextlib.closing(sock):
        advertised = False
        try:
            if not target.implicit_tls:
                if steps.read is None or steps.read > QUIET:  # a tighter read step wins
                    _expect_greeting(sock, target, deadline, ctx)
                advertised = _starttls(SMTPConnection(sock, deadline, steps.read), target, ehlo)
            tls = _handshake(sock, ctx, target, deadline, steps.handshake)
        except DeadlineExceeded as exc:
            raise _Fail(Failure.TIMEOUT, f"{target.label}: no answer within the timeout") from exc
        except SMTPProtocolError as exc:
            raise _Fail(Failure.PROTOCOL_ERROR, f"{target.label}: {exc}") from exc
        except OSError as exc:
            raise _Fail(Failure.UNREACHABLE, f"{target.label}: {exc.strerror or exc}") from exc
        with contextlib.closing(tls):
            cipher = tls.cipher()
            try:
                chain = _served_chain(tls)
            except ValueError as exc:  # a certificate cryptography cannot parse
                raise _Fail(Failure.PROTOCOL_ERROR, f"{target.label}: the server sent a "
                            f"certificate that cannot be parsed: {exc}") from exc
            handshake = Handshake(
                chain=chain,
                protocol=tls.version() or "",
                cipher=cipher[0] if cipher else "",
                starttls_advertised=advertised or target.implicit_tls,
            )
            if target.implicit_tls:
                # The 220 greeting comes inside TLS: read it before saying QUIT.
                with contextlib.suppress(DeadlineExceeded, SMTPProtocolError, OSError):
                    SMTPConnection(tls, Deadline(min(1.0, deadline.end - time.monotonic())),
                                   ).read_reply()
            SMTPConnection(tls, deadline).quit()
    return handshake


QUIET = 1.0
"""Seconds of silence after connecting before a STARTTLS probe asks, on a second
connection, whether the port speaks TLS from the first byte (an implicit-TLS port waits
for the client's hello and never greets). An SMTP server greets at once; postscreen
sends at least ``220-`` at once."""


def _looks_like_tls(head: bytes) -> bool:
    """A TLS alert record, or a handshake record holding a ServerHello (type 2)."""
    if len(head) < 6 or head[1] != 3 or head[2] > 4:
        return False
    length = int.from_bytes(head[3:5], "big")
    return (head[0] == 0x15 and length == 2) or (head[0] == 0x16 and head[5] == 2)


def _expect_greeting(sock: socket.socket, target: Target, deadline: Deadline,
                     ctx: ssl.SSLContext) -> None:
    """Fail at once, not after the whole timeout, when a STARTTLS probe meets TLS: a TLS
    record where the 220 greeting belongs, or silence while the port answers a TLS hello."""
    if deadline.left() < 2 * QUIET:
        return
    sock.settimeout(QUIET)
    try:
        first = sock.recv(6, socket.MSG_PEEK)
    except TimeoutError:
        first = None
    if first is not None:
        if _looks_like_tls(first):
            raise _Fail(Failure.WRONG_MODE, f"{target.label}: a TLS record came where the SMTP "
                        "220 greeting was expected: this port speaks implicit TLS (try "
                        "--implicit)")
        return
    implicit = Target(target.host, target.port, True, target.servername)
    try:
        side = socket.create_connection((target.host, target.port),
                                        timeout=deadline.left(2 * QUIET))
    except (DeadlineExceeded, OSError):
        return
    with contextlib.closing(side):
        try:
            tls = _handshake(side, ctx, implicit, Deadline(min(2 * QUIET, deadline.left())))
        except (DeadlineExceeded, _Fail, OSError):
            return
        tls.close()
    raise _Fail(Failure.WRONG_MODE, f"{target.label}: no SMTP greeting within {QUIET:g} s, "
                "but the port completes a TLS handshake at once: it speaks implicit TLS "
                "(try --implicit)")


def _starttls(conn: SMTPConnection, target: Target, ehlo_name: str) -> bool:
    greeting = conn.read_reply()  # the whole greeting, however slow or multi-line
    if 400 <= greeting.code < 500:
        conn.quit()
        raise _Fail(Failure.BUSY, f"{target.label}: greeting {greeting.code} {greeting.text}")
    if greeting.code != 220:
        conn.quit()
        raise _Fail(Failure.UNREACHABLE, f"{target.label}: greeting {greeting.code} {greeting.text}")
    ehlo = conn.command(f"EHLO {ehlo_name}")
    if ehlo.code == 421:
        raise _Fail(Failure.BUSY, f"{target.label}: EHLO {ehlo.code} {ehlo.text}")
    if ehlo.code != 250:
        conn.quit()
        raise _Fail(Failure.NO_STARTTLS, f"{target.label}: EHLO refused: {ehlo.code} {ehlo.text}")
    if "STARTTLS" not in ehlo_keywords(ehlo):
        conn.quit()
        raise _Fail(Failure.NO_STARTTLS, f"{target.label}: STARTTLS not offered in the EHLO reply")
    reply = conn.command("STARTTLS")
    if reply.code == 421:
        raise _Fail(Failure.BUSY, f"{target.label}: STARTTLS {reply.code} {reply.text}")
    if reply.code != 220:
        conn.quit()
        raise _Fail(Failure.STARTTLS_REFUSED, f"{target.label}: STARTTLS answered {reply.code} "
                    f"{reply.text}")
    if conn.pending():
        raise _Fail(Failure.PROTOCOL_ERROR, f"{target.label}: data after the STARTTLS reply "
                    "(plaintext injection?)")
    return True


def _handshake(sock: socket.socket, ctx: ssl.SSLContext, target: Target,
               deadline: Deadline, cap: float | None = None) -> ssl.SSLSocket:
    tls = ctx.wrap_socket(sock, server_hostname=target.sni, do_handshake_on_connect=False)
    try:
        tls.settimeout(deadline.left(cap))
        tls.do_handshake()
    except TimeoutError as exc:
        raise DeadlineExceeded from exc
    except (ssl.SSLError, ConnectionError) as exc:
        tls.close()
        reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
        if target.implicit_tls and any(r in str(reason).upper() for r in _PLAINTEXT_REASONS):
            raise _Fail(Failure.WRONG_MODE, f"{target.label}: plaintext (an SMTP greeting?) "
                        f"came where a TLS ServerHello was expected ({reason}): this port "
                        "speaks STARTTLS (try --starttls)") from exc
        raise _Fail(Failure.HANDSHAKE_FAILED, f"{target.label}: TLS handshake failed: "
                    f"{reason}") from exc
    return tls


def _served_chain(tls: ssl.SSLSocket) -> tuple[x509.Certificate, ...]:
    sslobj = getattr(tls, "_sslobj", None)
    getter = getattr(sslobj, "get_unverified_chain", None)
    if getter is not None:
        ders = [c.public_bytes(_DER) for c in getter() or []]
    else:  # pragma: no cover - other Pythons: the leaf only
        leaf = tls.getpeercert(binary_form=True)
        ders = [leaf] if leaf else []
    return tuple(x509.load_der_x509_certificate(d) for d in ders)


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True
