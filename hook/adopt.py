"""Switch Postfix from reading certbot's files in place to a bundle the hook owns.

``adopt`` validates the lineage, writes its bundle, backs up main.cf, sets
``smtpd_tls_chain_files`` to the bundle with ``postconf -e``, checks, reloads and proves.
If any of that fails, main.cf is restored from the backup and Postfix reloaded.
``undo`` puts the newest backup back.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from hook import bundle as bundle_mod
from hook import discover, install, prove
from hook.config import Config
from hook.deploy import postfix_for
from hook.errors import Error, PostfixError
from hook.lineage import Lineage

BACKUP_INFIX = ".certwatch-backup-"


@dataclass(frozen=True)
class AdoptResult:
    bundle: Path
    backup: Path
    leaf_sha256: str
    services: tuple[str, ...]


def adopt(config: Config, lineage: Lineage) -> AdoptResult:
    postfix = postfix_for(config)
    new = bundle_mod.pair(lineage.read(lineage.privkey), str(lineage.privkey),
                          lineage.read(lineage.fullchain), str(lineage.fullchain))
    target = discover.bundle_path(config.deploy.bundle_dir, lineage)
    install.ensure_private_dir(target.parent)
    install.atomic_write(target, new.postfix_chain_file(), keep_previous=True)
    main_cf = config.postfix.config_directory / "main.cf"
    backup = main_cf.with_name(f"main.cf{BACKUP_INFIX}{time.strftime('%Y%m%dT%H%M%S')}")
    shutil.copy2(main_cf, backup)
    try:
        postfix.postconf("-e", f"smtpd_tls_chain_files = {target}")
        postfix.check()
        postfix.reload()
        use = discover.usage(postfix, lineage, config.deploy.bundle_dir)
        proof = prove.served(use.services, new.leaf_sha256, config)
        if not proof.ok:
            raise PostfixError(f"proof failed: {proof.message}")
    except Error:
        shutil.copy2(backup, main_cf)
        postfix.reload()
        raise
    return AdoptResult(target, backup, new.leaf_sha256, tuple(s.label for s in use.services))


def undo(config: Config) -> Path:
    """Restore the newest main.cf backup made by :func:`adopt` and reload."""
    main_cf = config.postfix.config_directory / "main.cf"
    backups = sorted(main_cf.parent.glob(f"main.cf{BACKUP_INFIX}*"))
    if not backups:
        raise Error(f"{main_cf.parent}: no main.cf{BACKUP_INFIX}* backup to restore")
    shutil.copy2(backups[-1], main_cf)
    postfix = postfix_for(config)
    postfix.check()
    postfix.reload()
    return backups[-1]
