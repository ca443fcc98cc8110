"""Where Postfix logs, and reading it: a log file (rotation- and truncation-proof) or the
systemd journal (with a cursor). Lines become events in :mod:`hook.peers.tlslog`.

:func:`choose` picks the source (``[peers] log_source``, ``auto`` by default): Postfix's
``maillog_file`` if set, else ``/var/log/mail.log`` or ``/var/log/maillog`` if present,
else the journal. Both followers keep a *position* that survives a restart:

* :class:`FileFollower`: ``(device, inode, offset)`` of the last complete line read. A
  renamed file (logrotate) is finished first, found by its inode (``mail.log.1``), then
  the new file is read from its start; a file that shrank (``copytruncate``, ``: > f``)
  is read again from 0. Partial last lines wait for their newline.
* :class:`JournalFollower`: the journal cursor of the last entry read
  (``journalctl --after-cursor``), so a restart neither loses nor repeats an entry.

Everything read is untrusted: files are opened ``O_NONBLOCK`` and must be regular files
(a FIFO planted at the path cannot hang us), each read is bounded, and a line longer
than :data:`MAX_LINE` is skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from hook import files
from hook.errors import Error
from hook.peers.tlslog import LineParser, TlsEvent, interesting, parse_message

CANDIDATES = (Path("/var/log/mail.log"), Path("/var/log/maillog"))
"""Debian/Ubuntu (rsyslog) and RHEL's mail log files."""
MAX_LINE = 64 * 1024
READ_CHUNK = 1 << 20
DEFAULT_MAX_BYTES = 16 << 20
"""At most this much of a file per :meth:`FileFollower.read` (the rest waits a tick)."""
MARK = 64
"""Bytes before the read offset remembered to notice a file rewritten in place."""
FIRST_TAIL = 8 << 20
"""A file seen for the first time is read from this far before its end, not from 0."""
PROCESSES = ("smtpd", "smtp", "tlsproxy", "postscreen", "lmtp")


class LogError(Error):
    """The log source cannot be read (names the file or the journal and why)."""


def open_regular(path: Path) -> int:
    """:func:`hook.files.open_regular`, its refusals as :class:`LogError`."""
    try:
        return files.open_regular(path)
    except files.UnsafeFile as exc:  # "is a named pipe (FIFO), not a regular file", ...
        raise LogError(f"{path}: {exc.strerror}") from exc
    except OSError as exc:
        raise LogError(f"{path}: cannot open: {exc.strerror}") from exc


@dataclass(frozen=True)
class FilePosition:
    path: str
    dev: int
    ino: int
    offset: int
    mark: str = ""
    """Hex of the bytes just before ``offset`` (a file rewritten while we were stopped)."""

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "dev": self.dev, "ino": self.ino, "offset": self.offset,
                "mark": self.mark}

    @classmethod
    def from_json(cls, data: object) -> FilePosition | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(str(data["path"]), int(data["dev"]), int(data["ino"]), int(data["offset"]),
                       str(data.get("mark", "")))
        except (KeyError, TypeError, ValueError):
            return None


class FileFollower:
    """Follow one log file across rotation and truncation (see the module docstring)."""

    def __init__(self, path: Path, position: FilePosition | None = None,
                 first_tail: int = FIRST_TAIL) -> None:
        self.path = path
        self.fd: int | None = None
        self.dev = self.ino = self.offset = 0
        self.mark = b""
        self.first_tail = first_tail
        self._saved = position if position and position.path == str(path) else None
        self.rotations = 0
        self.truncations = 0

    @property
    def position(self) -> FilePosition | None:
        if self.fd is None:
            return self._saved
        return FilePosition(str(self.path), self.dev, self.ino, self.offset, self.mark.hex())

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def read(self, max_bytes: int = DEFAULT_MAX_BYTES) -> list[str]:
        """Complete new lines (without the newline), at most about ``max_bytes`` of them."""
        if self.fd is None:
            self._open_first()
        lines: list[str] = []
        budget = max_bytes
        while budget > 0:
            got, budget = self._read_fd(budget)
            lines += got
            if budget <= 0 or not self._switch_if_rotated():
                break
        return lines

    # ------------------------------------------------------------------ internals
    def _adopt(self, fd: int, offset: int) -> None:
        st = os.fstat(fd)
        self.close()
        self.fd, self.dev, self.ino, self.offset = fd, st.st_dev, st.st_ino, offset
        self.mark = self._mark()

    def _open_first(self) -> None:
        saved, self._saved = self._saved, None
        if saved is not None:
            old = self._find_inode(saved)
            if old is not None:  # still there (or renamed): go on where we stopped
                fd, size = old
                self._adopt(fd, saved.offset if saved.offset <= size else 0)
                if saved.mark and not self.mark.hex().endswith(saved.mark):  # rewritten meanwhile
                    # (endswith: a mark saved shorter than MARK by an earlier version)
                    self.truncations += 1
                    self.offset, self.mark = 0, b""
                return
        fd = open_regular(self.path)
        size = os.fstat(fd).st_size
        if saved is not None:  # rotated away while we were stopped: the new file from its start
            self._adopt(fd, 0)
            return
        start = max(0, size - self.first_tail)
        self._adopt(fd, start)
        if start:  # skip the partial line we landed in
            self._skip_partial()

    def _find_inode(self, saved: FilePosition) -> tuple[int, int] | None:
        for candidate in (self.path, Path(f"{self.path}.1"), Path(f"{self.path}-1")):
            try:
                st = os.stat(candidate)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (saved.dev, saved.ino):
                try:
                    fd = open_regular(candidate)
                except LogError:
                    continue
                return fd, os.fstat(fd).st_size
        return None

    def _need_fd(self) -> int:
        if self.fd is None:
            raise LogError(f"{self.path}: not open")
        return self.fd

    def _skip_partial(self) -> None:
        data = os.pread(self._need_fd(), MAX_LINE, self.offset)
        nl = data.find(b"\n")
        self.offset += nl + 1 if nl >= 0 else len(data)
        self.mark = self._mark()

    def _read_fd(self, budget: int) -> tuple[list[str], int]:
        fd = self._need_fd()
        lines: list[str] = []
        while budget > 0:
            data = os.pread(fd, min(READ_CHUNK, max(budget, MAX_LINE)), self.offset)
            if not data:
                break
            last = data.rfind(b"\n")
            if last < 0:
                if len(data) >= MAX_LINE:  # one absurdly long line: skip it
                    self.offset += len(data)
                    self.mark = data[-MARK:]
                    budget -= len(data)
                    continue
                break  # a partial line: wait for its end
            chunk = data[:last + 1]
            self.offset += len(chunk)
            self.mark = (self.mark + chunk)[-MARK:]
            budget -= len(chunk)
            lines += [ln for ln in chunk.decode("utf-8", "replace").split("\n")[:-1]
                      if len(ln) <= MAX_LINE]
        return lines, budget

    def _switch_if_rotated(self) -> bool:
        """At the end of our file: if the path is now another file (rotated), or ours
        shrank (truncated), move on; True if there may be more to read."""
        self._need_fd()
        try:
            st = os.stat(self.path)
        except OSError:
            return False  # rotated, the new one not created yet: stay on the old one
        if (st.st_dev, st.st_ino) != (self.dev, self.ino):
            try:
                fd = open_regular(self.path)
            except LogError:
                return False
            self.rotations += 1
            self._adopt(fd, 0)
            return True
        if st.st_size < self.offset or self._mark() != self.mark:
            self.truncations += 1  # shrank, or rewritten in place (different bytes before us)
            self.offset = 0
            self.mark = b""
            return True
        return False

    def _mark(self) -> bytes:
        """The bytes just before our offset: they change if the file was rewritten."""
        start = max(0, self.offset - MARK)
        return os.pread(self._need_fd(), self.offset - start, start) if self.offset else b""


class JournalFollower:
    """Read Postfix's entries from the systemd journal through ``journalctl``.

    Matches the syslog identifiers ``NAME/smtpd``, ``NAME/smtp``, ... for each
    ``syslog_names`` (Postfix sets them whether it logs through syslog or not); the
    cursor of the last entry read is :attr:`cursor`."""

    def __init__(self, cursor: str = "", syslog_names: Sequence[str] = ("postfix",),
                 directory: Path | None = None, since: str = "-24h",
                 journalctl: str = "journalctl") -> None:
        self.cursor = cursor
        self.syslog_names = tuple(syslog_names)
        self.directory = directory
        self.since = since
        self.journalctl = journalctl
        self.cursor_lost = 0

    def command(self) -> list[str]:
        argv = [self.journalctl, "--no-pager", "--quiet", "-o", "json",
                "--output-fields=MESSAGE,SYSLOG_IDENTIFIER,SYSLOG_PID,_PID"]
        if self.directory is not None:
            argv.append(f"--directory={self.directory}")
        argv.append(f"--after-cursor={self.cursor}" if self.cursor else f"--since={self.since}")
        matches = [f"SYSLOG_IDENTIFIER={n}/{p}" for n in self.syslog_names for p in PROCESSES]
        for i, m in enumerate(matches):
            argv += (["+"] if i else []) + [m]
        return argv

    def read(self, max_entries: int = 100_000, timeout: float = 60.0,
             retried: bool = False) -> list[TlsEvent]:
        """The TLS events among the next ``max_entries`` entries after the cursor (a cursor
        the journal no longer knows: from ``since`` again)."""
        if shutil.which(self.journalctl) is None:
            raise LogError(f"{self.journalctl}: not found (is this a systemd host?)")
        events: list[TlsEvent] = []
        deadline = time.monotonic() + timeout
        # stderr goes to a file, read (its start) at the end: a pipe nobody drains while
        # stdout is read would stop a chatty journalctl, and us with it
        with tempfile.TemporaryFile() as errors, subprocess.Popen(
                self.command(), stdout=subprocess.PIPE, stderr=errors,
                stdin=subprocess.DEVNULL) as proc:
            count = 0
            for raw in _bounded_lines(proc.stdout):
                entry = _entry(raw)
                if entry is None:
                    continue
                cursor, when, ident, pid, message = entry
                self.cursor = cursor
                if message and interesting(message):
                    e = parse_message(message, ident, pid, when)
                    if e is not None:
                        events.append(e)
                count += 1
                if count >= max_entries or time.monotonic() > deadline:
                    break
            if proc.poll() is None:
                proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            if proc.poll() is None:
                proc.kill()
            errors.seek(0)
            err = errors.read(4096).decode(errors="replace")
            if proc.returncode not in (0, -15) and count == 0:
                if self.cursor and "cursor" in err.lower() and not retried:
                    # the journal was vacuumed or replaced: our cursor names nothing now
                    self.cursor = ""
                    self.cursor_lost += 1
                    return self.read(max_entries, timeout, retried=True)
                raise LogError(f"journalctl exited {proc.returncode}: {err.strip()[:300]}")
        return events


def _bounded_lines(stream: IO[bytes] | None) -> Iterator[bytes]:
    if stream is None:
        return
    read = stream.readline
    while True:
        line = read(MAX_LINE + 1)
        if not line:
            return
        if len(line) > MAX_LINE and not line.endswith(b"\n"):
            while (rest := read(MAX_LINE)) and not rest.endswith(b"\n"):
                pass
            continue
        yield line


def _entry(raw: bytes) -> tuple[str, float, str, int, str] | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("__CURSOR"), str):
        return None
    message = data.get("MESSAGE")
    if isinstance(message, list):  # not UTF-8: journalctl sends the bytes as numbers
        try:
            message = bytes(message).decode("utf-8", "replace")
        except (TypeError, ValueError):
            message = ""
    try:
        when = int(data.get("__REALTIME_TIMESTAMP", 0)) / 1e6
        pid = int(data.get("SYSLOG_PID") or data.get("_PID") or 0)
    except (TypeError, ValueError):
        when, pid = 0.0, 0
    return (data["__CURSOR"], when, str(data.get("SYSLOG_IDENTIFIER", "")), pid,
            message if isinstance(message, str) else "")


@dataclass(frozen=True)
class Choice:
    """The log source to read: ``kind`` is ``file``, ``journal`` or ``none``."""

    kind: str
    path: Path | None = None
    why: str = ""


def choose(source: str, log_file: Path | None, maillog_file: str,
           journal_directory: Path | None = None, candidates: Sequence[Path] = CANDIDATES,
           journal_present: bool | None = None) -> Choice:
    """Pick the log source. ``source``: ``auto``, ``file``, ``journal`` or ``off``;
    ``maillog_file``: Postfix's parameter of that name ("" if unset)."""
    if source == "off":
        return Choice("none", why="peers.log_source = off")
    if source == "journal":
        return Choice("journal", journal_directory, "peers.log_source = journal")
    if log_file is not None:
        return Choice("file", log_file, "peers.log_file")
    if maillog_file and not maillog_file.startswith("/dev/"):
        return Choice("file", Path(maillog_file), "Postfix's maillog_file")
    for path in candidates:
        if path.is_file():
            return Choice("file", path, f"{path} exists")
    if source == "file":
        return Choice("none", why="peers.log_source = file, but no log file was found "
                                  f"({', '.join(map(str, candidates))}); set peers.log_file")
    if journal_present is None:
        journal_present = journal_directory is not None or (
            Path("/run/systemd/journal").is_dir() and shutil.which("journalctl") is not None)
    if journal_present:
        return Choice("journal", journal_directory, "no mail log file; the systemd journal")
    return Choice("none", why="no mail log file and no systemd journal found")


def read_recent(choice: Choice, since: float, syslog_names: Sequence[str] = ("postfix",),
                max_bytes: int = 64 << 20, now: float | None = None) -> list[TlsEvent]:
    """The TLS events logged after ``since`` (renew-check's view: the last day)."""
    now = time.time() if now is None else now
    if choice.kind == "journal":
        follower = JournalFollower(syslog_names=syslog_names, directory=choice.path,
                                   since=f"@{int(since)}")
        return [e for e in follower.read() if e.time >= since]
    if choice.kind != "file" or choice.path is None:
        return []
    reader = FileFollower(choice.path, first_tail=max_bytes)
    try:
        lines = reader.read(max_bytes + MAX_LINE)
    finally:
        reader.close()
    parser = LineParser(now)
    return [e for line in lines if (e := parser.parse(line)) is not None and e.time >= since]
