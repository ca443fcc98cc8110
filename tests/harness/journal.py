"""A real systemd-journald, in a journal namespace of its own (no systemd as PID 1 needed).

``systemd-journald NAMESPACE`` listens on ``/run/systemd/journal.NAMESPACE/socket`` and
stores under ``/var/log/journal/MACHINE-ID.NAMESPACE`` (or ``/run/log/journal/...``): the
system journal, if any, is untouched. Entries are sent with journald's native protocol
(what ``sd_journal_send`` does), so ``journalctl --directory`` reads real journal files.
Needs root; removes its files when done.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.harness.stack import wait_until

JOURNALD = Path("/lib/systemd/systemd-journald")


@dataclass
class Journald:
    namespace: str
    proc: subprocess.Popen[bytes]

    @property
    def socket_path(self) -> Path:
        return Path(f"/run/systemd/journal.{self.namespace}/socket")

    @property
    def directory(self) -> Path:
        machine = Path("/etc/machine-id").read_text().strip()
        for root in (Path("/var/log/journal"), Path("/run/log/journal")):
            if (root / f"{machine}.{self.namespace}").is_dir():
                return root / f"{machine}.{self.namespace}"
        raise FileNotFoundError(f"no journal directory for namespace {self.namespace}")

    def send(self, message: str | bytes, identifier: str, pid: int = 0) -> None:
        """One entry, as a Postfix process logging through syslog would leave it."""
        body = message.encode() if isinstance(message, str) else message
        fields = [b"SYSLOG_IDENTIFIER=" + identifier.encode(), b"PRIORITY=6"]
        if pid:
            fields.append(b"SYSLOG_PID=" + str(pid).encode())
        if b"\n" in body:  # the binary-safe form: name, newline, 64-bit LE length, data
            fields.append(b"MESSAGE\n" + len(body).to_bytes(8, "little") + body)
        else:
            fields.append(b"MESSAGE=" + body)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"\n".join(fields) + b"\n", str(self.socket_path))

    def sync(self) -> None:
        """Make journald write what it received (``journalctl --sync`` for our namespace)."""
        subprocess.run(["journalctl", f"--namespace={self.namespace}", "--sync"], check=False,
                       capture_output=True, timeout=30)


@contextlib.contextmanager
def running_journald() -> Iterator[Journald]:
    ns = "certwatch" + secrets.token_hex(4)
    proc = subprocess.Popen([str(JOURNALD), ns], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    j = Journald(ns, proc)
    try:
        wait_until("journald socket", j.socket_path.exists, 15)
        j.send("certwatch test journal started", "certwatch-test")
        j.sync()
        wait_until("journal files", lambda: _has_dir(j), 15)
        yield j
    finally:
        directory = None
        with contextlib.suppress(FileNotFoundError):
            directory = j.directory
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(j.socket_path.parent, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir(f"/run/systemd/journal.{ns}")


def _has_dir(j: Journald) -> bool:
    try:
        return j.directory.is_dir()
    except FileNotFoundError:
        return False
