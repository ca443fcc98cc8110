"""DNS lookups that say how far their answer can be trusted (DNSSEC).

One query per lookup, sent with the DO bit and the AD bit set (RFC 6840 §5.7) to a
configured resolver, or else to the nameservers of ``/etc/resolv.conf``. We do not
validate signatures ourselves: like Postfix (``smtp_dns_support_level = dnssec``) we
trust the AD bit of a *validating* resolver, which should therefore be local
(127.0.0.1 / ::1, e.g. unbound); an AD bit that crossed a network proves little.

What an :class:`Answer` can say (:class:`Security`):

* ``secure``       AD set: the records (or their absence) are DNSSEC-validated.
* ``insecure``     no AD and no signatures: the zone is not signed (or the resolver
                   strips signatures); DANE senders ignore TLSA records here.
* ``unvalidated``  signatures came back but no AD: the resolver does not validate.
* ``bogus``        SERVFAIL: validation failed (a bad signature, a wrong or missing key),
                   or the zone's servers failed; the Extended DNS Error (RFC 8914) text,
                   when the resolver sends one, says which.
* ``error``        no usable answer at all (timeout, refused, network).

A failed lookup is an :class:`Answer` too (``security`` error or bogus), never an
exception: callers turn it into a :class:`~hook.verdict.Problem`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver

from hook.config import DnsConfig
from hook.errors import ConfigError

RESOLV_CONF = "/etc/resolv.conf"
EDNS_PAYLOAD = 1232  # the DNS flag day 2020 size: no IP fragmentation
# Extended DNS Error codes (RFC 8914) that mean "DNSSEC validation failed".
EDE_DNSSEC = frozenset({1, 2, 5, 6, 7, 8, 9, 10, 11, 12})


class Security(StrEnum):
    SECURE = "secure"
    INSECURE = "insecure"
    UNVALIDATED = "unvalidated"
    BOGUS = "bogus"
    ERROR = "error"


SECURITY_TEXT = {
    Security.SECURE: "DNSSEC-validated",
    Security.INSECURE: "not DNSSEC-signed",
    Security.UNVALIDATED: "signed, but the resolver did not validate it (no AD bit)",
    Security.BOGUS: "DNSSEC validation failed (SERVFAIL)",
    Security.ERROR: "lookup failed",
}


@dataclass(frozen=True)
class Answer:
    """The outcome of one lookup: the records found (RDATA text) and how far to trust them."""

    name: str
    """The name looked up, without the final dot."""
    rdtype: str
    security: Security
    rcode: str
    """``NOERROR``, ``NXDOMAIN``, ``SERVFAIL``, ...; empty when no response arrived."""
    records: tuple[str, ...] = ()
    """RDATA of the asked-for type in presentation format (after any CNAME), sorted."""
    ttl: int = 0
    """TTL of that RRset as the resolver sent it (0 when there is none)."""
    resolver: str = ""
    detail: str = ""
    """Why it failed: the resolver's Extended DNS Error text, a timeout, ..."""

    @property
    def ok(self) -> bool:
        """A response we can use: records or a clean 'there are none' (NODATA/NXDOMAIN)."""
        return self.security not in (Security.BOGUS, Security.ERROR)

    def describe(self) -> str:
        """One line for messages: what was asked, what came back, from where."""
        what = f"{self.rdtype} {self.name}"
        if not self.ok:
            why = f": {self.detail}" if self.detail else ""
            return f"{what}: {SECURITY_TEXT[self.security]}{why} (resolver {self.resolver})"
        found = (f"{len(self.records)} record{'s' if len(self.records) != 1 else ''}"
                 if self.records else ("no such name" if self.rcode == "NXDOMAIN" else "no records"))
        return f"{what}: {found}, {SECURITY_TEXT[self.security]} (resolver {self.resolver})"


@dataclass(frozen=True)
class Resolver:
    """Where lookups go: explicit ``nameservers`` or, when empty, ``/etc/resolv.conf``'s."""

    nameservers: tuple[str, ...] = ()
    port: int = 53
    timeout: float = 5.0

    @classmethod
    def from_config(cls, config: DnsConfig) -> Resolver:
        if config.resolver:
            try:
                ipaddress.ip_address(config.resolver)
            except ValueError as exc:
                raise ConfigError(f"dns.resolver: {config.resolver!r} is not an IP address") from exc
            return cls((config.resolver,), config.resolver_port, config.timeout)
        return cls((), config.resolver_port, config.timeout)

    def servers(self) -> tuple[list[str], str]:
        """The addresses to ask, in order, and a label for messages."""
        if self.nameservers:
            servers = list(self.nameservers)
            return servers, ", ".join(_label(s, self.port) for s in servers)
        try:
            system = dns.resolver.Resolver(filename=RESOLV_CONF, configure=True)
            servers = [str(s) for s in system.nameservers]
        except (OSError, dns.exception.DNSException):
            servers = []
        label = f"{', '.join(_label(s, self.port) for s in servers) or 'none'} from {RESOLV_CONF}"
        return servers, label

    def lookup(self, name: str, rdtype: str) -> Answer:
        """Look ``name``/``rdtype`` up; never raises for DNS or network trouble."""
        name = name.rstrip(".").lower()
        servers, label = self.servers()
        if not servers:
            return Answer(name, rdtype, Security.ERROR, "", resolver=label,
                          detail=f"no nameserver configured (dns.resolver is empty and "
                                 f"{RESOLV_CONF} lists none)")
        try:
            query = dns.message.make_query(name, rdtype, want_dnssec=True, payload=EDNS_PAYLOAD)
        except dns.exception.DNSException as exc:
            return Answer(name, rdtype, Security.ERROR, "", resolver=label,
                          detail=f"cannot build a query for {name!r}: {exc}")
        query.flags |= dns.flags.AD
        errors = []
        for server in servers:
            try:
                response, _ = dns.query.udp_with_fallback(query, server, timeout=self.timeout,
                                                          port=self.port)
            except dns.exception.Timeout:
                errors.append(f"{_label(server, self.port)}: no response within {self.timeout:g} s")
                continue
            except (OSError, dns.exception.DNSException) as exc:
                errors.append(f"{_label(server, self.port)}: {exc}")
                continue
            return _answer(name, rdtype, response, _label(server, self.port))
        return Answer(name, rdtype, Security.ERROR, "", resolver=label, detail="; ".join(errors))

    def lookup_many(self, queries: Sequence[tuple[str, str]]) -> tuple[Answer, ...]:
        """Several lookups at once (threads), answers in the order asked."""
        if len(queries) <= 1:
            return tuple(self.lookup(n, t) for n, t in queries)
        with ThreadPoolExecutor(max_workers=min(8, len(queries))) as pool:
            return tuple(pool.map(lambda q: self.lookup(*q), queries))


def _label(server: str, port: int) -> str:
    host = f"[{server}]" if ":" in server else server
    return f"{host}:{port}"


def _answer(name: str, rdtype: str, response: dns.message.Message, server: str) -> Answer:
    rcode = dns.rcode.to_text(response.rcode())
    ede = "; ".join(_ede_text(o) for o in response.options if isinstance(o, dns.edns.EDEOption))
    if response.rcode() == dns.rcode.SERVFAIL:
        codes = {int(o.code) for o in response.options if isinstance(o, dns.edns.EDEOption)}
        security = Security.ERROR if codes and not codes & EDE_DNSSEC else Security.BOGUS
        detail = ede or ("the resolver answered SERVFAIL without saying why: a DNSSEC "
                         "validation failure or unreachable authoritative servers")
        return Answer(name, rdtype, security, rcode, resolver=server, detail=detail)
    if response.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        return Answer(name, rdtype, Security.ERROR, rcode, resolver=server,
                      detail=f"the resolver answered {rcode}" + (f" ({ede})" if ede else ""))
    wanted = dns.rdatatype.from_text(rdtype)
    rrsets = [r for r in response.answer if r.rdtype == wanted]
    records = tuple(sorted(rd.to_text() for r in rrsets for rd in r))
    ttl = min((r.ttl for r in rrsets), default=0)
    signed = any(r.rdtype == dns.rdatatype.RRSIG for r in (*response.answer, *response.authority))
    if response.flags & dns.flags.AD:
        security = Security.SECURE
    elif signed:
        security = Security.UNVALIDATED
    else:
        security = Security.INSECURE
    return Answer(name, rdtype, security, rcode, records, ttl, server, ede)


def _ede_text(option: dns.edns.EDEOption) -> str:
    """``EDE 6 (DNSSEC Bogus): <the resolver's reason>``."""
    return str(option.to_text())
