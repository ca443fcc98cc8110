"""Atomic, private file installation.

A file that Postfix reads is always either the complete old or the complete new
version: we write a temp file in the same directory (created 0600 by ``mkstemp``, so the
key is never readable by others, not even for a moment), fsync it, keep the current
file as ``NAME.prev`` (a hard link, so there is no window without a current file),
rename the temp file over the target and fsync the directory.

Two files that must match (``NAME.crt`` + ``NAME.key`` for Postfix < 3.4) cannot be
replaced in one atomic step. :func:`install_files` narrows the gap as far as rename(2)
allows: both temp files are written and fsynced first, then renamed back to back. An
smtpd process that starts in the few microseconds between the two renames (or a SIGKILL
landing there) still sees one new and one old file: that smtpd refuses TLS until it
exits (``max_idle``/``max_use``), and the proof, which needs several consecutive good
handshakes, catches a pair left mixed. One ``smtpd_tls_chain_files`` bundle (Postfix >=
3.4, what ``renew-check adopt`` picks there) has no such window.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PREV_SUFFIX = ".prev"

# Size caps for :func:`read_bounded`, per kind of file. None of these is ever megabytes
# when it is what it claims to be; a bigger one is a mistake or an attack.
PEM_MAX = 256 * 1024
"""A lineage file (cert, chain, fullchain, privkey), a certificate given with --expect-cert."""
CONFIG_MAX = 1024 * 1024
"""Our TOML configuration, certbot's renewal/NAME.conf."""
CAFILE_MAX = 16 * 1024 * 1024
"""A CA bundle (the system one is about 200 KiB)."""
RECORD_MAX = 1024 * 1024
"""One deploy record, the DANE history, the trust-anchor manifest."""
STATE_MAX = 16 * 1024 * 1024
"""The daemon's state, an SNI map source, a Postfix lookup table we read as text."""

_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link"))


class UnsafeFile(OSError):
    """A path we were asked to read is not a regular file of a sane size. An ``OSError``
    (so every existing ``except OSError`` edge reports it) whose ``strerror`` says what
    the path is: "is a named pipe (FIFO), not a regular file"."""

    def __init__(self, path: os.PathLike[str] | str, problem: str, code: int = errno.EINVAL) -> None:
        super().__init__(code, problem, str(path))


def describe_mode(mode: int) -> str:
    """``a named pipe (FIFO)``, ``a directory``, ... for a non-regular ``st_mode``."""
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def open_regular(path: os.PathLike[str] | str, *, follow: bool = True) -> int:
    """A read-only descriptor of the regular file ``path``, opened without blocking
    (``O_NONBLOCK``: a FIFO opens at once instead of waiting for a writer) and, unless
    ``follow``, without following a symlink. Anything but a regular file raises
    :class:`UnsafeFile` saying what it is; other ``OSError``\\ s pass through."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    flags |= 0 if follow else os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow:
            raise UnsafeFile(path, "is a symbolic link; refusing to follow it") from exc
        if exc.errno == errno.ENXIO:  # open(2) of a socket
            raise UnsafeFile(path, "is a socket, not a regular file") from exc
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise UnsafeFile(path, f"is {describe_mode(mode)}, not a regular file")
    return fd


def read_bounded(path: os.PathLike[str] | str, cap: int, *, follow: bool = True) -> bytes:
    r"""Read a regular file of at most ``cap`` bytes, without ever blocking or growing.

    Opened with ``O_NONBLOCK`` (a FIFO opens at once instead of waiting for a writer) and,
    unless ``follow``, ``O_NOFOLLOW``; ``fstat`` must show a regular file; at most
    ``cap + 1`` bytes are read. A FIFO, device, socket, directory, symlink (``follow=False``)
    or a file over ``cap`` raises :class:`UnsafeFile`; other ``OSError``\ s pass through
    (``FileNotFoundError`` stays what it is)."""
    fd = open_regular(path, follow=follow)
    try:
        st = os.fstat(fd)
        if st.st_size > cap:
            raise UnsafeFile(path, f"is {st.st_size} bytes, more than the {_size(cap)} such a "
                             "file can sensibly be", errno.EFBIG)
        chunks: list[bytes] = []
        total = 0
        while total <= cap:
            try:
                chunk = os.read(fd, min(65536, cap + 1 - total))
            except BlockingIOError:  # pragma: no cover - regular files never block
                continue
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > cap:  # grew while we read it
            raise UnsafeFile(path, f"is more than the {_size(cap)} such a file can sensibly be",
                             errno.EFBIG)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n >= 1024 * 1024 else f"{n // 1024} KiB"


def ensure_private_dir(path: Path, mode: int = 0o700) -> None:
    """Create ``path`` (and parents) if missing; a created leaf directory gets ``mode``."""
    if not path.is_dir():
        path.mkdir(parents=True, mode=mode, exist_ok=True)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(target: Path, data: bytes, mode: int, gid: int | None) -> str:
    """A fsynced temp file next to ``target`` holding ``data`` (private from creation)."""
    import tempfile  # noqa: PLC0415 - only writers need it (not the probe path)

    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            if gid is not None:
                os.fchown(fh.fileno(), -1, gid)
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def atomic_write(target: Path, data: bytes, *, mode: int = 0o600, gid: int | None = None) -> None:
    """Replace ``target`` with ``data`` atomically."""
    directory = target.parent
    tmp = _write_temp(target, data, mode, gid)
    try:
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def install_files(files: list[tuple[Path, bytes]], *, mode: int = 0o600,
                  gid: int | None = None) -> None:
    """The hook's install step: each staged file replaced atomically, previous kept as
    ``.prev``; leftovers of a killed earlier run are removed first. Every temp file is
    written and fsynced before the first rename, and the renames follow each other with
    nothing in between, so a cert/key pair is mixed for microseconds, not for the time it
    takes to write and fsync the second file (see the module docstring)."""
    temps: list[tuple[Path, str]] = []
    try:
        for target, data in files:
            ensure_private_dir(target.parent)
            cleanup_temps(target)
            temps.append((target, _write_temp(target, data, mode, gid)))
        for target, _ in temps:
            if target.exists():
                link_over(target, target.with_name(target.name + PREV_SUFFIX))
        for target, tmp in temps:
            os.replace(tmp, target)
    except BaseException:
        for _, tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    for directory in dict.fromkeys(target.parent for target, _ in temps):
        fsync_dir(directory)


def link_over(src: Path, dst: Path) -> None:
    """Make ``dst`` a hard link to ``src``, replacing ``dst`` atomically."""
    with contextlib.suppress(FileNotFoundError):
        if os.path.samestat(os.stat(src), os.stat(dst)):
            return  # already the same file
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.lnk")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.link(src, tmp)
    os.replace(tmp, dst)
    # rename(2) does nothing when both names are links to one file: never leave tmp behind
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


def cleanup_temps(target: Path) -> tuple[Path, ...]:
    """Remove temp files a killed earlier run left next to ``target`` (never the target)."""
    removed = []
    patterns = (f".{target.name}.*.tmp", f".{target.name}{PREV_SUFFIX}.*.lnk")
    if target.parent.is_dir():
        for pattern in patterns:
            for leftover in target.parent.glob(pattern):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
                    removed.append(leftover)
    return tuple(removed)


@dataclass(frozen=True)
class Saved:
    """A file as it was before we replaced it: content, mode and group."""

    data: bytes
    mode: int
    gid: int


def snapshot(paths: Iterable[Path]) -> dict[Path, Saved | None]:
    """Each file's :class:`Saved` state (None: it did not exist), kept in memory."""
    out: dict[Path, Saved | None] = {}
    for path in paths:
        try:
            st = path.stat()
            out[path] = Saved(path.read_bytes(), st.st_mode & 0o7777, st.st_gid)
        except FileNotFoundError:
            out[path] = None
    return out


def restore(saved: dict[Path, Saved | None], *, remove_new: bool = False) -> bool:
    """Put every file back as :func:`snapshot` saw it, each atomically and from memory
    (a failure half way through a cert/key pair never mixes versions). A file that did
    not exist before is removed with ``remove_new``, else left in place; False then."""
    complete = True
    for path, before in saved.items():
        if before is None:
            if remove_new:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            else:
                complete = False
            continue
        with contextlib.suppress(FileNotFoundError):
            if path.read_bytes() == before.data:
                continue
        atomic_write(path, before.data, mode=before.mode, gid=before.gid)
    return complete
