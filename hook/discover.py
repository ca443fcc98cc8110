"""Which Postfix TLS settings and services use a lineage.

Postfix reads server certificates from ``smtpd_tls_chain_files`` (3.4+) or the older
``smtpd_tls_{,ec,d}{cert,key}_file`` pairs, globally in main.cf or per service with
``-o`` in master.cf. A lineage is *staged* when Postfix reads our bundle for it, *in
place* when Postfix reads certbot's ``live/``/``archive/`` files directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from hook.lineage import Lineage
from hook.postfix import Postfix, Service

SERVER_FILE_PARAMS = (
    "smtpd_tls_chain_files",
    "smtpd_tls_cert_file", "smtpd_tls_key_file",
    "smtpd_tls_eccert_file", "smtpd_tls_eckey_file",
    "smtpd_tls_dcert_file", "smtpd_tls_dkey_file",
)
TLS_LEVEL_PARAMS = ("smtpd_tls_security_level", "smtpd_use_tls", "smtpd_enforce_tls",
                    "postscreen_tls_security_level")


class Mode(StrEnum):
    STAGED = "staged"
    IN_PLACE = "in_place"
    UNUSED = "unused"


@dataclass(frozen=True)
class Usage:
    mode: Mode
    bundle_path: Path
    references: tuple[str, ...]
    """``param = file`` (or ``service: param = file``) lines that point at the lineage."""
    services: tuple[Service, ...]
    """The TLS services (STARTTLS or implicit) whose certificate the lineage provides."""


def bundle_path(bundle_dir: Path, lineage: Lineage) -> Path:
    return bundle_dir / f"{lineage.name}.pem"


def _files(value: str) -> list[str]:
    return [v for v in value.replace(",", " ").split() if v]


def _points_at(file: str, roots: tuple[str, ...]) -> bool:
    real = os.path.realpath(file)
    return any(file == r or file.startswith(r + "/") or real == r or real.startswith(r + "/")
               for r in roots)


def tls_enabled(service: Service, params: dict[str, str]) -> bool:
    """Does this service offer TLS (STARTTLS or implicit)?"""
    o = service.overrides
    if service.implicit_tls:
        return True
    prefix = "postscreen" if service.command == "postscreen" else "smtpd"
    level = o.get(f"{prefix}_tls_security_level") or params.get(f"{prefix}_tls_security_level", "")
    if service.command == "postscreen" and not level:
        level = o.get("smtpd_tls_security_level") or params.get("smtpd_tls_security_level", "")
    if level:
        return level in ("may", "encrypt")
    use = o.get("smtpd_use_tls") or params.get("smtpd_use_tls", "no")
    enforce = o.get("smtpd_enforce_tls") or params.get("smtpd_enforce_tls", "no")
    return "yes" in (use, enforce)


def usage(postfix: Postfix, lineage: Lineage, bundle_dir: Path) -> Usage:
    """Find how (and whether) Postfix uses ``lineage``; lists the services to prove."""
    params = postfix.parameters(*SERVER_FILE_PARAMS, *TLS_LEVEL_PARAMS)
    services = postfix.services()
    bundle = bundle_path(bundle_dir, lineage)
    bundle_roots = (str(bundle),)
    lineage_roots = tuple(dict.fromkeys(
        str(p) for base in (lineage.live, lineage.archive) for p in (base, Path(os.path.realpath(base)))
    ))
    refs: list[str] = []
    staged = in_place = False
    users: list[Service] = []

    def scan(where: str, values: dict[str, str]) -> bool:
        nonlocal staged, in_place
        hit = False
        for name in SERVER_FILE_PARAMS:
            for f in _files(values.get(name, "")):
                if _points_at(f, bundle_roots):
                    staged = hit = True
                    refs.append(f"{where}{name} = {f}")
                elif _points_at(f, lineage_roots):
                    in_place = hit = True
                    refs.append(f"{where}{name} = {f}")
        return hit

    global_hit = scan("", params)
    for svc in services:
        if not tls_enabled(svc, params):
            continue
        own = {k: v for k, v in svc.overrides.items() if k in SERVER_FILE_PARAMS}
        if own:
            if scan(f"master.cf {svc.name}: ", own):
                users.append(svc)
        elif global_hit:
            users.append(svc)
    mode = Mode.STAGED if staged else Mode.IN_PLACE if in_place else Mode.UNUSED
    return Usage(mode, bundle, tuple(refs), tuple(users))
