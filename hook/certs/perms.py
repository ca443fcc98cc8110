"""Permissions of a lineage's private keys and directories, checked and fixed safely.

certbot's layout: ``archive/NAME/privkeyN.pem`` are 0600 (certbot keeps group bits of the
previous key, never bits for others), and the lineage directories are not writable by
group or others. We look only inside the lineage: each file and directory is opened with
``O_NOFOLLOW`` (relative to a directory descriptor that was itself opened with
``O_NOFOLLOW``), inspected with ``fstat`` and fixed with ``fchmod``/``fchown`` on that
descriptor, so a symlink planted in the lineage can never redirect a chmod elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hook.certs.lineage import Lineage
from hook.errors import BundleError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True)
class Fix:
    """One file or directory whose mode (or group) is not what it should be."""

    path: Path
    mode: int
    want: int
    gid: int | None = None
    """Group to set (only with a configured group)."""
    exposed: bool = False
    """A private key that other users can read: refused, tightened anyway."""

    def describe(self) -> str:
        what = f"mode {self.mode:04o} -> {self.want:04o}"
        if self.gid is not None:
            what += f", group -> {self.gid}"
        return f"{self.path}: {what}"


def key_mode(gid: int | None) -> int:
    return 0o640 if gid is not None else 0o600


@contextlib.contextmanager
def _open_dir(path: Path) -> Iterator[int]:
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError as exc:
        raise BundleError(str(path), f"cannot open lineage directory without following "
                          f"symlinks: {exc.strerror}") from exc
    try:
        yield fd
    finally:
        os.close(fd)


def _want_key(st: os.stat_result, gid: int | None) -> tuple[int, int | None]:
    """Owner bits as they are (certbot writes 0600), group read only with a configured
    group, nothing for others."""
    want = (stat.S_IMODE(st.st_mode) & 0o700) | (0o040 if gid is not None else 0)
    return want, (gid if gid is not None and st.st_gid != gid else None)


def inspect(lineage: Lineage, gid: int | None = None) -> tuple[Fix, ...]:
    """What should change: private keys in ``archive/NAME`` and both lineage directories."""
    fixes: list[Fix] = []
    for directory in (lineage.archive, lineage.live):
        with _open_dir(directory) as dfd:
            st = os.fstat(dfd)
            mode = stat.S_IMODE(st.st_mode)
            if mode & 0o022:
                fixes.append(Fix(directory, mode, mode & ~0o022))
            if directory != lineage.archive:
                continue
            for name in sorted(os.listdir(dfd)):
                if not (name.startswith("privkey") and name.endswith(".pem")):
                    continue
                try:
                    fd = os.open(name, _FILE_FLAGS, dir_fd=dfd)
                except OSError:
                    continue  # a symlink (ELOOP) or gone: never followed, never touched
                try:
                    fst = os.fstat(fd)
                finally:
                    os.close(fd)
                if not stat.S_ISREG(fst.st_mode):
                    continue
                kmode = stat.S_IMODE(fst.st_mode)
                want, want_gid = _want_key(fst, gid)
                if want != kmode or want_gid is not None:
                    fixes.append(Fix(directory / name, kmode, want, want_gid,
                                     exposed=bool(kmode & 0o007)))
    return tuple(fixes)


def apply(lineage: Lineage, fixes: tuple[Fix, ...]) -> None:
    """Apply :func:`inspect`'s fixes with ``fchmod``/``fchown`` on ``O_NOFOLLOW`` descriptors."""
    for fix in fixes:
        if not (fix.path.parent in (lineage.archive, lineage.live) or
                fix.path in (lineage.archive, lineage.live)):
            raise BundleError(str(fix.path), "outside the lineage; not changing it")
        if fix.path in (lineage.archive, lineage.live):
            with _open_dir(fix.path) as fd:
                os.fchmod(fd, fix.want)
            continue
        with _open_dir(fix.path.parent) as dfd:
            try:
                fd = os.open(fix.path.name, _FILE_FLAGS, dir_fd=dfd)
            except OSError as exc:
                raise BundleError(str(fix.path), f"cannot open to fix its mode: {exc.strerror}") \
                    from exc
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue
                if fix.gid is not None:
                    os.fchown(fd, -1, fix.gid)
                os.fchmod(fd, fix.want)
            finally:
                os.close(fd)


def current_key_exposure(lineage: Lineage, fixes: tuple[Fix, ...]) -> Fix | None:
    """The fix for the key ``live/NAME/privkey.pem`` points at, if others can read it."""
    real = Path(os.path.realpath(lineage.privkey))
    for fix in fixes:
        if fix.exposed and Path(os.path.realpath(fix.path)) == real:
            return fix
    return None
