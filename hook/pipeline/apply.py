"""Apply: fix permissions (``fchmod`` on ``O_NOFOLLOW`` descriptors), write the staged
files atomically (the previous kept as ``.prev``), rebuild SNI tables with ``postmap -F``.

What was there before is kept in memory (:class:`Before`) for the rollback: the staged
files (bytes, mode, group), each SNI table as it is rebuilt, and what each SNI name served.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from hook import files
from hook.certs import bundle as bundle_mod
from hook.certs import perms
from hook.certs.bundle import Bundle
from hook.certs.lineage import Lineage
from hook.config import Config
from hook.errors import BundleError
from hook.pipeline import messages
from hook.pipeline.discover import Discovery
from hook.pipeline.prove import served_sni
from hook.pipeline.report import StageFailure
from hook.pipeline.validate import Validation, group_id
from hook.postfix.instance import protect_db

SavedTable = tuple[bytes, int] | None
"""An SNI table's bytes and mode before ``postmap`` (None: it did not exist)."""


@dataclass(frozen=True)
class Before:
    """What the rollback puts back and proves."""

    staged: dict[Path, files.Saved | None]
    sni: dict[Path, SavedTable]
    sni_served: dict[str, str | None]

    @property
    def paths(self) -> tuple[Path, ...]:
        return (*self.staged, *self.sni)

    def old_leaf(self) -> x509.Certificate | None:
        for path, saved in self.staged.items():
            if saved is not None and b"CERTIFICATE" in saved.data:
                with contextlib.suppress(BundleError):
                    return bundle_mod.parse_chain(saved.data, str(path))[0]
        return None


@dataclass(frozen=True)
class Applied:
    before: Before
    failure: StageFailure | None = None
    """Writing failed (e.g. disk full): the rollback restores, nothing was reloaded."""


def apply(config: Config, lineage: Lineage, found: Discovery, new: Bundle,
          checked: Validation) -> Applied:
    """From the first write on, a failure is returned, not raised: the rollback follows."""
    gid = group_id(config)
    mode = perms.key_mode(gid)
    use = found.use
    perms.apply(lineage, checked.fixes)
    before = Before(files.snapshot(s.path for s in use.staged), {}, served_sni(use, config))
    try:
        files.install_files([(s.path, new.file_for(s.kind.value)) for s in use.staged],
                            mode=mode, gid=gid)
        for sni in use.sni_maps:
            before.sni[sni.db] = _read_optional(sni.db)
            found.postfix.postmap(sni.spec)
            protect_db(sni.db, mode, gid)
    except Exception as exc:  # put back what was written, nothing reloaded
        return Applied(before, StageFailure("apply", messages.why(exc)))
    return Applied(before)


def restore_sni(backup: dict[Path, SavedTable], mode: int, gid: int | None) -> None:
    """Put each SNI table back as it was (it holds keys: written ``mode``, never wider)."""
    for path, saved in backup.items():
        if saved is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        else:
            files.atomic_write(path, saved[0], mode=saved[1] & mode, gid=gid)


def _read_optional(path: Path) -> SavedTable:
    try:
        return path.read_bytes(), os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return None
