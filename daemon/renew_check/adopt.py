"""Switch Postfix from reading certbot's files in place to files the hook owns, and back.

``adopt`` validates the lineage exactly as the hook does, writes its staged file(s),
backs up main.cf and master.cf (same time stamp), points Postfix at the staged files with
``postconf -e`` (and ``postconf -P`` for master.cf ``-o`` overrides), checks, reloads
and proves. If any of that fails, both files are restored from the backup and Postfix is
reloaded. Postfix >= 3.4 gets one key+chain file (``smtpd_tls_chain_files``); older
Postfix (or ``split=True``) gets ``NAME.crt`` + ``NAME.key`` for
``smtpd_tls_cert_file``/``smtpd_tls_key_file``. ``undo`` puts the newest backup back.

Only the entries of the adopted lineage change: ``smtpd_tls_chain_files = ec.key, ec.pem,
rsa.key, rsa.pem`` adopting the RSA lineage becomes ``ec.key, ec.pem, BUNDLE`` (an RSA
and an ECDSA certificate side by side stay side by side, in order). Both commands hold
the deploy lock, so they never interleave with a deploy hook run; the staged files are
snapshotted first and put back, byte for byte, if anything fails.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from hook import files
from hook.certs import Lineage, key_mode
from hook.config import Config
from hook.errors import BundleError, Error, PostfixError
from hook.pipeline import group_id, locked, served, validate_lineage
from hook.postfix import (
    SERVER_FILE_PARAMS,
    Kind,
    Mode,
    Postfix,
    Usage,
    belongs_to,
    effective_files,
    files_of,
    own_files,
    postfix_for,
    staged_paths,
    usage,
)

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
    return not postfix.has_chain_files()


def _backup(path: Path, stamp: str) -> Path | None:
    if not path.exists():
        return None
    backup = path.with_name(f"{path.name}{BACKUP_INFIX}{stamp}")
    st = path.stat()
    files.atomic_write(backup, path.read_bytes(), mode=st.st_mode & 0o777)
    os.utime(backup, ns=(st.st_atime_ns, st.st_mtime_ns))
    return backup


def _restore(backup: Path | None, target: Path) -> None:
    """Put ``backup`` back over ``target`` atomically, with the backup's mtime: Postfix
    stalls every command for up to 2 s after main.cf changed."""
    if backup is not None:
        st = backup.stat()
        files.atomic_write(target, backup.read_bytes(), mode=st.st_mode & 0o777)
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))


LEGACY_PAIRS = (("smtpd_tls_cert_file", "smtpd_tls_key_file"),
                ("smtpd_tls_eccert_file", "smtpd_tls_eckey_file"),
                ("smtpd_tls_dcert_file", "smtpd_tls_dkey_file"))


def new_settings(effective: Mapping[str, str], ours: Callable[[str], bool],
                 owned: Mapping[Kind, Path], *, split: bool, where: str) -> dict[str, str]:
    """The certificate parameters to set in one scope (main.cf, or one master.cf service)
    so that it reads the staged file(s) for the lineage and everything else as before.

    ``effective``: the scope's :func:`hook.postfix.effective_files`; ``ours(path)``: does
    the file belong to the lineage (its ``live/``/``archive/`` or its staged files)?
    Without ``split`` the result is one ``smtpd_tls_chain_files`` list in the original
    order, the lineage's key and certificate file(s) replaced by the bundle where the
    first of them was (legacy ``*_cert_file``/``*_key_file`` pairs are carried over as
    ``key, cert`` entries, since a non-empty ``smtpd_tls_chain_files`` hides them)."""
    chain = files_of(effective.get("smtpd_tls_chain_files", ""))
    if split:
        others = [f for f in chain if not ours(f)]
        if others:
            raise Error(f"{where}: smtpd_tls_chain_files also holds {', '.join(others)}; "
                        "separate .crt/.key files cannot replace only this lineage's entries "
                        "(adopt without split, Postfix >= 3.4)")
        cert, key = next(((c, k) for c, k in LEGACY_PAIRS
                          if ours(effective.get(c, "")) or ours(effective.get(k, ""))),
                         LEGACY_PAIRS[0])
        return {"smtpd_tls_chain_files": "", cert: str(owned[Kind.CERT]),
                key: str(owned[Kind.KEY])}
    if not chain:
        for cert, key in LEGACY_PAIRS:
            c, k = effective.get(cert, "").strip(), effective.get(key, "").strip()
            if c:
                chain += [k, c] if k and k != c else [c]
    bundle = str(owned[Kind.CHAIN])
    entries: list[str] = []
    for f in chain:
        if not ours(f):
            entries.append(f)
        elif bundle not in entries:
            entries.append(bundle)
    if bundle not in entries:
        entries.insert(0, bundle)
    return {"smtpd_tls_chain_files": ", ".join(entries)}


def adopt(config: Config, lineage: Lineage, *, split: bool | None = None,
          replace: bool = False) -> AdoptResult:
    """Validate, stage, point Postfix at the staged files, check, reload, prove; on any
    failure put main.cf, master.cf and the staged files back and reload.

    A lineage Postfix does not read is refused (saying what Postfix reads and the command
    to switch), unless ``replace``: then main.cf's server certificate becomes this
    lineage's bundle. Success means Postfix's configuration now names the staged files
    and the proof saw the new leaf served on at least one TLS service."""
    with locked(config.deploy.state_dir):
        return _adopt(config, lineage, split, replace)


def reads_today(params: Mapping[str, str]) -> str:
    """What main.cf's server certificate parameters name, for a message."""
    return "; ".join(f"{k} = {v}" for k, v in params.items() if v.strip()) or \
        "no server certificate at all"


def _refuse_unused(config: Config, postfix: Postfix, lineage: Lineage) -> Error:
    """Adopting a lineage Postfix does not read would change nothing: say what it reads."""
    now = postfix.parameters(*SERVER_FILE_PARAMS)
    return Error(f"refusing to adopt {lineage.live}: Postfix "
                 f"({config.postfix.config_directory}) does not read this lineage, so "
                 f"adopting it would change nothing; it reads {reads_today(now)}. To "
                 f"make Postfix serve {lineage.name} instead: renew-check adopt "
                 f"{lineage.live} --replace")


def _new_settings(config: Config, postfix: Postfix, lineage: Lineage, use: Usage,
                  owned: Mapping[Kind, Path], *, split: bool, replace: bool,
                  ) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """What main.cf and each master.cf service of the lineage will name: (main.cf
    parameters, {service: its -o parameters})."""
    cfdir = config.postfix.config_directory
    params = postfix.parameters(*SERVER_FILE_PARAMS)
    belongs = belongs_to(lineage, config.deploy.bundle_dir)

    def ours(path: str) -> bool:  # with replace, main.cf's current certificate is "ours"
        return replace or belongs(path)

    # main.cf only if main.cf names the lineage: a lineage used by one master.cf service
    # must not take over the global certificate of another lineage
    in_main_cf = replace or any(ref.split(" = ", 1)[0] in SERVER_FILE_PARAMS
                                for ref in use.references)
    main_settings = (new_settings(effective_files(params, {}), ours, owned, split=split,
                                  where=str(cfdir / "main.cf")) if in_main_cf else {})
    svc_settings = {}
    for svc in use.services:  # per-service certificates (master.cf -o) of this lineage
        own = own_files(svc)
        if own:
            svc_settings[svc.name] = new_settings(
                effective_files(params, own), ours, owned, split=split,
                where=f"{cfdir / 'master.cf'} {svc.name}")
    return main_settings, svc_settings


def _adopt(config: Config, lineage: Lineage, split: bool | None,
           replace: bool = False) -> AdoptResult:
    postfix = postfix_for(config)
    use = usage(postfix, lineage, config.deploy.bundle_dir)
    if use.mode is Mode.UNUSED and not replace:
        raise _refuse_unused(config, postfix, lineage)
    checked = validate_lineage(config, lineage, use)
    if checked.problems or checked.bundle is None:
        raise BundleError(str(lineage.live),
                          "refusing to adopt: " + "; ".join(str(p) for p in checked.problems))
    new = checked.bundle
    if split is None:
        split = needs_split(postfix)
    owned = {k: p for p, k in staged_paths(config.deploy.bundle_dir, lineage).items()}
    kinds = (Kind.CERT, Kind.KEY) if split else (Kind.CHAIN,)
    gid = group_id(config)
    mode = key_mode(gid)
    cfdir = config.postfix.config_directory
    main_settings, svc_settings = _new_settings(config, postfix, lineage, use, owned,
                                                split=split, replace=replace)
    stamp = time.strftime("%Y%m%dT%H%M%S") + f".{time.time_ns() % 1_000_000_000:09d}"
    main_backup = _backup(cfdir / "main.cf", stamp)
    if main_backup is None:
        raise Error(f"{cfdir / 'main.cf'}: not found")
    master_backup = _backup(cfdir / "master.cf", stamp)
    staged_before = files.snapshot(owned[k] for k in kinds)
    try:
        files.install_files([(owned[k], new.file_for(k.value)) for k in kinds], mode=mode,
                              gid=gid)
        if main_settings:
            postfix.postconf("-e", *(f"{k} = {v}" for k, v in main_settings.items()))
        for name, settings in svc_settings.items():
            for key, value in settings.items():
                postfix.postconf("-P", f"{name}/inet/{key}={value}")
        postfix.check()
        postfix.reload()
        after = usage(postfix, lineage, config.deploy.bundle_dir)
        if not after.services:
            raise Error(f"after the change no TLS service of Postfix ({cfdir}) presents "
                        f"{lineage.name}; nothing was adopted")
        proof = served(after.services, new.leaf_sha256, config, leaf=new.leaf)
        if not proof.ok:
            raise PostfixError(f"proof failed: {proof.message}")
    except Exception as exc:
        _restore(main_backup, cfdir / "main.cf")
        _restore(master_backup, cfdir / "master.cf")
        files.restore(staged_before, remove_new=True)
        try:
            postfix.reload()
        except Error as again:
            raise Error(f"adopt failed ({exc}); main.cf, master.cf and "
                        f"{', '.join(str(p) for p in staged_before)} were restored, but the "
                        f"reload after restoring failed too: {again}") from exc
        raise
    return AdoptResult(owned[kinds[0]], main_backup, new.leaf_sha256,
                       tuple(s.label for s in after.services),
                       tuple(owned[k] for k in kinds))


def undo(config: Config) -> Path:
    """Restore the newest main.cf (and master.cf) backup made by :func:`adopt`, check, reload."""
    with locked(config.deploy.state_dir):
        return _undo(config)


def _undo(config: Config) -> Path:
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
