"""Which Postfix TLS settings, services and SNI maps use a lineage.

Postfix reads server certificates from ``smtpd_tls_chain_files`` (3.4+) or the older
``smtpd_tls_{,ec,d}{cert,key}_file`` pairs, globally in main.cf or per service with
``-o`` in master.cf, and per client-sent name from ``tls_server_sni_maps`` (built with
``postmap -F``, so the table holds a copy of the files). A lineage is *staged* when
Postfix reads our bundle for it, *in place* when Postfix reads certbot's
``live/``/``archive/`` files directly, *sni_map* when only an SNI table uses it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from hook.certs.lineage import Lineage
from hook.errors import PostfixError
from hook.files import STATE_MAX as _STATE_MAX
from hook.files import read_bounded
from hook.postfix.instance import TLS_LEVEL_PARAMS, Postfix, Service, tls_level

SERVER_FILE_PARAMS = (
    "smtpd_tls_chain_files",
    "smtpd_tls_cert_file", "smtpd_tls_key_file",
    "smtpd_tls_eccert_file", "smtpd_tls_eckey_file",
    "smtpd_tls_dcert_file", "smtpd_tls_dkey_file",
)
OTHER_PARAMS = ("myhostname", "tls_server_sni_maps", "queue_directory", "multi_instance_enable",
                "multi_instance_directories")
# postmap -F table types and the file each one writes next to its source
DB_SUFFIX = {"hash": ".db", "btree": ".db", "lmdb": ".lmdb", "cdb": ".cdb", "dbm": ".db"}


class Mode(StrEnum):
    STAGED = "staged"
    IN_PLACE = "in_place"
    SNI_MAP = "sni_map"
    UNUSED = "unused"


class Kind(StrEnum):
    """What a staged file holds."""

    CHAIN = "chain"  # key + leaf + intermediates, for smtpd_tls_chain_files (Postfix >= 3.4)
    CERT = "cert"    # leaf + intermediates, for smtpd_tls_cert_file (older Postfix)
    KEY = "key"      # the private key alone, for smtpd_tls_key_file (older Postfix)


@dataclass(frozen=True)
class Staged:
    path: Path
    kind: Kind


@dataclass(frozen=True)
class SniMap:
    """One ``tls_server_sni_maps`` table with entries that use the lineage."""

    spec: str
    source: Path
    db: Path
    names: tuple[str, ...]


@dataclass(frozen=True)
class Usage:
    mode: Mode
    bundle_path: Path
    references: tuple[str, ...]
    """``param = file`` (or ``service: param = file``) lines that point at the lineage."""
    services: tuple[Service, ...]
    """The TLS services (STARTTLS or implicit) whose default certificate the lineage provides."""
    staged: tuple[Staged, ...] = ()
    """The hook-owned files Postfix reads for this lineage (empty unless STAGED)."""
    sni_maps: tuple[SniMap, ...] = ()
    tls_services: tuple[Service, ...] = ()
    """Every TLS service (used to prove SNI names)."""
    myhostname: str = ""
    queue_directory: str = ""
    secondaries: tuple[Path, ...] = ()
    """The other instances' configuration directories (``multi_instance_directories``
    when ``multi_instance_enable = yes``; read from the primary only)."""

    @property
    def default_cert(self) -> bool:
        """Does Postfix present this lineage without SNI (so it must cover myhostname)?"""
        return bool(self.services)


def merged(uses: list[Usage]) -> Usage:
    """One view of several Postfix instances that use the lineage (postmulti): every
    service, staged file and SNI table of each; the primary's names. Staged wins over
    in place (what can be rolled back is), in place over SNI-only."""
    if len(uses) == 1:
        return uses[0]
    modes = {u.mode for u in uses}
    mode = next(m for m in (Mode.STAGED, Mode.IN_PLACE, Mode.SNI_MAP, Mode.UNUSED) if m in modes)
    return replace(
        uses[0], mode=mode,
        references=tuple(dict.fromkeys(r for u in uses for r in u.references)),
        services=tuple(s for u in uses for s in u.services),
        staged=tuple(dict.fromkeys(s for u in uses for s in u.staged)),
        sni_maps=tuple(dict.fromkeys(m for u in uses for m in u.sni_maps)),
        tls_services=tuple(s for u in uses for s in u.tls_services))


def bundle_path(bundle_dir: Path, lineage: Lineage) -> Path:
    return bundle_dir / f"{lineage.name}.pem"


def staged_paths(bundle_dir: Path, lineage: Lineage) -> dict[Path, Kind]:
    """The files the hook may own for a lineage: NAME.pem, or NAME.crt + NAME.key."""
    return {bundle_dir / f"{lineage.name}.pem": Kind.CHAIN,
            bundle_dir / f"{lineage.name}.crt": Kind.CERT,
            bundle_dir / f"{lineage.name}.key": Kind.KEY}


def files_of(value: str) -> list[str]:
    """The file names in a Postfix list value (commas and/or white space)."""
    return [v for v in value.replace(",", " ").split() if v]


_files = files_of


def _points_at(file: str, roots: tuple[str, ...]) -> bool:
    real = os.path.realpath(file)
    return any(file == r or file.startswith(r + "/") or real == r or real.startswith(r + "/")
               for r in roots)


def lineage_roots(lineage: Lineage) -> tuple[str, ...]:
    """The lineage's ``live/`` and ``archive/`` directories, as given and resolved."""
    return tuple(dict.fromkeys(
        str(p) for base in (lineage.live, lineage.archive) for p in (base, Path(os.path.realpath(base)))
    ))


def belongs_to(lineage: Lineage, bundle_dir: Path) -> Callable[[str], bool]:
    """``ours(path)``: is a configured file the lineage's (certbot's or the staged copy)?"""
    roots = lineage_roots(lineage) + tuple(str(p) for p in staged_paths(bundle_dir, lineage))
    return lambda path: bool(path) and _points_at(path, roots)


def effective_files(params: dict[str, str], overrides: dict[str, str]) -> dict[str, str]:
    """The certificate settings a service really uses, with Postfix's precedence: a
    service's ``-o`` wins over main.cf, and a non-empty ``smtpd_tls_chain_files`` makes
    Postfix ignore the legacy ``smtpd_tls_{,ec,d}{cert,key}_file`` altogether."""
    merged = {n: overrides[n] if n in overrides else params.get(n, "") for n in SERVER_FILE_PARAMS}
    if merged["smtpd_tls_chain_files"].strip():
        return {"smtpd_tls_chain_files": merged["smtpd_tls_chain_files"]}
    return {k: v for k, v in merged.items() if v.strip()}


def tls_enabled(service: Service, params: dict[str, str]) -> bool:
    """Does this service offer TLS (STARTTLS or implicit)?"""
    return service.implicit_tls or tls_level(service, params) in ("may", "encrypt")


def sni_entries(text: str) -> list[tuple[str, list[str]]]:
    """Parse a postmap source file: ``key value...`` lines, continuation lines indented."""
    entries: list[tuple[str, list[str]]] = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace() and entries:
            entries[-1][1].extend(_files(line))
            continue
        key, *rest = line.split(None, 1)
        entries.append((key.lower(), _files(rest[0]) if rest else []))
    return entries


def _sni_maps(value: str, roots: tuple[str, ...], refs: list[str]) -> list[SniMap]:
    maps = []
    for spec in _files(value):
        kind, _, name = spec.partition(":")
        if kind not in DB_SUFFIX or not name.startswith("/"):
            continue  # e.g. texthash cannot hold postmap -F data; nothing we can rebuild
        source = Path(name)
        try:
            text = read_bounded(source, _STATE_MAX).decode(errors="replace")
        except OSError as exc:
            raise PostfixError(f"{source}: cannot read tls_server_sni_maps source "
                               f"({exc.strerror})") from exc
        names = []
        for key, files in sni_entries(text):
            hits = [f for f in files if _points_at(f, roots)]
            if hits:
                names.append(key)
                refs.extend(f"{spec} {key}: {f}" for f in hits)
        if names:
            maps.append(SniMap(spec, source, Path(name + DB_SUFFIX[kind]), tuple(names)))
    return maps


def usage(postfix: Postfix, lineage: Lineage, bundle_dir: Path) -> Usage:
    """Find how (and whether) Postfix uses ``lineage``; lists the services to prove."""
    params = postfix.parameters(*SERVER_FILE_PARAMS, *TLS_LEVEL_PARAMS, *OTHER_PARAMS)
    services = postfix.services()
    bundle = bundle_path(bundle_dir, lineage)
    owned = staged_paths(bundle_dir, lineage)
    bundle_roots = tuple(str(p) for p in owned)
    roots = lineage_roots(lineage)
    refs: list[str] = []
    staged: dict[Path, Kind] = {}
    in_place = False
    users: list[Service] = []

    def scan(where: str, values: dict[str, str]) -> bool:
        nonlocal in_place
        hit = False
        for name in SERVER_FILE_PARAMS:
            for f in _files(values.get(name, "")):
                if _points_at(f, bundle_roots):
                    hit = True
                    path = Path(f)
                    staged[path] = owned.get(path, Kind.CHAIN)
                    refs.append(f"{where}{name} = {f}")
                elif _points_at(f, roots):
                    in_place = hit = True
                    refs.append(f"{where}{name} = {f}")
        return hit

    global_hit = scan("", effective_files(params, {}))
    tls_services = [svc for svc in services if tls_enabled(svc, params)]
    for svc in tls_services:
        own = {k: v for k, v in svc.overrides.items() if k in SERVER_FILE_PARAMS}
        if own:
            if scan(f"master.cf {svc.name}: ", effective_files(params, own)):
                users.append(svc)
        elif global_hit:
            users.append(svc)
    refs = list(dict.fromkeys(refs))
    sni = _sni_maps(params.get("tls_server_sni_maps", ""), roots + bundle_roots, refs)
    if staged:
        mode = Mode.STAGED
    elif in_place:
        mode = Mode.IN_PLACE
    elif sni:
        mode = Mode.SNI_MAP
    else:
        mode = Mode.UNUSED
    return Usage(mode, bundle, tuple(refs), tuple(users),
                 staged=tuple(Staged(p, k) for p, k in staged.items()),
                 sni_maps=tuple(sni), tls_services=tuple(tls_services),
                 myhostname=params.get("myhostname", ""),
                 queue_directory=params.get("queue_directory", ""),
                 secondaries=tuple(Path(d) for d in files_of(
                     params.get("multi_instance_directories", ""))
                     if params.get("multi_instance_enable", "") == "yes"))
