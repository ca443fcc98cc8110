"""Talk to systemd: ``sd_notify`` datagrams (through ``sdnotify``) and the watchdog interval.

The ``sdnotify`` package sends the datagrams. Around it: it ignores ``WATCHDOG_USEC`` and
``WATCHDOG_PID`` (the heartbeat interval is computed here), encodes as latin-1 (we send
ASCII, escaping anything else) and, unless ``debug=True``, hides every failure; with
``debug=True`` we see them, so ``send`` can report whether systemd got ``READY=1``.
``EXTEND_TIMEOUT_USEC=`` and ``RELOADING=1`` are plain fields. Without ``NOTIFY_SOCKET``
(not run by systemd) every call is a no-op, so the daemon runs the same under systemd,
in a terminal and in tests.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import Any


class Notifier:
    """Send ``KEY=value`` lines to ``$NOTIFY_SOCKET`` (a path, or ``@abstract``).

    ``sdnotify`` connects to the process environment's ``NOTIFY_SOCKET``, which is where
    systemd puts it; ``environ`` only says whether we run under systemd at all.
    """

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.address: str | None = environ.get("NOTIFY_SOCKET") or None
        self._sd: Any = None
        if self.address is not None:
            import sdnotify  # noqa: PLC0415 - only under systemd

            with contextlib.suppress(Exception):  # debug=True: connect errors raise here
                self._sd = sdnotify.SystemdNotifier(debug=True)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str) -> bool:
        """Send one datagram (``READY="1"``, ``STATUS="..."``); False if it could not."""
        if self._sd is None:
            return False
        text = "\n".join(f"{k}={v}" for k, v in fields.items())
        try:
            self._sd.notify(text.encode("ascii", "backslashreplace").decode("ascii"))
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
        sock = getattr(self._sd, "socket", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        self._sd = None


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
