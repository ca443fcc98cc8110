"""A small threaded SMTP server with ``trustme`` certificates, for faults Postfix won't show.

Real TLS on loopback (IPv4 or IPv6), one thread per connection, and a ``Behaviour`` that
says how to misbehave: a tarpit, a byte-at-a-time drip, garbage or a 10 MB greeting,
``421`` busy, ``454`` to STARTTLS, no STARTTLS, plaintext on an implicit-TLS port, a
connection reset in the middle of the handshake, a slow multi-line greeting, bytes
injected after the ``220`` to STARTTLS. It records every command line it received and
the SNI name of every handshake, so tests can check what the client did::

    with fake_smtp(Behaviour.REFUSE_454) as srv:
        result = probe(Target(srv.host, srv.port), timeout=2)
        assert srv.commands == ["EHLO ...", "STARTTLS", "QUIT"]
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import trustme

NAME = "mail.example.test"


class Behaviour(StrEnum):
    NORMAL = "normal"                # multi-line EHLO with STARTTLS, then TLS, then QUIT
    SLOW_MULTILINE = "slow_multiline"  # greeting in three lines, 0.3 s apart (postscreen-like)
    TARPIT = "tarpit"                # accept, then say nothing at all
    DRIP = "drip"                    # a greeting line one byte every 0.2 s, never ending
    GARBAGE = "garbage"              # binary junk instead of a greeting
    HUGE_BANNER = "huge_banner"      # 10 MB of "220-" continuation lines
    BUSY_421 = "busy_421"            # "421 too busy" greeting, then close
    REFUSE_454 = "refuse_454"        # STARTTLS offered, then "454 TLS not available"
    NO_STARTTLS = "no_starttls"      # EHLO without STARTTLS
    PLAINTEXT = "plaintext"          # an SMTP greeting on a port the client treats as TLS
    RESET_HANDSHAKE = "reset_handshake"  # read the ClientHello, then RST
    INJECT = "inject"                # "220 go ahead" plus a pipelined plaintext reply
    STALL_HANDSHAKE = "stall_handshake"  # "220 go ahead", then silence during the handshake


@dataclass
class FakeSMTP:
    behaviour: Behaviour = Behaviour.NORMAL
    host: str = "127.0.0.1"
    implicit: bool = False
    ca: trustme.CA = field(default_factory=trustme.CA)
    port: int = 0
    commands: list[str] = field(default_factory=list)
    snis: list[str | None] = field(default_factory=list)
    connections: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _server: socketserver.ThreadingTCPServer | None = None

    def ca_pem(self) -> bytes:
        return bytes(self.ca.cert_pem.bytes())

    def start(self) -> None:
        leaf = self.ca.issue_cert(NAME, "127.0.0.1", "::1")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        leaf.configure_cert(ctx)

        def on_sni(sock: Any, name: str | None, _ctx: Any) -> None:
            self.snis.append(name)

        ctx.sni_callback = on_sni
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                owner.connections += 1
                with contextlib.suppress(OSError, ssl.SSLError):
                    owner._serve(self.request, ctx)

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET

        class Server(socketserver.ThreadingTCPServer):
            address_family = family
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server((self.host, self.port), Handler)
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- one connection --------------------------------------------------------------
    def _serve(self, sock: socket.socket, ctx: ssl.SSLContext) -> None:
        sock.settimeout(10)
        b = self.behaviour
        if self.implicit and b is not Behaviour.PLAINTEXT:
            if b is Behaviour.RESET_HANDSHAKE:
                sock.recv(100)
                _reset(sock)
                return
            tls = ctx.wrap_socket(sock, server_side=True)
            tls.sendall(b"220 " + NAME.encode() + b" ESMTP fake\r\n")
            self._dialogue(_Lines(tls), tls, ctx, tls_active=True)
            return
        if b is Behaviour.TARPIT:
            self._stop.wait(30)
            return
        if b is Behaviour.DRIP:
            for ch in b"220 " + b"x" * 1000:
                if self._stop.wait(0.2):
                    return
                sock.sendall(bytes([ch]))
            return
        if b is Behaviour.GARBAGE:
            sock.sendall(b"\x16\x03\x01\x00\xff\x00garbage\x00\x01\r\n")
            self._stop.wait(5)
            return
        if b is Behaviour.HUGE_BANNER:
            line = b"220-" + b"x" * 1020 + b"\r\n"
            with contextlib.suppress(OSError):
                for _ in range(10 * 1024):  # 10 MB
                    sock.sendall(line)
                sock.sendall(b"220 done\r\n")
            return
        if b is Behaviour.BUSY_421:
            sock.sendall(b"421 4.3.2 " + NAME.encode() + b" busy, try again later\r\n")
            return
        if b is Behaviour.SLOW_MULTILINE:
            for part in (b"220-" + NAME.encode() + b" ESMTP\r\n", b"220-please wait\r\n",
                         b"220 " + NAME.encode() + b" ready\r\n"):
                sock.sendall(part)
                time.sleep(0.3)
        else:
            sock.sendall(b"220 " + NAME.encode() + b" ESMTP fake\r\n")
        self._dialogue(_Lines(sock), sock, ctx, tls_active=False)

    def _dialogue(self, lines: _Lines, sock: socket.socket, ctx: ssl.SSLContext,
                  tls_active: bool) -> None:
        b = self.behaviour
        while True:
            line = lines.next()
            if line is None:
                return
            self.commands.append(line)
            verb = line.split(" ", 1)[0].upper()
            if verb == "EHLO":
                ext = [] if b is Behaviour.NO_STARTTLS or tls_active else ["STARTTLS"]
                body = [NAME, "PIPELINING", "SIZE 10240000", *ext, "8BITMIME"]
                sock.sendall(b"".join(
                    f"250{'-' if i < len(body) - 1 else ' '}{t}\r\n".encode()
                    for i, t in enumerate(body)))
            elif verb == "STARTTLS" and not tls_active:
                if b is Behaviour.REFUSE_454:
                    sock.sendall(b"454 4.7.0 TLS not available due to local problem\r\n")
                    continue
                if b is Behaviour.INJECT:
                    sock.sendall(b"220 2.0.0 go ahead\r\n250 injected\r\n")
                    self._stop.wait(2)
                    return
                sock.sendall(b"220 2.0.0 Ready to start TLS\r\n")
                if b is Behaviour.STALL_HANDSHAKE:
                    self._stop.wait(10)
                    return
                if b is Behaviour.RESET_HANDSHAKE:
                    sock.recv(100)  # part of the ClientHello
                    _reset(sock)
                    return
                tls = ctx.wrap_socket(sock, server_side=True)
                self._dialogue(_Lines(tls), tls, ctx, tls_active=True)
                return
            elif verb == "QUIT":
                sock.sendall(b"221 2.0.0 Bye\r\n")
                return
            else:
                sock.sendall(b"502 5.5.2 not in this fake\r\n")


class _Lines:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def next(self) -> str | None:
        while b"\n" not in self.buf:
            data = self.sock.recv(4096)
            if not data:
                return None
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line.rstrip(b"\r").decode("ascii", "replace")


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer sees a TCP RST, not a clean FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@contextlib.contextmanager
def fake_smtp(behaviour: Behaviour = Behaviour.NORMAL, *, host: str = "127.0.0.1",
              implicit: bool = False, port: int = 0) -> Iterator[FakeSMTP]:
    """Run a :class:`FakeSMTP` for the duration of a ``with`` block (``port`` 0: any)."""
    srv = FakeSMTP(behaviour, host=host, implicit=implicit, port=port)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
