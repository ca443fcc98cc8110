"""A certbot lineage on disk: where it is, and reading its files without escaping it.

certbot keeps ``live/NAME/{cert,chain,fullchain,privkey}.pem`` as symlinks into
``archive/NAME/``. We accept a lineage only under ``<config_dir>/live/`` and read a file
only if its real path stays inside that lineage's ``archive/NAME/`` (or ``live/NAME/``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from hook import files
from hook.errors import BundleError, LineageError


@dataclass(frozen=True)
class Lineage:
    config_dir: Path
    name: str

    @property
    def live(self) -> Path:
        return self.config_dir / "live" / self.name

    @property
    def archive(self) -> Path:
        return self.config_dir / "archive" / self.name

    @property
    def fullchain(self) -> Path:
        return self.live / "fullchain.pem"

    @property
    def privkey(self) -> Path:
        return self.live / "privkey.pem"

    @property
    def cert(self) -> Path:
        return self.live / "cert.pem"

    def renewal_conf(self) -> Path:
        return self.config_dir / "renewal" / f"{self.name}.conf"

    def read(self, path: Path) -> bytes:
        """Read a lineage file, refusing a symlink that leads out of the lineage."""
        real = Path(os.path.realpath(path))
        # The config dir may sit behind a symlink; the lineage's own directories may not
        # (archive/NAME -> /elsewhere would make "inside archive/NAME" meaningless).
        allowed = tuple(Path(os.path.realpath(self.config_dir / sub)) / self.name
                        for sub in ("archive", "live"))
        for sub in ("archive", "live"):
            if (self.config_dir / sub / self.name).is_symlink():
                raise BundleError(str(self.config_dir / sub / self.name),
                                  "lineage directory is a symlink; refusing to follow it")
        if not any(real.is_relative_to(a) for a in allowed):
            raise BundleError(str(path), f"resolves to {real}, outside {self.archive}; refusing "
                              "to follow a symlink out of the lineage")
        try:
            return files.read_bounded(real, files.PEM_MAX, follow=False)
        except FileNotFoundError as exc:
            raise BundleError(str(path), "file not found") from exc
        except files.UnsafeFile as exc:
            where = "" if real == Path(path) else f" (via {real})"
            raise BundleError(str(path), f"{exc.strerror}{where}") from exc
        except OSError as exc:
            raise BundleError(str(path), f"cannot open: {exc.strerror}") from exc


def parse_reuse_key(text: str) -> bool:
    """certbot's ``reuse_key`` from the text of ``renewal/NAME.conf`` (configobj syntax)."""
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "reuse_key":
            return value.strip().strip("'\"").lower() in ("true", "1", "yes", "on")
    return False


def read_reuse_key(renewal_conf: Path) -> bool | None:
    """:func:`parse_reuse_key` of a renewal file; None if it cannot be read."""
    try:
        return parse_reuse_key(files.read_bounded(renewal_conf, files.CONFIG_MAX)
                               .decode(errors="replace"))
    except OSError:
        return None


def reuses_key(lineage: Lineage) -> bool:
    """Does ``renewal/NAME.conf`` say ``reuse_key = True`` (certbot keeps the key)?"""
    return read_reuse_key(lineage.renewal_conf()) is True


def previous_version(lineage: Lineage, kind: str = "cert") -> Path | None:
    """``archive/NAME/certN-1.pem`` when ``live/NAME/cert.pem`` points at ``certN.pem``."""
    target = Path(os.path.realpath(lineage.live / f"{kind}.pem"))
    match = re.fullmatch(rf"{kind}(\d+)\.pem", target.name)
    if not match or int(match.group(1)) < 2:
        return None
    prev = target.with_name(f"{kind}{int(match.group(1)) - 1}.pem")
    return prev if prev.is_file() and not prev.is_symlink() else None


def resolve(path: str | os.PathLike[str], config_dir: Path) -> Lineage:
    """Turn ``RENEWED_LINEAGE`` / ``--lineage`` into a :class:`Lineage` or refuse it."""
    given = Path(path)
    live_root = Path(os.path.realpath(config_dir / "live"))
    parent = Path(os.path.realpath(given.parent)) if given.is_absolute() else None
    if parent != live_root or given.name in ("", ".", ".."):
        raise LineageError(f"{given}: not a lineage directory under {config_dir / 'live'}/ "
                           "(is certbot.config_dir right?)")
    if given.is_symlink() or not given.is_dir():
        raise LineageError(f"{given}: lineage is not a directory")
    return Lineage(config_dir=config_dir, name=given.name)
