"""MX coverage: the certificate must carry the MX host names that point here.

A sender looks up the MX records of the recipient's domain and connects to an MX *host*;
when it verifies the certificate at all (DANE, MTA-STS), it checks the MX host name, not
the mail domain. A certificate for ``example.com`` is no use to a sender delivering to
``mx1.example.com``. So, for each domain this Postfix accepts mail for:

1. :func:`accepted_domains` reads ``mydestination``, ``virtual_alias_domains``,
   ``virtual_mailbox_domains`` and ``relay_domains`` (literal names, files, and indexed
   tables listed with ``postmap -s``);
2. :func:`coverage` looks up each domain's MX records (no MX: the domain itself, RFC 5321
   §5.1 "implicit MX") and their addresses, finds the MX hosts that point at this host
   (``myhostname``, an address on one of its interfaces, or one in ``dns.host_addresses``)
   and checks that the certificate covers their names (:mod:`hook.certs.validate`, RFC 6125
   wildcards).

Network traffic: DNS only. Meant for ``renew-check`` and the daemon.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from hook import files
from hook.certs import Trust, check_names, names_of
from hook.config import Config
from hook.dns import Answer, Resolver, Security
from hook.postfix import Postfix
from hook.verdict import Code, Problem, Status, worst

DOMAIN_PARAMS = ("mydestination", "virtual_alias_domains", "virtual_mailbox_domains", "relay_domains")
INDEXED_TABLES = frozenset({"hash", "btree", "lmdb", "cdb", "dbm", "sdbm"})
"""Table types whose keys ``postmap -s`` can list."""
NOT_MAIL_DOMAINS = frozenset({"localhost", "localhost.localdomain"})


@dataclass(frozen=True)
class AcceptedDomains:
    """Domain -> the parameters that list it; notes on what could not be listed."""

    domains: Mapping[str, tuple[str, ...]]
    notes: tuple[str, ...] = ()
    myhostname: str = ""


@dataclass(frozen=True)
class MxHost:
    preference: int
    name: str
    addresses: tuple[str, ...]
    here: bool
    """Points at this host: ``myhostname``, a local address or one of ``dns.host_addresses``."""
    covered: bool
    """The certificate is valid for this name."""
    implicit: bool = False
    """No MX records: mail goes to the domain's own address (RFC 5321 §5.1)."""


@dataclass(frozen=True)
class DomainMx:
    """One accepted domain, its MX hosts and what the certificate covers."""

    domain: str
    sources: tuple[str, ...]
    answer: Answer
    hosts: tuple[MxHost, ...] = ()

    @property
    def here(self) -> tuple[MxHost, ...]:
        return tuple(h for h in self.hosts if h.here)

    @property
    def uncovered(self) -> tuple[str, ...]:
        """MX names that point here and that the certificate does not cover."""
        return tuple(h.name for h in self.hosts if h.here and not h.covered)


@dataclass(frozen=True)
class MxCoverage:
    domains: tuple[DomainMx, ...] = ()
    problems: tuple[Problem, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def status(self) -> Status:
        return worst(tuple(p.status for p in self.problems))

    def as_record(self) -> dict[str, object]:
        """Plain data for JSON (``renew-check --json``)."""
        return {
            "status": self.status.value,
            "domains": [{
                "domain": d.domain, "sources": list(d.sources), "security": d.answer.security.value,
                "mx": [{"preference": h.preference, "name": h.name, "addresses": list(h.addresses),
                        "here": h.here, "covered": h.covered, "implicit": h.implicit} for h in d.hosts],
                "uncovered": list(d.uncovered)} for d in self.domains],
            "problems": [{"code": p.code.value, "status": p.status.value, "detail": p.detail,
                          "fix": p.fix} for p in self.problems],
            "notes": list(self.notes),
        }

    @property
    def uncovered_domains(self) -> tuple[str, ...]:
        """The domains whose MX name (pointing here) the certificate does not cover."""
        return tuple(d.domain for d in self.domains if d.uncovered)


# --------------------------------------------------------------------------- domains
def accepted_domains(postfix: Postfix) -> AcceptedDomains:
    """The mail domains Postfix accepts, from main.cf (``$`` expanded by ``postconf -x``)."""
    params = postfix.parameters(*DOMAIN_PARAMS, "myhostname")
    found: dict[str, list[str]] = {}
    notes: list[str] = []
    for param in DOMAIN_PARAMS:
        for entry in _entries(params.get(param, "")):
            for name in _expand(entry, postfix, notes, param):
                domain = name.rstrip(".").lower()
                if domain.startswith("."):
                    notes.append(f"{param}: {entry}: subdomain patterns cannot be checked")
                    continue
                if "@" in domain or "." not in domain or domain in NOT_MAIL_DOMAINS:
                    continue
                sources = found.setdefault(domain, [])
                if param not in sources:
                    sources.append(param)
    return AcceptedDomains({d: tuple(s) for d, s in found.items()}, tuple(notes),
                           params.get("myhostname", "").rstrip(".").lower())


def _entries(value: str) -> list[str]:
    """Split a list parameter (commas and/or spaces), keeping ``inline:{ ... }`` whole."""
    out: list[str] = []
    depth, cur = 0, ""
    for ch in value:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth = max(0, depth - 1)
        if depth == 0 and (ch in ", \t\n"):
            if cur:
                out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        out.append(cur)
    return out


def _expand(entry: str, postfix: Postfix, notes: list[str], param: str) -> list[str]:
    """A literal name, a ``/file`` of names, or a ``type:table`` whose keys are names."""
    if entry.startswith("/"):
        return _file_names(Path(entry), notes, param)
    kind, sep, table = entry.partition(":")
    if not sep:
        return [entry]
    if kind == "proxy":  # proxy:hash:/etc/postfix/domains -> the table behind the proxy
        return _expand(table, postfix, notes, param)
    return _table_keys(entry, postfix, notes, param)


def _table_keys(entry: str, postfix: Postfix, notes: list[str], param: str) -> list[str]:
    """The keys of a ``type:table`` lookup table: inline and texthash read here, the
    indexed types listed by ``postmap -s``; other types cannot be listed (a note)."""
    kind, _, table = entry.partition(":")
    if kind == "inline":
        body = table.strip().removeprefix("{").removesuffix("}")
        return [item.split("=", 1)[0].strip("{} ") for item in _entries(body) if item.strip("{} ")]
    if kind == "texthash":
        return [line.split()[0] for line in _file_lines(Path(table), notes, param) if line.split()]
    if kind in INDEXED_TABLES:
        return _postmap_keys(entry, postfix, notes, param)
    notes.append(f"{param}: domains in {entry} cannot be listed ({kind} tables are not "
                 "enumerable); check their MX names by hand")
    return []


def _postmap_keys(entry: str, postfix: Postfix, notes: list[str], param: str) -> list[str]:
    argv = ["postmap", "-c", str(postfix.config_directory), "-s", entry]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        notes.append(f"{param}: cannot list {entry}: {exc}")
        return []
    if proc.returncode != 0:
        notes.append(f"{param}: cannot list {entry}: {(proc.stderr or proc.stdout).strip()}")
        return []
    return [line.split()[0] for line in proc.stdout.splitlines() if line.split()]


def _file_lines(path: Path, notes: list[str], param: str) -> list[str]:
    try:
        text = files.read_bounded(path, files.STATE_MAX).decode(errors="replace")
    except OSError as exc:
        notes.append(f"{param}: cannot read {path}: {exc.strerror}")
        return []
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _file_names(path: Path, notes: list[str], param: str) -> list[str]:
    return [n for line in _file_lines(path, notes, param) for n in _entries(line)]


# --------------------------------------------------------------------------- "this host"
def is_local_address(address: str) -> bool:
    """Is ``address`` on one of this host's interfaces? (Binding to it only works then;
    a UDP bind sends nothing.)"""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((str(ip), 0))
        except OSError:
            return False
    return True


def here_predicate(myhostname: str, host_addresses: Iterable[str]) -> Callable[[str, Sequence[str]], bool]:
    declared = {str(ipaddress.ip_address(a)) for a in host_addresses}

    def here(name: str, addresses: Sequence[str]) -> bool:
        if myhostname and name == myhostname:
            return True
        return any(a in declared or is_local_address(a) for a in addresses)

    return here


def covers(leaf: x509.Certificate, name: str) -> bool:
    """Is the certificate valid for host ``name``? (The one validator's name check.)"""
    return not check_names(leaf, [name], Trust((), ()), dt.datetime.now(dt.UTC), "certificate")


# --------------------------------------------------------------------------- coverage
def coverage(config: Config, leaf: x509.Certificate, postfix: Postfix, *,
             resolver: Resolver | None = None) -> MxCoverage:
    """MX coverage for every domain Postfix accepts (see the module docstring)."""
    accepted = accepted_domains(postfix)
    resolver = resolver or Resolver.from_config(config.dns)
    here = here_predicate(accepted.myhostname, config.dns.host_addresses)
    result = domain_coverage(leaf, accepted.domains, resolver, here)
    return MxCoverage(result.domains, result.problems, accepted.notes + result.notes)


def domain_coverage(leaf: x509.Certificate, domains: Mapping[str, Sequence[str]], resolver: Resolver,
                    here: Callable[[str, Sequence[str]], bool]) -> MxCoverage:
    """MX coverage for the given domains (domain -> where it came from)."""
    names = list(domains)
    mx_answers = dict(zip(names, resolver.lookup_many([(d, "MX") for d in names]), strict=True))
    targets: dict[str, list[tuple[int, str, bool]]] = {}
    for domain, answer in mx_answers.items():
        targets[domain] = _targets(domain, answer)
    hostnames = sorted({t for ts in targets.values() for _, t, _ in ts})
    queries = [(h, t) for h in hostnames for t in ("A", "AAAA")]
    addr_answers = dict(zip(queries, resolver.lookup_many(queries), strict=True))

    cert_names = ", ".join(names_of(leaf)) or "no names"
    results: list[DomainMx] = []
    problems: list[Problem] = []
    notes: list[str] = []
    for domain in names:
        answer = mx_answers[domain]
        where = f"{domain} ({', '.join(domains[domain])})"
        if not answer.ok:
            problems.append(Problem(Code.DNS_LOOKUP_FAILED, Status.WARNING,
                                    f"{where}: {answer.describe()}",
                                    "senders cannot find this domain's MX either: fix its DNS"))
            results.append(DomainMx(domain, tuple(domains[domain]), answer))
            continue
        if answer.rcode == "NXDOMAIN":
            notes.append(f"{where}: the domain does not exist in DNS; no mail can reach it")
        elif not targets[domain]:
            notes.append(f"{where}: null MX (RFC 7505): the domain accepts no mail from outside")
        hosts = []
        for pref, name, implicit in targets[domain]:
            addrs = tuple(r for t in ("A", "AAAA") for r in addr_answers[(name, t)].records)
            hosts.append(MxHost(pref, name, addrs, here(name, addrs), covers(leaf, name), implicit))
        entry = DomainMx(domain, tuple(domains[domain]), answer, tuple(hosts))
        results.append(entry)
        for host in entry.hosts:
            if host.here and not host.covered:
                how = "has no MX, so mail goes to the domain itself" if host.implicit else \
                    f"MX {host.preference} {host.name}"
                problems.append(Problem(
                    Code.MX_NOT_COVERED, Status.WARNING,
                    f"{where}: {how} points at this host ({', '.join(host.addresses) or 'by name'}) "
                    f"but the certificate does not cover {host.name} (it covers {cert_names}): "
                    "senders that verify (DANE, MTA-STS) will not deliver there",
                    f"add {host.name} to the certificate (certbot certonly --expand --cert-name NAME "
                    f"-d <its current names> -d {host.name}) or point the MX at a name it covers"))
        if hosts and not entry.here and answer.rcode != "NXDOMAIN":
            notes.append(f"{where}: no MX points at this host (MX: "
                         f"{', '.join(h.name for h in hosts)}); mail for it arrives through those")
        if answer.security is Security.INSECURE and entry.here:
            notes.append(f"{where}: the MX records are not DNSSEC-signed, so DANE cannot apply")
    return MxCoverage(tuple(results), tuple(problems), tuple(notes))


def _targets(domain: str, answer: Answer) -> list[tuple[int, str, bool]]:
    """(preference, host, implicit) sorted by preference; [] for a null MX or no domain."""
    if not answer.ok or answer.rcode == "NXDOMAIN":
        return []
    if not answer.records:
        return [(0, domain, True)]
    out = []
    for text in answer.records:
        pref, _, host = text.partition(" ")
        host = host.strip().rstrip(".").lower()
        if host:  # "0 ." is a null MX
            out.append((int(pref), host, False))
    return sorted(out)
