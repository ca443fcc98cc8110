"""Talk to systemd: ``sd_notify`` datagrams and the watchdog interval.

A few lines of our own instead of the ``sdnotify`` package (0.3.2, 2018, Python 2 era),
which cannot do what the daemon needs: it ignores ``WATCHDOG_USEC``/``WATCHDOG_PID`` (the
heartbeat interval is ours to compute anyway), reads ``os.environ`` only (no injected
environment for tests), encodes as latin-1 and hides every failure behind a bare
``except:`` (a ``STATUS=`` it cannot encode, or a missing socket, is silently dropped),
so ``send`` could not report whether systemd got ``READY=1``. ``EXTEND_TIMEOUT_USEC=``
and ``RELOADING=1`` are plain fields here. Without ``NOTIFY_SOCKET`` (not run by systemd)
every call is a no-op, so the daemon runs the same under systemd, in a terminal and in
tests.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping


class Notifier:
    """Send ``KEY=value`` lines to ``$NOTIFY_SOCKET`` (a path, or ``@abstract``)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        addr = environ.get("NOTIFY_SOCKET", "")
        self.address: str | None = ("\0" + addr[1:]) if addr.startswith("@") else (addr or None)
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str) -> bool:
        """Send one datagram (``READY="1"``, ``STATUS="..."``); False if it could not."""
        if self.address is None:
            return False
        text = "\n".join(f"{k}={v}" for k, v in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(text.encode(), self.address)
        except OSError:
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY="1", STATUS=status)

    def status(self, status: str) -> bool:
        return self.send(STATUS=status)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG="1")

    def stopping(self, status: str = "stopping") -> bool:
        return self.send(STOPPING="1", STATUS=status)

    def reloading(self) -> bool:
        return self.send(RELOADING="1", STATUS="reloading the configuration")

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


def watchdog_interval(environ: Mapping[str, str], pid: int | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: a third of ``WATCHDOG_USEC``, or None.

    systemd sets ``WATCHDOG_PID`` when the watchdog is meant for one process only; if
    it names another process (a child that inherited the environment), we stay quiet.
    """
    try:
        usec = int(environ.get("WATCHDOG_USEC", "0") or 0)
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if owner and owner.isdigit() and int(owner) != (pid if pid is not None else os.getpid()):
        return None
    return usec / 3e6
