"""DANE for SMTP (RFC 7671, RFC 7672): TLSA records for a chain, and the deploy gate.

A sending MTA that does DANE (Postfix ``smtp_tls_security_level = dane``, Exim, Microsoft
and others) looks up ``_25._tcp.<MX host>`` TLSA records; when the zone is signed and any
*usable* record exists, it delivers only if one of them matches the chain the server
presents, else it defers the mail. So a renewal with a new key (certbot's default) or a
new issuing intermediate silently stops DANE mail unless the records were updated
first. The gate runs after validation and before anything is installed:

* :func:`records_for` computes ``3 1 1``, ``3 1 2``, ``3 0 1`` for the leaf and ``2 1 1``,
  ``2 1 2``, ``2 0 1`` for each issuer in the chain; :func:`matches` compares.
* :func:`dane_gate` (pure) judges the published records (:class:`hook.dns.resolver.Answer`, one
  per host) against the new chain and the one served now, and says exactly which RR lines
  to publish; :func:`check` does the lookups and calls it.

Only usages 2 (DANE-TA) and 3 (DANE-EE) count: RFC 7672 §3.1.3 tells SMTP clients to
treat 0 and 1 as unusable. DANE-TA matches any issuer in the presented chain.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from hook.certs import Trust, check_names, names_of, read_reuse_key, spki
from hook.config import Config, DaneMode
from hook.dns.resolver import Answer, Resolver, Security
from hook.verdict import Code, Problem, Status, worst

SMTP_PORT = 25


class Usage(IntEnum):
    PKIX_TA = 0
    PKIX_EE = 1
    DANE_TA = 2
    DANE_EE = 3


class Selector(IntEnum):
    CERT = 0
    SPKI = 1


class Matching(IntEnum):
    FULL = 0
    SHA256 = 1
    SHA512 = 2


LEAF_PARAMS = ((3, 1, 1), (3, 1, 2), (3, 0, 1))
ISSUER_PARAMS = ((2, 1, 1), (2, 1, 2), (2, 0, 1))


@dataclass(frozen=True, order=True)
class Tlsa:
    """One TLSA record: usage, selector, matching type and the association data."""

    usage: int
    selector: int
    mtype: int
    data: bytes

    @classmethod
    def parse(cls, text: str) -> Tlsa:
        """``"3 1 1 0123ab..."`` (presentation format; the hex may be split by spaces)."""
        fields = text.split()
        if len(fields) < 4 or not all(f.isdigit() for f in fields[:3]):
            raise ValueError(f"not a TLSA record: {text!r}")
        try:
            data = bytes.fromhex("".join(fields[3:]))
        except ValueError as exc:
            raise ValueError(f"TLSA data is not hex: {text!r}") from exc
        return cls(int(fields[0]), int(fields[1]), int(fields[2]), data)

    @property
    def params(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype}"

    @property
    def usable(self) -> bool:
        """Usable by an SMTP client (RFC 7672): DANE-TA or DANE-EE, known selector and type."""
        return (self.usage in (Usage.DANE_TA, Usage.DANE_EE) and self.selector in (0, 1)
                and self.mtype in (0, 1, 2))

    def rr(self, host: str, port: int = SMTP_PORT) -> str:
        """The record as a zone-file line, e.g. ``_25._tcp.mx.example. IN TLSA 3 1 1 ab..``."""
        return f"{tlsa_owner(host, port)}. IN TLSA {self}"

    def __str__(self) -> str:
        return f"{self.params} {self.data.hex()}"


def tlsa_owner(host: str, port: int = SMTP_PORT) -> str:
    return f"_{port}._tcp.{host.rstrip('.').lower()}"


def association(cert: x509.Certificate, selector: int, mtype: int) -> bytes:
    """The association data of ``cert`` for a selector and a matching type."""
    content = (cert.public_bytes(serialization.Encoding.DER) if selector == Selector.CERT
               else spki(cert.public_key()))
    if mtype == Matching.SHA256:
        return hashlib.sha256(content).digest()
    if mtype == Matching.SHA512:
        return hashlib.sha512(content).digest()
    return content


def tlsa(cert: x509.Certificate, usage: int, selector: int, mtype: int) -> Tlsa:
    return Tlsa(usage, selector, mtype, association(cert, selector, mtype))


def records_for(chain: Sequence[x509.Certificate]) -> tuple[Tlsa, ...]:
    """3 1 1, 3 1 2, 3 0 1 for the leaf; 2 1 1, 2 1 2, 2 0 1 for each issuer in the chain."""
    leaf = [tlsa(chain[0], *p) for p in LEAF_PARAMS]
    issuers = [tlsa(c, *p) for c in chain[1:] for p in ISSUER_PARAMS]
    return tuple(leaf + issuers)


def recommended(chain: Sequence[x509.Certificate]) -> tuple[Tlsa, ...]:
    """The usual pair: ``3 1 1`` for the leaf key and ``2 1 1`` for each issuer's key.

    The ``2 1 1`` records keep DANE working across a key change; the ``3 1 1`` record
    keeps it working when the CA switches intermediates."""
    return (tlsa(chain[0], 3, 1, 1), *(tlsa(c, 2, 1, 1) for c in chain[1:]))


def matches(record: Tlsa, chain: Sequence[x509.Certificate]) -> bool:
    """Does the (usable) record match the chain as a DANE SMTP client judges it?"""
    if not record.usable or not chain:
        return False
    certs = chain[:1] if record.usage == Usage.DANE_EE else chain[1:]
    return any(association(c, record.selector, record.mtype) == record.data for c in certs)


def issuer_family(leaf: x509.Certificate) -> str:
    """The issuer's organisation and CN without its serial-like suffix: Let's Encrypt's
    R10/R11 -> ``R``, E5/E6 -> ``E``, YR1 -> ``YR``; "Pebble Intermediate CA 1a2b3c" ->
    "Pebble Intermediate CA"."""
    org = ", ".join(str(a.value) for a in leaf.issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
    cn = ", ".join(str(a.value) for a in leaf.issuer.get_attributes_for_oid(NameOID.COMMON_NAME))
    family = re.sub(r"(\s+[0-9a-fA-F]*[0-9][0-9a-fA-F]*|[0-9]+)$", "", cn)
    return f"{org}: {family}" if org else family


def issuer_cn(leaf: x509.Certificate) -> str:
    cns = leaf.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else leaf.issuer.rfc4514_string()


def tlsa_hosts(names: Sequence[str]) -> tuple[str, ...]:
    """The names worth a TLSA lookup: DNS names, no wildcards or IP addresses, once each."""
    out: list[str] = []
    for raw in names:
        name = raw.rstrip(".").lower()
        if not name or name.startswith("*.") or name in out:
            continue
        try:
            ipaddress.ip_address(name)
        except ValueError:
            out.append(name)
    return tuple(out)


def tlsa_names(presented: Sequence[str], leaf: x509.Certificate) -> tuple[str, ...]:
    """The host names whose ``_25._tcp`` TLSA records must match ``leaf``.

    The names Postfix presents the lineage under (``presented``:
    :func:`hook.postfix.tls_files.required_names`, i.e. ``myhostname`` and ``deploy.names``
    for the default certificate, the SNI names that map to it) that the leaf covers; when
    there are none (``require_myhostname = false`` and no ``deploy.names``), the leaf's own
    DNS names. A sender looks up TLSA at the MX host name, and Postfix's ``myhostname`` is
    that name on a typical MX; the leaf's other names (the bare mail domain, webmail) are
    not asked for by senders, and a TLSA record published there for another server must
    not hold this one back."""
    now = dt.datetime.now(dt.UTC)
    nobody = Trust((), ())
    covered = [n for n in presented if not check_names(leaf, [n], nobody, now, "leaf")]
    return tlsa_hosts(covered or names_of(leaf))


def reuse_key(renewal_conf: Path) -> bool | None:
    """certbot's ``reuse_key`` for a lineage (its ``renewal/NAME.conf``); None if unknown."""
    return read_reuse_key(renewal_conf)


# --------------------------------------------------------------------------- the gate
class HostState(StrEnum):
    MATCH = "match"
    """DNSSEC-validated usable records; the new chain matches one."""
    MISMATCH = "mismatch"
    """DNSSEC-validated usable records; none matches the new chain."""
    NO_TLSA = "no_tlsa"
    """Validated: there are no TLSA records. DANE is not in use for this host."""
    UNUSABLE = "unusable"
    """Validated, but only records SMTP clients ignore (usage 0/1, unknown parameters)."""
    INSECURE = "insecure"
    """The zone is not signed: senders ignore any TLSA records. Nothing to enforce."""
    UNVALIDATED = "unvalidated"
    """Signed, but the resolver does not validate: the records cannot be trusted."""
    BOGUS = "bogus"
    """DNSSEC validation failed."""
    LOOKUP_FAILED = "lookup_failed"
    """No usable answer from the resolver."""


@dataclass(frozen=True)
class HostDane:
    """DANE for one host name: what is published and what matches."""

    host: str
    state: HostState
    answer: Answer
    records: tuple[Tlsa, ...] = ()
    match_new: tuple[Tlsa, ...] = ()
    """Published records that match the new chain (the one about to be deployed)."""
    match_old: tuple[Tlsa, ...] = ()
    """Published records that match the old chain (the one served now)."""
    publish: tuple[str, ...] = ()
    """RR lines to add so that the new chain matches (empty when it already does)."""
    rollover: tuple[str, ...] = ()
    """The recommended set for the new chain (3 1 1 leaf + 2 1 1 per issuer), as RR lines."""

    @property
    def owner(self) -> str:
        return tlsa_owner(self.host)


@dataclass(frozen=True)
class DaneResult:
    """The DANE gate's decision for one chain and all its host names."""

    mode: DaneMode
    hosts: tuple[HostDane, ...] = ()
    problems: tuple[Problem, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def status(self) -> Status:
        return worst(tuple(p.status for p in self.problems))

    @property
    def refused(self) -> bool:
        """True when the hook must keep the current certificate (mode refuse only)."""
        return self.mode is DaneMode.REFUSE and self.status is Status.CRITICAL

    @property
    def publish(self) -> tuple[str, ...]:
        """Every RR line to publish before the new chain can be deployed."""
        return tuple(line for h in self.hosts for line in h.publish)

    def as_record(self) -> dict[str, object]:
        """Plain data for JSON (``renew-check --json``, the deploy record)."""
        return {
            "mode": self.mode.value, "status": self.status.value, "refused": self.refused,
            "hosts": [{
                "host": h.host, "owner": h.owner, "state": h.state.value,
                "security": h.answer.security.value, "resolver": h.answer.resolver,
                "records": [str(r) for r in h.records],
                "match_new": [str(r) for r in h.match_new],
                "match_old": [str(r) for r in h.match_old],
                "publish": list(h.publish), "rollover": list(h.rollover)} for h in self.hosts],
            "problems": [_problem_record(p) for p in self.problems],
            "notes": list(self.notes),
        }

    @property
    def summary(self) -> str:
        """One line for the deploy report: the worst finding, or what was checked."""
        if self.problems:
            first = max(self.problems, key=lambda p: p.status.rank)
            more = f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            return f"DANE {'refused' if self.refused else self.status.value}: {first.detail}{more}"
        if self.mode is DaneMode.OFF:
            return "DANE gate off"
        states = ", ".join(f"{h.host} {h.state.value}" for h in self.hosts) or "no host names"
        return f"DANE ok: {states}"


def _problem_record(p: Problem) -> dict[str, str]:
    return {"code": p.code.value, "status": p.status.value, "detail": p.detail, "fix": p.fix}


def dane_gate(chain: Sequence[x509.Certificate], old_chain: Sequence[x509.Certificate] | None,
              records: Sequence[Answer], mode: DaneMode, *,
              reuse_key: bool | None = None, seen: Mapping[str, str] | None = None) -> DaneResult:
    """Judge the TLSA lookups (one :class:`Answer` per ``_25._tcp.<host>``) against the
    new ``chain`` (leaf first) and the ``old_chain`` served now (None on a first deploy).

    Pure: no I/O. In ``refuse`` mode a mismatch or a bogus answer is CRITICAL
    (``result.refused``); in ``warn`` mode the same findings are WARNINGs. A failed lookup
    (no answer) is CRITICAL only for a host in ``seen`` (host -> what was seen: DANE was
    in use for it, :mod:`hook.dns.danestate`); for any other host it is a WARNING that the
    gate could not check, so that a resolver hiccup at renewal time does not hold back
    the certificate of the many hosts that do not use DANE.
    """
    if mode is DaneMode.OFF:
        return DaneResult(mode, notes=("DANE gate off (dns.dane = off): no TLSA lookups",))
    severity = Status.CRITICAL if mode is DaneMode.REFUSE else Status.WARNING
    hosts: list[HostDane] = []
    problems: list[Problem] = []
    notes: list[str] = []
    for answer in records:
        host, host_problems, host_notes = _judge_host(answer, chain, old_chain, severity,
                                                      seen or {})
        hosts.append(host)
        problems += host_problems
        notes += host_notes
    if not records:
        notes.append("no host names to look up TLSA records for")
    unvalidated = [h for h in hosts if h.state is HostState.UNVALIDATED]
    if unvalidated:
        problems.append(Problem(
            Code.DANE_UNVERIFIED, Status.WARNING,
            f"the resolver ({unvalidated[0].answer.resolver}) returned signed answers without the "
            f"AD bit for {', '.join(h.owner for h in unvalidated)}: it does not validate DNSSEC, "
            "so the DANE gate cannot rely on the TLSA records",
            "point dns.resolver at a validating resolver on this host (e.g. unbound on 127.0.0.1)"))
    problems += _change_warnings(chain, old_chain, hosts, reuse_key, notes)
    return DaneResult(mode, tuple(hosts), tuple(problems), tuple(notes))


def _unjudged(answer: Answer, host: str, rollover: tuple[str, ...], severity: Status,
              seen: Mapping[str, str]) -> tuple[HostDane, list[Problem], list[str]]:
    """No answer to judge the new certificate by: the lookup failed (refuses only where
    DANE was seen in use), or DNSSEC says the records are bogus."""
    owner = answer.name
    base = HostDane(host, HostState.LOOKUP_FAILED, answer, rollover=rollover)
    if answer.security is Security.ERROR:
        if host in seen:
            return base, [Problem(
                Code.DNS_LOOKUP_FAILED, severity,
                f"cannot tell whether {owner} still has TLSA records: {answer.describe()}; "
                f"DANE was in use for {host} ({seen[host]}), so the new certificate could "
                "make DANE senders defer all mail to it",
                "fix the resolver (dns.resolver, or /etc/resolv.conf) and deploy again "
                "(postfix-deploy-hook --lineage /etc/letsencrypt/live/NAME), or set "
                "dns.dane = warn")], []
        return base, [Problem(
            Code.DNS_LOOKUP_FAILED, Status.WARNING,
            f"the DANE gate could not check {host}: {answer.describe()}; no DNSSEC-validated "
            f"TLSA record was seen for {host} before, so the deploy is not held back",
            "fix the resolver (dns.resolver, or /etc/resolv.conf); if the zone does publish "
            f"TLSA records at {owner}, compare them with the new certificate now "
            "(renew-check)")], []
    return HostDane(host, HostState.BOGUS, answer, rollover=rollover), [Problem(  # BOGUS
        Code.DANE_BOGUS, severity,
        f"{answer.describe()}: DANE senders cannot verify {host} at all until this is fixed, "
        "and the new certificate cannot be checked against the records",
        "fix the zone's DNSSEC (expired signatures, a DS at the parent that matches no "
        "DNSKEY) or the resolver's trust anchor")], []


def _judge_host(answer: Answer, chain: Sequence[x509.Certificate],
                old_chain: Sequence[x509.Certificate] | None, severity: Status,
                seen: Mapping[str, str]) -> tuple[HostDane, list[Problem], list[str]]:
    owner = answer.name
    host = owner.split(".", 2)[2] if owner.startswith("_") and owner.count(".") >= 2 else owner
    rollover = tuple(r.rr(host) for r in recommended(chain))
    if answer.security in (Security.ERROR, Security.BOGUS):
        return _unjudged(answer, host, rollover, severity, seen)

    records: list[Tlsa] = []
    notes: list[str] = []
    for text in answer.records:
        try:
            records.append(Tlsa.parse(text))
        except ValueError as exc:
            notes.append(f"{owner}: ignoring a record: {exc}")
    usable = tuple(sorted(r for r in records if r.usable))
    match_new = tuple(r for r in usable if matches(r, chain))
    match_old = tuple(r for r in usable if old_chain and matches(r, old_chain))
    published = {str(r) for r in records}
    publish = tuple(r.rr(host) for r in recommended(chain) if str(r) not in published)
    found = HostDane(host, HostState.MATCH, answer, tuple(records), match_new, match_old,
                     (), rollover)

    if answer.security in (Security.INSECURE, Security.UNVALIDATED):
        return _unenforced(found, answer, usable, publish, notes)
    if not records:
        notes.append(f"{owner}: no TLSA records ({'NXDOMAIN' if answer.rcode == 'NXDOMAIN' else 'NODATA'}"
                     f", DNSSEC-validated): DANE is not in use for {host}")
        return _with(found, HostState.NO_TLSA), [], notes
    if not usable:
        return _with(found, HostState.UNUSABLE), [Problem(
            Code.DANE_MISMATCH, Status.WARNING,
            f"{owner} has only TLSA records SMTP senders treat as unusable "
            f"({', '.join(r.params for r in records)}; RFC 7672 allows usages 2 and 3): "
            "DANE senders require TLS but verify nothing",
            "publish: " + " | ".join(publish))], notes
    if match_new:
        notes.append(f"{owner}: the new certificate matches "
                     f"{', '.join(r.params + ' ' + r.data.hex()[:16] + '...' for r in match_new)}")
        return found, [], notes
    ttl = f" (TTL here {answer.ttl} s)" if answer.ttl else ""
    return _with(found, HostState.MISMATCH, publish=publish), [Problem(
        Code.DANE_MISMATCH, severity,
        f"{owner} has {len(usable)} DNSSEC-validated TLSA record(s) "
        f"({', '.join(r.params + ' ' + r.data.hex()[:16] + '...' for r in usable)}) and none "
        f"matches the new certificate (leaf key {tlsa(chain[0], 3, 1, 1).data.hex()[:16]}..., "
        f"issuer {issuer_cn(chain[0])}): DANE senders would defer all mail to {host}",
        "publish these records next to the current ones: " + " | ".join(publish) +
        f"; wait at least twice the TLSA TTL{ttl} for caches, then run the deploy again "
        "(postfix-deploy-hook --lineage /etc/letsencrypt/live/NAME); remove the old key's "
        "records only after that")], notes


def _unenforced(found: HostDane, answer: Answer, usable: tuple[Tlsa, ...], publish: tuple[str, ...],
                notes: list[str]) -> tuple[HostDane, list[Problem], list[str]]:
    """Records DNSSEC does not vouch for (unsigned zone, or a resolver that does not
    validate): senders do not enforce them; the deploy is never held back by them."""
    owner, host, records, match_new = answer.name, found.host, found.records, found.match_new
    if answer.security is Security.INSECURE:
        extra = (f"; its {len(records)} TLSA record(s) are ignored by senders" if records else "")
        notes.append(f"{owner}: the zone is not DNSSEC-signed, so DANE is not in force for "
                     f"{host} and nothing is enforced{extra}")
        return _with(found, HostState.INSECURE), [], notes
    problems = []
    if usable and not match_new:
        problems.append(Problem(
            Code.DANE_UNVERIFIED, Status.WARNING,
            f"{owner} has {len(usable)} TLSA record(s) (not validated) and none matches the "
            f"new certificate: if the zone is signed, DANE senders will defer mail to {host}",
            "publish: " + " | ".join(publish)))
    return _with(found, HostState.UNVALIDATED, publish=publish if not match_new else ()), \
        problems, notes


def _with(host: HostDane, state: HostState, publish: tuple[str, ...] = ()) -> HostDane:
    return HostDane(host.host, state, host.answer, host.records, host.match_new, host.match_old,
                    publish, host.rollover)


def _change_warnings(chain: Sequence[x509.Certificate], old_chain: Sequence[x509.Certificate] | None,
                     hosts: Sequence[HostDane], reuse_key: bool | None,
                     notes: list[str]) -> list[Problem]:
    """Key changed without reuse_key; issuer changed family. Warnings only where DANE is used."""
    if not old_chain:
        return []
    problems: list[Problem] = []
    in_use = [h for h in hosts if any(r.usable for r in h.records)
              and h.state in (HostState.MATCH, HostState.MISMATCH, HostState.UNVALIDATED)]
    key_changed = spki(old_chain[0].public_key()) != spki(chain[0].public_key())
    ee_hosts = [h for h in in_use if any(r.usable and r.usage == Usage.DANE_EE for r in h.records)]
    if key_changed and reuse_key is not True and ee_hosts:
        problems.append(Problem(
            Code.KEY_CHANGED, Status.WARNING,
            f"the renewal made a new private key and reuse_key is "
            f"{'off' if reuse_key is False else 'not known to be on'}: every renewal changes the "
            f"key, and each time the 3 x x TLSA records of {', '.join(h.owner for h in ee_hosts)} "
            "must be updated before the deploy",
            "keep the key across renewals (certbot reconfigure --cert-name NAME --reuse-key) and "
            "roll it on purpose (certbot renew --cert-name NAME --new-key --force-renewal: this "
            "gate then prints the new 3 1 1 to publish first), or add 2 1 1 records for the "
            "issuers (Let's Encrypt picks one of several intermediates per issuance: cover them all)"))
    old_family, new_family = issuer_family(old_chain[0]), issuer_family(chain[0])
    old_cn, new_cn = issuer_cn(old_chain[0]), issuer_cn(chain[0])
    if old_family != new_family:
        text = (f"the issuer changed family: {old_cn} ({old_family}) -> {new_cn} ({new_family})")
        if in_use:
            problems.append(Problem(
                Code.ISSUER_CHANGED, Status.WARNING,
                f"{text}: 2 x x TLSA records for the old issuers will not match certificates "
                "from the new ones",
                "publish 2 1 1 records for the new issuers (and 3 1 1 for the leaf): " +
                " | ".join(line for h in in_use for line in h.rollover)))
        else:
            notes.append(f"{text} (no DANE records in use, nothing to update)")
    elif old_cn != new_cn and in_use:
        notes.append(f"the issuer changed from {old_cn} to {new_cn} (same family {new_family})")
    return problems


# --------------------------------------------------------------------------- I/O shell
def check(config: Config, chain: Sequence[x509.Certificate],
          old_chain: Sequence[x509.Certificate] | None, names: Sequence[str], *,
          reuse_key: bool | None = None, resolver: Resolver | None = None,
          seen: Mapping[str, str] | None = None) -> DaneResult:
    """Look up ``_25._tcp.<name>`` TLSA for each name and run :func:`dane_gate`.

    ``names``: the host names the lineage serves on port 25 (its SAN DNS names do;
    wildcards and IP addresses are skipped). ``seen``: hosts DANE was seen in use for
    (:mod:`hook.dns.danestate`); only for those does a failed lookup refuse. The only network
    traffic is DNS, one query per name, in parallel, each bounded by ``dns.timeout``."""
    mode = config.dns.dane
    if mode is DaneMode.OFF:
        return dane_gate(chain, old_chain, (), mode)
    resolver = resolver or Resolver.from_config(config.dns)
    hosts = tlsa_hosts(names)
    answers = resolver.lookup_many([(tlsa_owner(h), "TLSA") for h in hosts])
    return dane_gate(chain, old_chain, answers, mode, reuse_key=reuse_key, seen=seen)


check_before_deploy = check
"""The deploy hook's entry point: after validation, before anything is installed."""
