"""The real ``renew-daemon`` as a child process, with a real ``NOTIFY_SOCKET``.

``NotifySocket`` binds the AF_UNIX datagram socket systemd would, and collects what the
daemon sends (``READY=1``, ``WATCHDOG=1``, ``STATUS=...``). ``DaemonProcess`` starts
``renew-daemon --config FILE`` from this venv and collects its JSON log lines. Used by
the daemon tests and by ``bench/soak.py``. The only fake is the absence of systemd.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.harness.stack import VENV_BIN

Event = dict[str, Any]
UNIT_UMASK = 0o077
"""As ``UMask=`` in systemd/postfix-certwatch.service: files must get explicit modes."""


class NotifySocket:
    """An AF_UNIX datagram socket, as systemd binds for ``Type=notify`` services."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="certwatch-notify-"))
        self.path = self.dir / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def with_key(self, key: str) -> list[dict[str, str]]:
        return [m for _, m in self.messages if key in m]

    def wait_for(self, key: str, timeout: float = 30.0, count: int = 1) -> list[dict[str, str]]:
        deadline = time.monotonic() + timeout
        while len(self.with_key(key)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {count}x {key}= within {timeout:g}s; got {self.messages}")
            time.sleep(0.05)
        return self.with_key(key)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(2)
        with contextlib.suppress(OSError):
            self.path.unlink()
            self.dir.rmdir()


class DaemonProcess:
    """``renew-daemon --config FILE`` with its stdout parsed as JSON log lines."""

    def __init__(self, config: Path, notify: NotifySocket | None = None,
                 watchdog_usec: int | None = None, extra_env: dict[str, str] | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC",
                                                                 "WATCHDOG_PID")}
        if notify is not None:
            env["NOTIFY_SOCKET"] = str(notify.path)
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        env.update(extra_env or {})
        self.events: list[Event] = []
        self.raw: list[str] = []
        self.proc = subprocess.Popen([str(VENV_BIN / "renew-daemon"), "--config", str(config)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     umask=UNIT_UMASK)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            text = line.decode(errors="replace").rstrip("\n")
            self.raw.append(text)
            with contextlib.suppress(ValueError):
                event = json.loads(text)
                if isinstance(event, dict):
                    self.events.append(event)

    def named(self, name: str) -> list[Event]:
        return [e for e in list(self.events) if e.get("event") == name]

    def wait_event(self, name: str, where: Callable[[Event], bool] = lambda e: True,
                   timeout: float = 30.0, after: int = 0) -> Event:
        """The first event ``name`` (after index ``after`` of ``events``) matching ``where``."""
        deadline = time.monotonic() + timeout
        while True:
            for e in list(self.events)[after:]:
                if e.get("event") == name and where(e):
                    return e
            if self.proc.poll() is not None and not self._thread.is_alive():
                raise RuntimeError(f"renew-daemon exited {self.proc.returncode}:\n" + self.tail())
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {name!r} event within {timeout:g}s:\n" + self.tail())
            time.sleep(0.05)

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.raw[-n:])

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait; SIGKILL only if it did not stop in time. Returns the exit code."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._thread.join(5)
        return self.proc.returncode

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")


@contextlib.contextmanager
def running_daemon(config: Path, notify: NotifySocket | None = None,
                   watchdog_usec: int | None = None) -> Iterator[DaemonProcess]:
    d = DaemonProcess(config, notify, watchdog_usec)
    try:
        yield d
    finally:
        d.stop()
