"""Connect to an SMTP service, run STARTTLS (or implicit TLS) and collect what is served.

A failed probe is a result, not an exception: :func:`probe` always returns a
:class:`ProbeResult` whose ``failure`` says what went wrong. Judging the served chain
(trust, names, dates) is separate, in the verdict code; this module only observes.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509

from hook.smtp import Deadline, DeadlineExceeded, SMTPConnection, SMTPProtocolError, ehlo_keywords

_DER = 2  # _ssl.ENCODING_DER


class Failure(StrEnum):
    """Why no TLS session could be observed."""

    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    BUSY = "busy"
    NO_STARTTLS = "no_starttls"
    STARTTLS_REFUSED = "starttls_refused"
    HANDSHAKE_FAILED = "handshake_failed"
    PROTOCOL_ERROR = "protocol_error"


@dataclass(frozen=True)
class Target:
    """Where to probe: ``implicit_tls`` for port-465 style, else SMTP + STARTTLS."""

    host: str
    port: int
    implicit_tls: bool = False
    servername: str | None = None

    @property
    def label(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


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


_DEFAULT_CTX: ssl.SSLContext | None = None


def _shared_context() -> ssl.SSLContext:
    global _DEFAULT_CTX  # noqa: PLW0603 - one context per process, built lazily
    if _DEFAULT_CTX is None:
        _DEFAULT_CTX = default_context()
    return _DEFAULT_CTX


def probe(target: Target, *, timeout: float = 10.0, context: ssl.SSLContext | None = None,
          ehlo_name: str | None = None) -> ProbeResult:
    """Probe one target within ``timeout`` seconds overall."""
    start = time.monotonic()
    try:
        handshake = _probe(target, Deadline(timeout), context or _shared_context(),
                           ehlo_name or _ehlo_name())
    except _Fail as fail:
        return ProbeResult(target, None, fail.failure, fail.detail, time.monotonic() - start)
    return ProbeResult(target, handshake, None, "", time.monotonic() - start)


def _ehlo_name() -> str:
    name = socket.gethostname()
    return name if "." in name else f"{name}.localdomain"


def _probe(target: Target, deadline: Deadline, ctx: ssl.SSLContext, ehlo: str) -> Handshake:
    try:
        sock = socket.create_connection((target.host, target.port), timeout=deadline.left())
    except (DeadlineExceeded, TimeoutError) as exc:
        raise _Fail(Failure.TIMEOUT, f"connect to {target.label} timed out") from exc
    except OSError as exc:
        raise _Fail(Failure.UNREACHABLE, f"connect to {target.label}: {exc.strerror or exc}") from exc
    with contextlib.closing(sock):
        advertised = False
        try:
            if not target.implicit_tls:
                advertised = _starttls(SMTPConnection(sock, deadline), target)
            tls = _handshake(sock, ctx, target, deadline)
        except DeadlineExceeded as exc:
            raise _Fail(Failure.TIMEOUT, f"{target.label}: no answer within the timeout") from exc
        except SMTPProtocolError as exc:
            raise _Fail(Failure.PROTOCOL_ERROR, f"{target.label}: {exc}") from exc
        except OSError as exc:
            raise _Fail(Failure.UNREACHABLE, f"{target.label}: {exc.strerror or exc}") from exc
        with contextlib.closing(tls):
            cipher = tls.cipher()
            handshake = Handshake(
                chain=_served_chain(tls),
                protocol=tls.version() or "",
                cipher=cipher[0] if cipher else "",
                starttls_advertised=advertised or target.implicit_tls,
            )
            _quit(tls)
    return handshake


def _starttls(conn: SMTPConnection, target: Target) -> bool:
    greeting = conn.read_reply()
    if greeting.code == 421 or 400 <= greeting.code < 500:
        raise _Fail(Failure.BUSY, f"{target.label}: greeting {greeting.code} {greeting.text}")
    if greeting.code != 220:
        raise _Fail(Failure.UNREACHABLE, f"{target.label}: greeting {greeting.code} {greeting.text}")
    ehlo = conn.command(f"EHLO {_ehlo_name()}")
    if ehlo.code == 421:
        raise _Fail(Failure.BUSY, f"{target.label}: EHLO {ehlo.code} {ehlo.text}")
    if ehlo.code != 250:
        raise _Fail(Failure.NO_STARTTLS, f"{target.label}: EHLO refused: {ehlo.code} {ehlo.text}")
    if "STARTTLS" not in ehlo_keywords(ehlo):
        raise _Fail(Failure.NO_STARTTLS, f"{target.label}: STARTTLS not offered in EHLO reply")
    reply = conn.command("STARTTLS")
    if reply.code == 421:
        raise _Fail(Failure.BUSY, f"{target.label}: STARTTLS {reply.code} {reply.text}")
    if reply.code != 220:
        raise _Fail(Failure.STARTTLS_REFUSED, f"{target.label}: STARTTLS answered {reply.code} "
                    f"{reply.text}")
    if conn.pending():
        raise _Fail(Failure.PROTOCOL_ERROR, f"{target.label}: data after STARTTLS reply "
                    "(plaintext injection?)")
    return True


def _handshake(sock: socket.socket, ctx: ssl.SSLContext, target: Target,
               deadline: Deadline) -> ssl.SSLSocket:
    sni = target.servername or (None if _is_ip(target.host) else target.host)
    tls = ctx.wrap_socket(sock, server_hostname=sni, do_handshake_on_connect=False)
    try:
        tls.settimeout(deadline.left())
        tls.do_handshake()
    except TimeoutError as exc:
        raise DeadlineExceeded from exc
    except (ssl.SSLError, ConnectionError) as exc:
        tls.close()
        raise _Fail(Failure.HANDSHAKE_FAILED, f"{target.label}: TLS handshake failed: "
                    f"{getattr(exc, 'reason', None) or exc}") from exc
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


def _quit(tls: ssl.SSLSocket) -> None:
    with contextlib.suppress(OSError, ValueError):
        tls.settimeout(1.0)
        tls.sendall(b"QUIT\r\n")
        tls.recv(1024)


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True
