"""Which certificate files Postfix reads, for which services and SNI names: the one
reader of Postfix's TLS file settings (the deploy pipeline, the audit, the survey, adopt
and the daemon all ask it).

:func:`cert_settings` applies Postfix's precedence once: per place (main.cf, a master.cf
service with its own ``-o``, the client side), the file settings in force and the TLS
services that read them. :func:`cert_files` turns that into one :class:`CertFile` per
certificate file; :func:`usage` into how a certbot lineage is used (:class:`Usage`).

Postfix reads server certificates from ``smtpd_tls_chain_files`` (3.4+) or the older
``smtpd_tls_{,ec,d}{cert,key}_file`` pairs, globally in main.cf or per service with
``-o`` in master.cf, and per client-sent name from ``tls_server_sni_maps`` (built with
``postmap -F``, so the table holds a copy of the files). A lineage is *staged* when
Postfix reads our bundle for it, *in place* when Postfix reads certbot's
``live/``/``archive/`` files directly, *sni_map* when only an SNI table uses it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from hook.certs import Lineage
from hook.config import Config
from hook.errors import PostfixError
from hook.files import STATE_MAX as _STATE_MAX
from hook.files import read_bounded
from hook.postfix.instance import TLS_LEVEL_PARAMS, Postfix, Service, tls_level

SERVER_PAIRS = (("smtpd_tls_cert_file", "smtpd_tls_key_file"),
                ("smtpd_tls_eccert_file", "smtpd_tls_eckey_file"),
                ("smtpd_tls_dcert_file", "smtpd_tls_dkey_file"))
CLIENT_PAIRS = (("smtp_tls_cert_file", "smtp_tls_key_file"),
                ("smtp_tls_eccert_file", "smtp_tls_eckey_file"),
                ("smtp_tls_dcert_file", "smtp_tls_dkey_file"))
SERVER_FILE_PARAMS = ("smtpd_tls_chain_files", *(p for pair in SERVER_PAIRS for p in pair))
CLIENT_FILE_PARAMS = ("smtp_tls_chain_files", *(p for pair in CLIENT_PAIRS for p in pair))
READER_PARAMS = (*SERVER_FILE_PARAMS, *CLIENT_FILE_PARAMS, *TLS_LEVEL_PARAMS)
"""The main.cf parameters :func:`cert_settings` and :func:`cert_files` read."""
OTHER_PARAMS = ("myhostname", "tls_server_sni_maps", "queue_directory", "multi_instance_enable",
                "multi_instance_directories", "inet_interfaces")
# postmap -F table types and the file each one writes next to its source
DB_SUFFIX = {"hash": ".db", "btree": ".db", "lmdb": ".lmdb", "cdb": ".cdb", "dbm": ".db"}


class Mode(StrEnum):
    STAGED = "staged"
    IN_PLACE = "in_place"
    SNI_MAP = "sni_map"
    UNUSED = "unused"


class Side(StrEnum):
    SERVER = "server"  # smtpd: what clients are shown
    CLIENT = "client"  # smtp: what this server shows when it delivers


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


def required_names(config: Config, use: Usage) -> tuple[str, ...]:
    """Host names Postfix presents the lineage under, which the leaf must cover:
    ``myhostname`` (unless ``deploy.require_myhostname = false``) and ``deploy.names``
    when Postfix presents it by default, plus the SNI names that map to it."""
    names: list[str] = []
    if use.default_cert:
        if config.deploy.require_myhostname and use.myhostname:
            names.append(use.myhostname)
        names.extend(config.deploy.names)
    for sni in use.sni_maps:
        names.extend(n for n in sni.names if not n.startswith("."))
    return tuple(dict.fromkeys(n.lower().rstrip(".") for n in names))


def faces_port_25(use: Usage) -> bool:
    """Can a sender's MX connection get this lineage? Not when only implicit-TLS (465) or
    TLS-required (587-style ``-o smtpd_tls_security_level=encrypt``) services present it:
    RFC 3207 forbids requiring TLS on a public MX, so those are submission services."""
    if use.sni_maps or not use.services:
        return True
    for svc in use.services:
        level = svc.overrides.get("smtpd_tls_security_level", "")
        enforce = svc.overrides.get("smtpd_enforce_tls", "")
        if svc.port == 25 or not (svc.implicit_tls or level == "encrypt" or enforce == "yes"):
            return True
    return False


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


def effective_files(params: Mapping[str, str], overrides: Mapping[str, str],
                    side: Side = Side.SERVER) -> dict[str, str]:
    """The certificate settings a service really uses, with Postfix's precedence: a
    service's ``-o`` wins over main.cf, and a non-empty ``smtpd_tls_chain_files`` makes
    Postfix ignore the legacy ``smtpd_tls_{,ec,d}{cert,key}_file`` altogether (the
    client's ``smtp_tls_*`` likewise)."""
    names = SERVER_FILE_PARAMS if side is Side.SERVER else CLIENT_FILE_PARAMS
    merged = {n: overrides[n] if n in overrides else params.get(n, "") for n in names}
    if merged[names[0]].strip():
        return {names[0]: merged[names[0]]}
    return {k: v for k, v in merged.items() if v.strip()}


def own_files(service: Service) -> dict[str, str]:
    """The certificate settings a master.cf service sets itself (``-o``)."""
    return {k: v for k, v in service.overrides.items() if k in SERVER_FILE_PARAMS}


def tls_enabled(service: Service, params: Mapping[str, str]) -> bool:
    """Does this service offer TLS (STARTTLS or implicit)?"""
    return service.implicit_tls or tls_level(service, params) in ("may", "encrypt")


@dataclass(frozen=True)
class Settings:
    """The certificate file settings in force at one place of Postfix's configuration."""

    side: Side
    where: str
    """``main.cf`` or ``master.cf NAME`` (a service with its own ``-o``)."""
    files: Mapping[str, str]
    """:func:`effective_files`: parameter -> value, Postfix's precedence applied."""
    services: tuple[Service, ...]
    """The TLS services that read them (none on the client side)."""


def cert_settings(params: Mapping[str, str], services: Sequence[Service]) -> tuple[Settings, ...]:
    """Where Postfix takes certificate files from: main.cf for every TLS service without
    certificate settings of its own, then each service that has them (``-o``), then the
    client side. ``params`` must hold :data:`READER_PARAMS`."""
    tls_services = [s for s in services if tls_enabled(s, params)]
    own = {s.name: own_files(s) for s in tls_services}
    return (
        Settings(Side.SERVER, "main.cf", effective_files(params, {}),
                 tuple(s for s in tls_services if not own[s.name])),
        *(Settings(Side.SERVER, f"master.cf {s.name}", effective_files(params, own[s.name]), (s,))
          for s in tls_services if own[s.name]),
        Settings(Side.CLIENT, "main.cf", effective_files(params, {}, Side.CLIENT), ()),
    )


@dataclass(frozen=True)
class CertFile:
    """One certificate file Postfix reads, with its key and who uses it."""

    side: Side
    param: str
    where: str
    """``main.cf`` or ``master.cf NAME``."""
    path: str
    key_path: str
    services: tuple[Service, ...] = field(default=())

    @property
    def use(self) -> str:
        return f"{self.where}: {self.param}"


def cert_files(params: Mapping[str, str], services: Sequence[Service],
               read: Callable[[str], bytes | None] | None = None) -> list[CertFile]:
    """Every certificate file Postfix reads (:func:`cert_settings`), with its key.

    A ``*_chain_files`` list holds keys and certificates in any order: ``read(path)``
    (default: the first MiB of the file, None if unreadable) tells which is which, and
    an unreadable one goes by its name."""
    read = read or _read_head
    found: list[CertFile] = []
    for place in cert_settings(params, services):
        chain_param = SERVER_FILE_PARAMS[0] if place.side is Side.SERVER else CLIENT_FILE_PARAMS[0]
        pairs = SERVER_PAIRS if place.side is Side.SERVER else CLIENT_PAIRS
        chain = files_of(place.files.get(chain_param, ""))
        key = ""
        for path in chain:
            data = read(path)
            if data is None:  # unreadable here (not root): go by the file name
                is_key = "key" in os.path.basename(path).lower()
                data = b"PRIVATE KEY-----" if is_key else b"-----BEGIN CERTIFICATE-----"
            if b"PRIVATE KEY-----" in data:
                key = path
            if b"-----BEGIN CERTIFICATE-----" in data:
                found.append(CertFile(place.side, chain_param, place.where, path, key or path,
                                      place.services))
        for cert_param, key_param in pairs if not chain else ():
            cert = place.files.get(cert_param, "")
            if cert:
                found.append(CertFile(place.side, cert_param, place.where, cert,
                                      place.files.get(key_param) or cert, place.services))
    return found


def _read_head(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read(1 << 20)
    except OSError:
        return None


def sni_entries(text: str) -> list[tuple[str, list[str]]]:
    """Parse a postmap source file: ``key value...`` lines, continuation lines indented."""
    entries: list[tuple[str, list[str]]] = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace() and entries:
            entries[-1][1].extend(files_of(line))
            continue
        key, *rest = line.split(None, 1)
        entries.append((key.lower(), files_of(rest[0]) if rest else []))
    return entries


def _sni_maps(value: str, roots: tuple[str, ...], refs: list[str]) -> list[SniMap]:
    maps = []
    for spec in files_of(value):
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
    params = postfix.parameters(*READER_PARAMS, *OTHER_PARAMS)
    services = postfix.services(params.get("inet_interfaces", "all"))  # one postconf less
    owned = staged_paths(bundle_dir, lineage)
    bundle_roots = tuple(str(p) for p in owned)
    roots = lineage_roots(lineage)
    refs: list[str] = []
    staged: dict[Path, Kind] = {}
    in_place = False
    users: list[Service] = []
    for place in cert_settings(params, services):
        if place.side is not Side.SERVER:
            continue
        prefix = "" if place.where == "main.cf" else f"{place.where}: "
        hit = False
        for name, value in place.files.items():
            for f in files_of(value):
                if _points_at(f, bundle_roots):
                    staged[Path(f)] = owned.get(Path(f), Kind.CHAIN)
                elif _points_at(f, roots):
                    in_place = True
                else:
                    continue
                hit = True
                refs.append(f"{prefix}{name} = {f}")
        if hit:
            users.extend(place.services)
    tls_services = [svc for svc in services if tls_enabled(svc, params)]
    users.sort(key=tls_services.index)
    refs = list(dict.fromkeys(refs))
    sni = _sni_maps(params.get("tls_server_sni_maps", ""), roots + bundle_roots, refs)
    return Usage(_mode(staged, in_place, sni), bundle_path(bundle_dir, lineage), tuple(refs),
                 tuple(users), staged=tuple(Staged(p, k) for p, k in staged.items()),
                 sni_maps=tuple(sni), tls_services=tuple(tls_services),
                 myhostname=params.get("myhostname", ""),
                 queue_directory=params.get("queue_directory", ""),
                 secondaries=tuple(Path(d) for d in files_of(
                     params.get("multi_instance_directories", ""))
                     if params.get("multi_instance_enable", "") == "yes"))


def _mode(staged: Mapping[Path, Kind], in_place: bool, sni: Sequence[SniMap]) -> Mode:
    if staged:
        return Mode.STAGED
    if in_place:
        return Mode.IN_PLACE
    return Mode.SNI_MAP if sni else Mode.UNUSED
