"""Switch Postfix from reading certbot's files in place to files the hook owns, and back.

``adopt`` validates the lineage exactly as the hook does, writes its staged file(s),
backs up main.cf and master.cf (same time stamp), points Postfix at the staged files with
``postconf -e`` (and ``postconf -P`` for master.cf ``-o`` overrides), checks, reloads
and proves. If any of that fails, both files are restored from the backup and Postfix is
reloaded. Postfix >= 3.4 gets one key+chain file (``smtpd_tls_chain_files``); older
Postfix (or ``split=True``) gets ``NAME.crt`` + ``NAME.key`` for
``smtpd_tls_cert_file``/``smtpd_tls_key_file``. ``undo`` puts the newest backup back.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from hook import deploy, discover, install, perms, prove
from hook.config import Config
from hook.deploy import postfix_for
from hook.errors import BundleError, Error, PostfixError
from hook.lineage import Lineage
from hook.postfix import Postfix

BACKUP_INFIX = ".certwatch-backup-"


@dataclass(frozen=True)
class AdoptResult:
    bundle: Path
    backup: Path
    leaf_sha256: str
    services: tuple[str, ...]
    files: tuple[Path, ...] = ()


def needs_split(postfix: Postfix) -> bool:
    """Postfix < 3.4 has no ``smtpd_tls_chain_files``."""
    version = postfix.postconf("-h", "mail_version").strip()
    try:
        major, minor = (int(x) for x in version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) < (3, 4)


def _backup(path: Path, stamp: str) -> Path | None:
    if not path.exists():
        return None
    backup = path.with_name(f"{path.name}{BACKUP_INFIX}{stamp}")
    st = path.stat()
    install.atomic_write(backup, path.read_bytes(), mode=st.st_mode & 0o777)
    os.utime(backup, ns=(st.st_atime_ns, st.st_mtime_ns))
    return backup


def _restore(backup: Path | None, target: Path) -> None:
    """Put ``backup`` back over ``target`` atomically, with the backup's mtime: Postfix
    stalls every command for up to 2 s after main.cf changed."""
    if backup is not None:
        st = backup.stat()
        install.atomic_write(target, backup.read_bytes(), mode=st.st_mode & 0o777)
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))


def adopt(config: Config, lineage: Lineage, *, split: bool | None = None) -> AdoptResult:
    postfix = postfix_for(config)
    use = discover.usage(postfix, lineage, config.deploy.bundle_dir)
    checked = deploy.validate_lineage(config, lineage, use)
    if checked.problems or checked.bundle is None:
        raise BundleError(str(lineage.live), "refusing to adopt: " + "; ".join(checked.problems))
    new = checked.bundle
    if split is None:
        split = needs_split(postfix)
    owned = {k: p for p, k in discover.staged_paths(config.deploy.bundle_dir, lineage).items()}
    kinds = (discover.Kind.CERT, discover.Kind.KEY) if split else (discover.Kind.CHAIN,)
    gid = deploy.group_id(config)
    for kind in kinds:
        target = owned[kind]
        install.ensure_private_dir(target.parent)
        install.atomic_write(target, new.file_for(kind.value), mode=perms.key_mode(gid), gid=gid,
                             keep_previous=True)
    cfdir = config.postfix.config_directory
    stamp = time.strftime("%Y%m%dT%H%M%S") + f".{time.time_ns() % 1_000_000_000:09d}"
    main_backup = _backup(cfdir / "main.cf", stamp)
    if main_backup is None:
        raise Error(f"{cfdir / 'main.cf'}: not found")
    master_backup = _backup(cfdir / "master.cf", stamp)
    settings = ({"smtpd_tls_chain_files": "", "smtpd_tls_cert_file": str(owned[discover.Kind.CERT]),
                 "smtpd_tls_key_file": str(owned[discover.Kind.KEY])} if split else
                {"smtpd_tls_chain_files": str(owned[discover.Kind.CHAIN])})
    # main.cf only if main.cf names the lineage: a lineage used by one master.cf service
    # must not take over the global certificate of another lineage
    in_main_cf = any(ref.split(" = ", 1)[0] in discover.SERVER_FILE_PARAMS for ref in use.references)
    try:
        if in_main_cf:
            postfix.postconf("-e", *(f"{k} = {v}" for k, v in settings.items()))
        for svc in use.services:  # per-service certificates (master.cf -o) of this lineage
            if not any(k in discover.SERVER_FILE_PARAMS for k in svc.overrides):
                continue
            for key, value in settings.items():
                if split and key == "smtpd_tls_chain_files" and key not in svc.overrides:
                    continue
                postfix.postconf("-P", f"{svc.name}/inet/{key}={value}")
        postfix.check()
        postfix.reload()
        after = discover.usage(postfix, lineage, config.deploy.bundle_dir)
        proof = prove.served(after.services, new.leaf_sha256, config)
        if not proof.ok:
            raise PostfixError(f"proof failed: {proof.message}")
    except Error:
        _restore(main_backup, cfdir / "main.cf")
        _restore(master_backup, cfdir / "master.cf")
        postfix.reload()
        raise
    return AdoptResult(owned[kinds[0]], main_backup, new.leaf_sha256,
                       tuple(s.label for s in after.services),
                       tuple(owned[k] for k in kinds))


def undo(config: Config) -> Path:
    """Restore the newest main.cf (and master.cf) backup made by :func:`adopt`, check, reload."""
    cfdir = config.postfix.config_directory
    backups = sorted(cfdir.glob(f"main.cf{BACKUP_INFIX}*"))
    if not backups:
        raise Error(f"{cfdir}: no main.cf{BACKUP_INFIX}* backup to restore")
    newest = backups[-1]
    stamp = newest.name.split(BACKUP_INFIX, 1)[1]
    _restore(newest, cfdir / "main.cf")
    master = cfdir / f"master.cf{BACKUP_INFIX}{stamp}"
    if master.exists():
        _restore(master, cfdir / "master.cf")
    postfix = postfix_for(config)
    postfix.check()
    postfix.reload()
    return newest
