"""The DANE gate with real certificates (pebble + certbot) and real DNSSEC (Knot + Unbound).

Each test publishes the TLSA records it needs in the signed test zone, renews the way
certbot does on a server (a new key by default, or ``--reuse-key``), and asks the gate
(:func:`hook.dns.dane.check_before_deploy`) what the deploy hook asks it: may the new chain
replace the old one?
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cryptography import x509

from hook.certs.bundle import parse_chain
from hook.config import Config, DaneMode, DnsConfig
from hook.dns import dane
from hook.dns.dane import HostState
from hook.verdict import Code, Status
from tests.harness.dns import DnsStack, free_udp_tcp_port
from tests.harness.stack import DOMAIN, LO, Certbot

OWNER = f"_25._tcp.{DOMAIN}"


def chain_at(lineage: Path) -> tuple[x509.Certificate, ...]:
    path = lineage / "fullchain.pem"
    return parse_chain(path.read_bytes(), str(path))


def reuse_key_of(certbot: Certbot, name: str = DOMAIN) -> bool | None:
    return dane.reuse_key(certbot.config_dir / "renewal" / f"{name}.conf")


def with_mode(config: Config, mode: DaneMode) -> Config:
    return dataclasses.replace(config, dns=dataclasses.replace(config.dns, dane=mode))


def test_matching_3_1_1_passes_after_a_renewal_that_keeps_the_key(
        certbot: Certbot, dns_stack: DnsStack, dns_config: Config) -> None:
    """A validated 3 1 1 record for the current key; certbot renews with --reuse-key: the
    new chain matches, the gate lets the deploy proceed without warnings."""
    old = chain_at(certbot.lineage())
    dns_stack.set_rrset(OWNER, "TLSA", [str(dane.tlsa(old[0], 3, 1, 1))])
    certbot.renew(extra=["--reuse-key"])
    new = chain_at(certbot.lineage())
    assert new[0] != old[0]

    res = dane.check_before_deploy(dns_config, new, old, [DOMAIN], reuse_key=reuse_key_of(certbot))
    assert not res.refused, res.problems
    assert res.status is Status.OK and res.problems == ()
    assert res.hosts[0].state is HostState.MATCH
    assert [str(r) for r in res.hosts[0].match_new] == [str(dane.tlsa(new[0], 3, 1, 1))]
    assert res.summary == f"DANE ok: {DOMAIN} match"


def test_key_rollover_without_a_matching_record_is_refused_with_the_records_to_publish(
        certbot: Certbot, dns_stack: DnsStack, dns_config: Config) -> None:
    """certbot's default renewal makes a new key; only the old key's 3 1 1 is published:
    refused, with the exact TLSA lines to publish and a reuse_key warning. Once those lines
    are published (next to the old record) the same deploy passes."""
    old = chain_at(certbot.lineage())
    old_record = str(dane.tlsa(old[0], 3, 1, 1))
    dns_stack.set_rrset(OWNER, "TLSA", [old_record])
    certbot.renew()
    new = chain_at(certbot.lineage())
    assert dane.tlsa(new[0], 3, 1, 1) != dane.tlsa(old[0], 3, 1, 1), "certbot kept the key"

    res = dane.check_before_deploy(dns_config, new, old, [DOMAIN], reuse_key=reuse_key_of(certbot))
    assert res.refused and res.status is Status.CRITICAL
    host = res.hosts[0]
    assert host.state is HostState.MISMATCH
    assert [str(r) for r in host.match_old] == [old_record] and host.match_new == ()
    new_3_1_1 = f"{OWNER}. IN TLSA 3 1 1 {dane.tlsa(new[0], 3, 1, 1).data.hex()}"
    new_2_1_1 = f"{OWNER}. IN TLSA 2 1 1 {dane.tlsa(new[1], 2, 1, 1).data.hex()}"
    assert res.publish == (new_3_1_1, new_2_1_1)
    mismatch = next(p for p in res.problems if p.code is Code.DANE_MISMATCH)
    assert OWNER in mismatch.detail and "none matches the new certificate" in mismatch.detail
    assert new_3_1_1 in mismatch.fix
    assert Code.KEY_CHANGED in {p.code for p in res.problems}
    assert res.summary.startswith("DANE refused: ")

    # warn mode: same finding, but the deploy may go on
    warned = dane.check_before_deploy(with_mode(dns_config, DaneMode.WARN), new, old, [DOMAIN])
    assert not warned.refused and warned.status is Status.WARNING

    # the admin publishes the printed 3 1 1 line next to the old record: now it passes
    dns_stack.set_rrset(OWNER, "TLSA", [old_record, new_3_1_1.split(" TLSA ", 1)[1]])
    res = dane.check_before_deploy(dns_config, new, old, [DOMAIN], reuse_key=reuse_key_of(certbot))
    assert not res.refused and res.hosts[0].state is HostState.MATCH
    assert [p.code for p in res.problems] == [Code.KEY_CHANGED]  # still: next renewal, new key


def test_2_1_1_for_the_issuer_passes_across_a_key_rollover(
        certbot: Certbot, dns_stack: DnsStack, dns_config: Config) -> None:
    """Only a 2 1 1 record for the issuing intermediate is published: a renewal with a new
    key still matches (DANE-TA), and no key-change warning is due."""
    old = chain_at(certbot.lineage())
    dns_stack.set_rrset(OWNER, "TLSA", [str(dane.tlsa(old[1], 2, 1, 1))])
    certbot.renew()
    new = chain_at(certbot.lineage())
    assert dane.tlsa(new[0], 3, 1, 1) != dane.tlsa(old[0], 3, 1, 1)

    res = dane.check_before_deploy(dns_config, new, old, [DOMAIN], reuse_key=reuse_key_of(certbot))
    assert not res.refused and res.problems == ()
    assert [r.params for r in res.hosts[0].match_new] == ["2 1 1"]


def test_unsigned_zone_is_not_enforced_and_says_so(
        module_certbot: Certbot, dns_stack: DnsStack, dns_config: Config) -> None:
    """A host in an unsigned zone with a TLSA record that matches nothing: senders ignore
    it, so the gate enforces nothing and its note says why."""
    name = "mail.insecure.test"
    lineage = module_certbot.issue(name)
    dns_stack.set_rrset(f"_25._tcp.{name}", "TLSA", ["3 1 1 " + "00" * 32])
    chain = chain_at(lineage)

    res = dane.check_before_deploy(dns_config, chain, None, [name])
    assert not res.refused and res.problems == ()
    assert res.hosts[0].state is HostState.INSECURE
    assert res.notes == (f"_25._tcp.{name}: the zone is not DNSSEC-signed, so DANE is not in force "
                         f"for {name} and nothing is enforced; its 1 TLSA record(s) are ignored by "
                         "senders",)


def test_bogus_tlsa_answer_is_refused_with_a_clear_message(
        module_certbot: Certbot, dns_stack: DnsStack, dns_config: Config) -> None:
    """The zone's trust anchor is wrong, so the TLSA lookup fails validation: refused, the
    message names the lookup, the resolver and the validator's reason."""
    chain = chain_at(module_certbot.lineage())
    res = dane.check_before_deploy(dns_config, chain, chain, ["mail.bogus.test"])
    assert res.refused
    assert res.hosts[0].state is HostState.BOGUS
    (problem,) = res.problems
    assert problem.code is Code.DANE_BOGUS and problem.status is Status.CRITICAL
    assert problem.detail.startswith("TLSA _25._tcp.mail.bogus.test: DNSSEC validation failed")
    assert f"resolver {LO}:{dns_stack.resolver_port}" in problem.detail
    assert "EDE" in problem.detail
    assert "trust anchor" in problem.fix


def test_tampered_tlsa_record_is_refused(module_certbot: Certbot, dns_config: Config) -> None:
    """A TLSA record altered behind its signature: bogus, refused, the reason is the
    resolver's 'DNSSEC Bogus' for exactly that record."""
    chain = chain_at(module_certbot.lineage())
    res = dane.check_before_deploy(dns_config, chain, chain, ["mail.tampered.test"])
    assert res.refused and res.hosts[0].state is HostState.BOGUS
    assert "EDE 6 (DNSSEC Bogus)" in res.problems[0].detail


def test_no_tlsa_records_passes(module_certbot: Certbot, dns_stack: DnsStack, dns_config: Config) -> None:
    """A validated 'no such record': DANE is not in use for the host, the deploy proceeds."""
    chain = chain_at(module_certbot.lineage())
    res = dane.check_before_deploy(dns_config, chain, chain, ["mx2.example.test"])
    assert not res.refused and res.problems == ()
    assert res.hosts[0].state is HostState.NO_TLSA


def test_non_validating_resolver_only_warns(module_certbot: Certbot, dns_stack: DnsStack) -> None:
    """Asking a server that does not validate (Knot directly): signed answers without AD.
    The records are not trusted: a warning that the resolver does not validate, no refusal."""
    chain = chain_at(module_certbot.lineage())
    dns_stack.set_rrset(OWNER, "TLSA", ["3 1 1 " + "11" * 32])
    config = Config(dns=DnsConfig(resolver=LO, resolver_port=dns_stack.auth_port, timeout=2.0))
    res = dane.check_before_deploy(config, chain, chain, [DOMAIN])
    assert not res.refused
    assert res.hosts[0].state is HostState.UNVALIDATED
    assert {p.code for p in res.problems} == {Code.DANE_UNVERIFIED}
    assert any("does not validate DNSSEC" in p.detail for p in res.problems)


def test_unreachable_resolver_only_warns_for_a_host_not_seen_using_dane(module_certbot: Certbot) -> None:
    """No resolver answers and DANE was never seen in use for the host: the gate cannot
    check, says so and names the resolver, but does not hold the certificate back."""
    chain = chain_at(module_certbot.lineage())
    port = free_udp_tcp_port()
    config = Config(dns=DnsConfig(resolver=LO, resolver_port=port, timeout=0.5))
    res = dane.check_before_deploy(config, chain, chain, [DOMAIN])
    assert not res.refused and res.hosts[0].state is HostState.LOOKUP_FAILED
    (problem,) = res.problems
    assert problem.code is Code.DNS_LOOKUP_FAILED and problem.status is Status.WARNING
    assert problem.detail.startswith(f"the DANE gate could not check {DOMAIN}: ")
    assert f"{LO}:{port}" in problem.detail


def test_unreachable_resolver_refuses_where_dane_was_seen(module_certbot: Certbot) -> None:
    """The same failure for a host DANE was seen in use for: refused, naming the resolver
    and what was seen."""
    chain = chain_at(module_certbot.lineage())
    port = free_udp_tcp_port()
    config = Config(dns=DnsConfig(resolver=LO, resolver_port=port, timeout=0.5))
    seen = {DOMAIN: "DNSSEC-validated TLSA 3 1 1 ab... seen 2026-11-20T00:00:00Z"}
    res = dane.check_before_deploy(config, chain, chain, [DOMAIN], seen=seen)
    assert res.refused and res.hosts[0].state is HostState.LOOKUP_FAILED
    assert res.problems[0].code is Code.DNS_LOOKUP_FAILED
    assert f"{LO}:{port}" in res.problems[0].detail
    assert f"DANE was in use for {DOMAIN} ({seen[DOMAIN]})" in res.problems[0].detail
    warned = dane.check_before_deploy(with_mode(config, DaneMode.WARN), chain, chain, [DOMAIN],
                                      seen=seen)
    assert not warned.refused and warned.status is Status.WARNING


def test_off_mode_does_no_lookup(module_certbot: Certbot) -> None:
    """dns.dane = off: no DNS traffic at all (the resolver here does not even exist)."""
    chain = chain_at(module_certbot.lineage())
    config = Config(dns=DnsConfig(resolver=LO, resolver_port=free_udp_tcp_port(), dane=DaneMode.OFF))
    res = dane.check_before_deploy(config, chain, chain, [DOMAIN])
    assert not res.refused and res.hosts == () and res.summary == "DANE gate off"
