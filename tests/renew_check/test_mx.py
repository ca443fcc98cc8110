"""MX coverage with a real Postfix configuration, real MX records (Knot + Unbound) and a
real certificate from pebble for mail.example.test.

The signed test zone (tests/harness/dns.py) has::

    example.test.         MX 10 mail.example.test.    (127.0.0.1: here, covered)
    lists.example.test.   MX 10 mx2.example.test.     (127.0.0.1: here, NOT covered)
    backup.example.test.  MX 10 mail.example.test.    (here, covered)
                          MX 20 mx.insecure.test.     (192.0.2.25: elsewhere)
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Iterator

import pytest
from cryptography import x509

from daemon.renew_check import mx
from hook.certs.bundle import parse_chain
from hook.config import Config
from hook.dns.resolver import Resolver
from hook.postfix.instance import Postfix
from hook.verdict import Code, Status
from tests.harness.dns import DnsStack
from tests.harness.stack import DOMAIN, LO, Certbot, PostfixInstance, new_base


@pytest.fixture(scope="module")
def postfix_conf() -> Iterator[Postfix]:
    """A private Postfix configuration (not started: only postconf/postmap read it) that
    accepts mail for domains listed in three ways: literally, via $myhostname, in a hash table
    (behind proxy:)."""
    base = new_base("certwatch-mx-")
    table = base / "vdomains"
    table.write_text("lists.example.test  OK\n")
    instance = PostfixInstance(base, extra_main={
        "mydestination": "$myhostname, localhost, example.test",
        "virtual_mailbox_domains": f"proxy:hash:{table}",
        "relay_domains": "backup.example.test, gone.example.test, .sub.example.test",
    })
    instance.write_config()
    subprocess.run(["postmap", "-c", str(instance.config_dir), f"hash:{table}"], check=True)
    yield Postfix(instance.config_dir)


@pytest.fixture(scope="module")
def leaf(module_certbot: Certbot) -> x509.Certificate:
    path = module_certbot.lineage() / "cert.pem"
    return parse_chain(path.read_bytes(), str(path))[0]


def test_accepted_domains_from_literals_myhostname_and_tables(postfix_conf: Postfix) -> None:
    """Domains come from every accepting parameter, $myhostname expanded, hash table keys
    listed with postmap -s; localhost is not a mail domain; subdomain patterns are noted."""
    acc = mx.accepted_domains(postfix_conf)
    assert dict(acc.domains) == {
        DOMAIN: ("mydestination",), "example.test": ("mydestination",),
        "lists.example.test": ("virtual_mailbox_domains",),
        "backup.example.test": ("relay_domains",), "gone.example.test": ("relay_domains",)}
    assert acc.myhostname == DOMAIN
    assert any(".sub.example.test" in n for n in acc.notes)


def test_coverage_finds_the_domain_whose_mx_name_the_certificate_lacks(
        postfix_conf: Postfix, leaf: x509.Certificate, dns_config: Config, dns_stack: DnsStack) -> None:
    """lists.example.test's MX mx2.example.test points here but the certificate only covers
    mail.example.test: one mx_not_covered problem naming both; the other domains are fine."""
    res = mx.coverage(dns_config, leaf, postfix_conf)
    assert res.uncovered_domains == ("lists.example.test",)
    assert json.loads(json.dumps(res.as_record()))["status"] == "warning"
    (problem,) = res.problems
    assert problem.code is Code.MX_NOT_COVERED and problem.status is Status.WARNING
    assert "lists.example.test (virtual_mailbox_domains): MX 10 mx2.example.test points at this " \
           "host (127.0.0.1)" in problem.detail
    assert "it covers mail.example.test" in problem.detail
    assert "-d mx2.example.test" in problem.fix

    by_domain = {d.domain: d for d in res.domains}
    assert [(h.name, h.here, h.covered) for h in by_domain["example.test"].hosts] == [
        (DOMAIN, True, True)]
    assert [(h.preference, h.name, h.here, h.covered) for h in by_domain["backup.example.test"].hosts] == [
        (10, DOMAIN, True, True), (20, "mx.insecure.test", False, False)]
    implicit = by_domain[DOMAIN].hosts[0]
    assert (implicit.name, implicit.implicit, implicit.here, implicit.covered) == (DOMAIN, True, True, True)
    gone = "gone.example.test (relay_domains): the domain does not exist"
    assert any(n.startswith(gone) for n in res.notes)


def test_an_address_behind_nat_counts_as_here(
        postfix_conf: Postfix, leaf: x509.Certificate, dns_config: Config, dns_stack: DnsStack) -> None:
    """dns.host_addresses declares 192.0.2.25 as ours (NAT): backup.example.test's second MX
    mx.insecure.test now points here, and the certificate does not cover it."""
    config = dataclasses.replace(dns_config, dns=dataclasses.replace(dns_config.dns,
                                                                      host_addresses=("192.0.2.25",)))
    res = mx.coverage(config, leaf, postfix_conf)
    assert set(res.uncovered_domains) == {"lists.example.test", "backup.example.test"}


def test_a_renamed_mx_is_seen_at_once(leaf: x509.Certificate, dns_stack: DnsStack) -> None:
    """Point lists.example.test's MX at mail.example.test (the covered name): coverage is
    complete; the MX change is read from DNS, not remembered."""
    resolver = Resolver((LO,), dns_stack.resolver_port, 2.0)
    here = mx.here_predicate(DOMAIN, ())
    try:
        dns_stack.set_rrset("lists.example.test", "MX", [f"10 {DOMAIN}."])
        res = mx.domain_coverage(leaf, {"lists.example.test": ("test",)}, resolver, here)
        assert res.problems == () and res.domains[0].hosts[0].covered
    finally:
        dns_stack.set_rrset("lists.example.test", "MX", ["10 mx2.example.test."])


def test_failed_mx_lookup_is_reported(leaf: x509.Certificate, dns_stack: DnsStack) -> None:
    """A domain whose MX lookup fails validation: a dns_lookup_failed warning naming it."""
    resolver = Resolver((LO,), dns_stack.resolver_port, 2.0)
    res = mx.domain_coverage(leaf, {"bogus.test": ("relay_domains",)}, resolver,
                             mx.here_predicate(DOMAIN, ()))
    (problem,) = res.problems
    assert problem.code is Code.DNS_LOOKUP_FAILED
    assert problem.detail.startswith("bogus.test (relay_domains): MX bogus.test: DNSSEC validation failed")


def test_local_address_detection() -> None:
    """Loopback is local; a TEST-NET address is not (found by binding, sending nothing)."""
    assert mx.is_local_address("127.0.0.1")
    assert not mx.is_local_address("192.0.2.25")
    assert not mx.is_local_address("not-an-ip")


def test_wildcard_certificate_covers_one_label() -> None:
    """RFC 6125: *.example.test covers mx2.example.test, not example.test or a.b.example.test."""
    import trustme  # noqa: PLC0415

    cert = trustme.CA().issue_cert("*.example.test")
    leaf = x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes())
    assert mx.covers(leaf, "mx2.example.test")
    assert not mx.covers(leaf, "example.test")
    assert not mx.covers(leaf, "a.b.example.test")
