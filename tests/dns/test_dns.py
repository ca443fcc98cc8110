"""hook.dns.resolver against a real signed zone (Knot) through a real validating resolver (Unbound)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hook.config import DnsConfig
from hook.dns import resolver as dns_mod
from hook.dns.resolver import Resolver, Security
from hook.errors import ConfigError
from tests.harness.dns import DnsStack, free_udp_tcp_port
from tests.harness.stack import LO


def resolver(port: int, timeout: float = 2.0) -> Resolver:
    return Resolver((LO,), port, timeout)


def test_signed_zone_answer_is_secure(dns_stack: DnsStack) -> None:
    """An answer from the signed zone carries the AD bit: records and TTL, status secure."""
    ans = resolver(dns_stack.resolver_port).lookup("lists.example.test.", "MX")
    assert ans.security is Security.SECURE, ans
    assert ans.rcode == "NOERROR"
    assert ans.records == ("10 mx2.example.test.",)
    assert 0 < ans.ttl <= 60
    assert "DNSSEC-validated" in ans.describe()


def test_validated_denial_is_secure_and_empty(dns_stack: DnsStack) -> None:
    """A name that does not exist in the signed zone: NXDOMAIN, validated, no records."""
    ans = resolver(dns_stack.resolver_port).lookup("_25._tcp.nowhere.example.test", "TLSA")
    assert (ans.security, ans.rcode, ans.records) == (Security.SECURE, "NXDOMAIN", ())
    assert ans.ok
    assert "no such name" in ans.describe()


def test_unsigned_zone_is_insecure(dns_stack: DnsStack) -> None:
    """The unsigned zone answers without AD and without signatures: insecure, not an error."""
    ans = resolver(dns_stack.resolver_port).lookup("mail.insecure.test", "A")
    assert (ans.security, ans.records) == (Security.INSECURE, ("127.0.0.1",))
    assert ans.ok


def test_wrong_trust_anchor_is_bogus_with_the_resolvers_reason(dns_stack: DnsStack) -> None:
    """A zone whose trust anchor does not match its key: SERVFAIL, reported as bogus with
    Unbound's Extended DNS Error text saying what failed."""
    ans = resolver(dns_stack.resolver_port).lookup("_25._tcp.mail.bogus.test", "TLSA")
    assert ans.security is Security.BOGUS
    assert ans.rcode == "SERVFAIL"
    assert not ans.ok
    assert "EDE" in ans.detail and "bogus.test" in ans.detail, ans.detail
    assert ans.describe().startswith("TLSA _25._tcp.mail.bogus.test: DNSSEC validation failed")


def test_tampered_record_is_bogus_while_the_rest_of_the_zone_validates(dns_stack: DnsStack) -> None:
    """A TLSA record changed after signing: its signature fails (EDE 6, DNSSEC Bogus); the
    zone's other records, signed by the same key, still validate."""
    res = resolver(dns_stack.resolver_port)
    ans = res.lookup("_25._tcp.mail.tampered.test", "TLSA")
    assert (ans.security, ans.rcode) == (Security.BOGUS, "SERVFAIL")
    assert ans.detail.startswith("EDE 6 (DNSSEC Bogus)"), ans.detail
    assert res.lookup("tampered.test", "MX").security is Security.SECURE


def test_signed_answer_from_a_non_validating_server_is_unvalidated(dns_stack: DnsStack) -> None:
    """Knot itself (authoritative, no validation) returns signatures but no AD bit: the
    answer is 'unvalidated', so a non-validating resolver is told apart from an unsigned zone."""
    ans = resolver(dns_stack.auth_port).lookup("mail.example.test", "A")
    assert (ans.security, ans.records) == (Security.UNVALIDATED, ("127.0.0.1",))


def test_unreachable_resolver_is_an_error_naming_it() -> None:
    """Nothing listens on the port: the lookup returns an error answer naming the resolver
    address, without raising."""
    port = free_udp_tcp_port()
    ans = resolver(port, timeout=0.5).lookup("mail.example.test", "A")
    assert ans.security is Security.ERROR and not ans.ok
    assert f"127.0.0.1:{port}" in ans.describe()


def test_system_resolver_comes_from_resolv_conf(dns_stack: DnsStack, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """With no dns.resolver configured, the nameservers of resolv.conf are asked (here a
    resolv.conf naming the test Unbound; the port comes from dns.resolver_port)."""
    conf = tmp_path / "resolv.conf"
    conf.write_text(f"nameserver {LO}\n")
    monkeypatch.setattr(dns_mod, "RESOLV_CONF", str(conf))
    res = Resolver.from_config(DnsConfig(resolver_port=dns_stack.resolver_port))
    ans = res.lookup("mail.example.test", "A")
    assert ans.security is Security.SECURE
    assert str(conf) in res.servers()[1]


def test_bad_resolver_address_is_a_config_error() -> None:
    """dns.resolver must be an IP address; a host name is refused with the key named."""
    with pytest.raises(ConfigError, match=r"dns\.resolver"):
        Resolver.from_config(DnsConfig(resolver="localhost"))


def test_runtime_record_change_is_seen_validated(dns_stack: DnsStack) -> None:
    """The harness changes a TLSA RRset at runtime (knotc transaction, re-signed, Unbound
    cache flushed) and the next lookup sees it, still validated."""
    owner = "_25._tcp.runtime.example.test"
    dns_stack.set_rrset(owner, "TLSA", ["3 1 1 " + "ab" * 32])
    ans = resolver(dns_stack.resolver_port).lookup(owner, "TLSA")
    assert (ans.security, ans.records) == (Security.SECURE, ("3 1 1 " + "ab" * 32,))
    dns_stack.set_rrset(owner, "TLSA", [])
    ans = resolver(dns_stack.resolver_port).lookup(owner, "TLSA")
    assert (ans.security, ans.records) == (Security.SECURE, ())
