"""What the daemon watches, found the way ``renew-check`` finds it (a small adapter over
:mod:`hook.postfix.instance` and :mod:`hook.postfix.tls_files`), and the files it reads.

It reads certificates only: a lineage's ``cert.pem`` (never ``privkey.pem``, never the
bundles that hold keys) and the deploy hook's JSON records.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hook import files
from hook.certs import Lineage, fingerprint, names_of, parse_chain, resolve
from hook.config import Config
from hook.errors import LineageError
from hook.postfix import (
    SERVER_FILE_PARAMS,
    TLS_LEVEL_PARAMS,
    Mode,
    Service,
    postfix_for,
    required_names,
    tls_enabled,
    usage,
)


@dataclass(frozen=True)
class Watched:
    """A certbot lineage Postfix uses, and the TLS services that serve it."""

    lineage: Lineage
    mode: str
    services: tuple[str, ...]
    """Service labels (``Service.label``)."""
    names: tuple[str, ...] = ()
    """Host names its services present it for without SNI: ``myhostname`` (unless
    ``deploy.require_myhostname = false``) and ``deploy.names``, as the hook requires."""


@dataclass(frozen=True)
class Discovery:
    services: tuple[Service, ...]
    """Every TLS-enabled SMTP service of master.cf."""
    lineages: tuple[Watched, ...]
    names: tuple[str, ...] = ()
    """The names to require of a service that serves no certbot lineage (myhostname)."""

    def lineages_of(self, service: Service) -> tuple[Watched, ...]:
        """The lineages a service serves: usually one, two for an RSA + ECDSA pair."""
        return tuple(w for w in self.lineages if service.label in w.services)


def discover_all(config: Config) -> Discovery:
    """Ask Postfix which services speak TLS and which certbot lineages they use.

    Raises :class:`hook.errors.PostfixError` if postconf fails.
    """
    postfix = postfix_for(config)
    params = postfix.parameters(*SERVER_FILE_PARAMS, *TLS_LEVEL_PARAMS, "myhostname")
    services = tuple(s for s in postfix.services() if tls_enabled(s, params))
    watched = []
    live = config.certbot.config_dir / "live"
    for path in sorted(live.glob("*")) if live.is_dir() else ():
        if not path.is_dir():
            continue
        try:
            lin = resolve(path, config.certbot.config_dir)
        except LineageError:
            continue
        use = usage(postfix, lin, config.deploy.bundle_dir)
        if use.mode is Mode.UNUSED:
            continue
        # SNI names are presented only on request: a plain probe sees the default certificate
        names = required_names(config, replace(use, sni_maps=()))
        watched.append(Watched(lin, use.mode.value, tuple(s.label for s in use.services), names))
    myhostname = params.get("myhostname", "").lower().rstrip(".")
    default = (myhostname,) if myhostname and config.deploy.require_myhostname else ()
    return Discovery(services, tuple(watched), default)


@dataclass(frozen=True)
class DiskCert:
    sha256: str
    not_before: dt.datetime
    not_after: dt.datetime
    names: tuple[str, ...]


def signature(lin: Lineage) -> tuple[str, int, int]:
    """Cheap change detector for ``cert.pem``: its real path (certbot points the symlink
    at ``archive/NAME/certN.pem``), mtime and size. ("", 0, 0) if missing."""
    try:
        real = os.path.realpath(lin.cert)
        st = os.stat(real)
    except OSError:
        return ("", 0, 0)
    return (real, st.st_mtime_ns, st.st_size)


def read_cert(lin: Lineage) -> DiskCert:
    """Parse the lineage's ``cert.pem`` (raises :class:`BundleError`)."""
    leaf = parse_chain(lin.read(lin.cert), str(lin.cert))[0]
    return DiskCert(fingerprint(leaf), leaf.not_valid_before_utc, leaf.not_valid_after_utc,
                    names_of(leaf))


@dataclass(frozen=True)
class DeployRecord:
    name: str
    """File name in ``state_dir/deploys/`` (the identity we remember)."""
    lineage: str
    outcome: str
    time: float
    new_sha256: str
    old_sha256: str
    message: str
    services: tuple[str, ...]


def deploy_records(state_dir: Path, seen: set[str] | frozenset[str] = frozenset()
                   ) -> tuple[list[str], list[DeployRecord]]:
    """All record names, and the readable records not in ``seen``, oldest first (file
    names start with a UTC timestamp). Only new files are read."""
    folder = state_dir / "deploys"
    out: list[DeployRecord] = []
    try:
        names = sorted(p.name for p in folder.glob("*.json"))
    except OSError:
        return [], []
    for name in names:
        if name in seen:
            continue
        try:
            data: dict[str, Any] = json.loads(files.read_bounded(folder / name, files.RECORD_MAX))
        except (OSError, ValueError):
            continue  # half-written by hand, or removed meanwhile: the hook writes atomically
        out.append(DeployRecord(
            name, str(data.get("lineage", "")), str(data.get("outcome", "")),
            float(data.get("time", 0.0) or 0.0), str(data.get("new_sha256") or ""),
            str(data.get("old_sha256") or ""), str(data.get("message", "")),
            tuple(str(s) for s in data.get("services", ()) or ())))
    return names, out
