"""A small, careful SMTP client for the STARTTLS probe.

Postscreen-safe: it reads the whole (possibly multi-line, possibly delayed) greeting
before it speaks, parses multi-line replies in full, never pipelines, and treats
``421`` as "busy". Every read honours one overall deadline, and a reply is capped in
size, so a tarpit or a 10 MB banner ends in time with a clear failure.
"""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass

MAX_REPLY_BYTES = 64 * 1024
MAX_LINE_BYTES = 4096


class SMTPProtocolError(Exception):
    """The peer broke the SMTP protocol (garbage, oversized reply, early close)."""


class DeadlineExceeded(Exception):
    """The overall deadline of the probe passed."""


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " / ".join(self.lines)


class Deadline:
    """An absolute monotonic deadline; ``left()`` is what every blocking call may use.

    ``left(cap)`` bounds one step (connect, one read) by ``cap`` as well, so a step
    timeout never outlives the overall one.
    """

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self, cap: float | None = None) -> float:
        remaining = self.end - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded
        return remaining if cap is None else min(remaining, cap)


class SMTPConnection:
    """Line-oriented SMTP over a connected socket (plain or TLS)."""

    def __init__(self, sock: socket.socket, deadline: Deadline,
                 read_timeout: float | None = None) -> None:
        self.sock = sock
        self.deadline = deadline
        self.read_timeout = read_timeout
        self._buf = b""

    def _fill(self) -> None:
        self.sock.settimeout(self.deadline.left(self.read_timeout))
        try:
            data = self.sock.recv(16384)
        except TimeoutError as exc:
            raise DeadlineExceeded from exc
        if not data:
            raise SMTPProtocolError("connection closed by the server")
        self._buf += data

    def _line(self, budget: int) -> bytes:
        while b"\n" not in self._buf:
            if len(self._buf) > min(MAX_LINE_BYTES, budget):
                raise SMTPProtocolError(f"reply line longer than {MAX_LINE_BYTES} bytes")
            self._fill()
        line, _, self._buf = self._buf.partition(b"\n")
        if len(line) > MAX_LINE_BYTES:
            raise SMTPProtocolError(f"reply line longer than {MAX_LINE_BYTES} bytes")
        return line.rstrip(b"\r")

    def read_reply(self) -> Reply:
        """Read one complete (multi-line) reply: ``250-a`` ... ``250 z``."""
        lines: list[str] = []
        total = 0
        code = None
        while True:
            raw = self._line(MAX_REPLY_BYTES - total)
            total += len(raw) + 1
            if total > MAX_REPLY_BYTES:
                raise SMTPProtocolError(f"reply longer than {MAX_REPLY_BYTES} bytes")
            text = raw.decode("utf-8", "replace")
            if len(text) < 3 or not text[:3].isdigit() or (len(text) > 3 and text[3] not in " -"):
                raise SMTPProtocolError(f"not an SMTP reply: {text[:80]!r}")
            this = int(text[:3])
            if code is not None and this != code:
                raise SMTPProtocolError(f"reply code changed inside a reply: {code} then {this}")
            code = this
            lines.append(text[4:])
            if len(text) == 3 or text[3] == " ":
                return Reply(code, tuple(lines))

    def command(self, line: str) -> Reply:
        """Send one command and read its whole reply (never pipelined)."""
        self.sock.settimeout(self.deadline.left())
        try:
            self.sock.sendall(line.encode("ascii") + b"\r\n")
        except TimeoutError as exc:
            raise DeadlineExceeded from exc
        return self.read_reply()

    def quit(self) -> None:
        """Say ``QUIT`` and wait briefly for the ``221``: polite, never an error."""
        with contextlib.suppress(OSError, DeadlineExceeded, SMTPProtocolError):
            self.sock.settimeout(self.deadline.left(1.0))
            self.sock.sendall(b"QUIT\r\n")
            self.read_timeout = min(self.read_timeout or 1.0, 1.0)
            self.read_reply()

    def pending(self) -> bytes:
        """Bytes the server sent beyond the last reply (a STARTTLS injection sign)."""
        return self._buf


def ehlo_keywords(reply: Reply) -> frozenset[str]:
    """EHLO extension keywords (upper case), from every line after the first."""
    return frozenset(line.split()[0].upper() for line in reply.lines[1:] if line.split())
