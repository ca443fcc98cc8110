"""A certbot lineage on disk: where it is, and reading its files without escaping it.

certbot keeps ``live/NAME/{cert,chain,fullchain,privkey}.pem`` as symlinks into
``archive/NAME/``. We accept a lineage only under ``<config_dir>/live/`` and read a file
only if its real path stays inside that lineage's ``archive/NAME/`` (or ``live/NAME/``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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
        allowed = (Path(os.path.realpath(self.archive)), Path(os.path.realpath(self.live)))
        if not any(real.is_relative_to(a) for a in allowed):
            raise BundleError(str(path), f"resolves to {real}, outside {self.archive}; refusing "
                              "to follow a symlink out of the lineage")
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise BundleError(str(path), "file not found") from exc
        except OSError as exc:
            raise BundleError(str(path), f"cannot open: {exc.strerror}") from exc
        with os.fdopen(fd, "rb") as fh:
            return fh.read()


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
