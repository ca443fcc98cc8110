"""MTA-STS: the _mta-sts TXT from the signed test zone (Knot + Unbound), the policy from a
small HTTPS server on loopback (trustme certificate for mta-sts.<domain>), checked against
the MX names and a real pebble certificate for mail.example.test."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from cryptography import x509

from daemon.renew_check import mtasts, mx
from daemon.renew_check.mtasts import MtaStsError, StsMode
from hook.certs.bundle import parse_chain
from hook.config import Config
from hook.dns.resolver import Resolver
from hook.verdict import Code, Status
from tests.harness.dns import DnsStack
from tests.harness.policy import PolicyServer
from tests.harness.stack import DOMAIN, LO, Certbot

POLICY_OK = ("version: STSv1\r\nmode: enforce\r\nmx: mail.example.test\r\nmx: *.example.net\r\n"
             "max_age: 1209600\r\n")


@pytest.fixture
def sts_config(dns_config: Config, policy_server: PolicyServer, tmp_path: Path) -> Config:
    cafile = policy_server.write_ca(tmp_path / "sts-ca.pem")
    return dataclasses.replace(dns_config, dns=dataclasses.replace(
        dns_config.dns, mta_sts_cafile=cafile, mta_sts_connect=policy_server.connect))


@pytest.fixture(scope="module")
def leaf(module_certbot: Certbot) -> x509.Certificate:
    path = module_certbot.lineage() / "cert.pem"
    return parse_chain(path.read_bytes(), str(path))[0]


def test_policy_that_covers_the_mx_and_the_certificate(
        sts_config: Config, policy_server: PolicyServer, leaf: x509.Certificate) -> None:
    """The published policy lists the MX name the certificate covers: no problems; mode,
    max_age and the policy id are reported."""
    policy_server.serve("example.test", POLICY_OK)
    res = mtasts.check(sts_config, "example.test", [DOMAIN], leaf)
    assert res.problems == (), res.problems
    assert (res.mode, res.max_age, res.policy_id) == (StsMode.ENFORCE, 1209600, "20261126T0957")
    assert res.url == "https://mta-sts.example.test/.well-known/mta-sts.txt"
    assert res.notes[0] == ("example.test: MTA-STS mode enforce, max_age 1209600 s (14 days), mx "
                            "mail.example.test, *.example.net")


def test_policy_mismatch_in_enforce_mode_is_critical(
        sts_config: Config, policy_server: PolicyServer, leaf: x509.Certificate) -> None:
    """The policy names another MX host: the real MX and the certificate match no pattern;
    in enforce mode senders will not deliver, so it is critical and says what to add."""
    policy_server.serve("example.test", POLICY_OK.replace("mail.example.test", "mx.example.org"))
    res = mtasts.check(sts_config, "example.test", [DOMAIN], leaf)
    assert res.status is Status.CRITICAL
    assert json.loads(json.dumps(res.as_record()))["mode"] == "enforce"
    assert {p.code for p in res.problems} == {Code.MTA_STS_MISMATCH}
    first = res.problems[0]
    assert first.detail == ("example.test: MX mail.example.test matches none of the MTA-STS policy's "
                            "mx patterns (mx.example.org, *.example.net): senders enforcing MTA-STS "
                            "will not deliver to it")
    assert "mx: mail.example.test" in first.fix
    assert any("none of the certificate's names (mail.example.test)" in p.detail for p in res.problems)


def test_mismatch_in_testing_mode_is_a_warning(
        sts_config: Config, policy_server: PolicyServer, leaf: x509.Certificate) -> None:
    """The same mismatch with mode testing: senders only report, so a warning."""
    policy_server.serve("example.test", POLICY_OK.replace("mail.example.test", "mx.example.org")
                        .replace("enforce", "testing"))
    res = mtasts.check(sts_config, "example.test", [DOMAIN], leaf)
    assert res.mode is StsMode.TESTING and res.status is Status.WARNING


def test_certificate_not_covering_the_mx_the_policy_allows(
        sts_config: Config, policy_server: PolicyServer, dns_stack: DnsStack,
        leaf: x509.Certificate) -> None:
    """lists.example.test: the policy allows *.example.test, the MX mx2.example.test points
    here, but the certificate covers only mail.example.test: enforce-mode senders refuse."""
    dns_stack.set_rrset("_mta-sts.lists.example.test", "TXT", ['"v=STSv1; id=2026a;"'])
    policy_server.serve("lists.example.test", "version: STSv1\nmode: enforce\nmx: *.example.test\n"
                                              "max_age: 86400\n")
    res = mtasts.check(sts_config, "lists.example.test", ["mx2.example.test"], leaf)
    (problem,) = res.problems
    assert problem.code is Code.MTA_STS_MISMATCH and problem.status is Status.CRITICAL
    assert "the certificate does not cover MX mx2.example.test" in problem.detail
    assert any("max_age below a week" in n for n in res.notes)


def test_no_txt_record_means_no_policy(sts_config: Config, leaf: x509.Certificate,
                                       dns_stack: DnsStack) -> None:
    """No _mta-sts TXT (validated NXDOMAIN): no policy, no fetch, a note."""
    res = mtasts.check(sts_config, "backup.example.test", [DOMAIN], leaf)
    assert res.policy is None and res.problems == ()
    assert res.notes == ("backup.example.test: no MTA-STS policy (no v=STSv1 TXT at "
                         "_mta-sts.backup.example.test)",)


@pytest.mark.parametrize(("status", "ctype", "headers", "message"), [
    (404, "text/plain", {}, "HTTP 404"),
    (301, "text/plain", {"Location": "https://elsewhere.example/"}, "RFC 8461 forbids redirects"),
    (200, "text/html", {}, "Content-Type text/html, must be text/plain"),
])
def test_policy_fetch_failures_name_the_url_and_the_reason(
        sts_config: Config, policy_server: PolicyServer, leaf: x509.Certificate,
        status: int, ctype: str, headers: dict[str, str], message: str) -> None:
    """A policy server that answers wrongly: a mta_sts_policy warning with URL and reason."""
    policy_server.serve("example.test", POLICY_OK, status, ctype, headers)
    res = mtasts.check(sts_config, "example.test", [DOMAIN], leaf)
    (problem,) = res.problems
    assert problem.code is Code.MTA_STS_POLICY and problem.status is Status.WARNING
    assert "https://mta-sts.example.test/.well-known/mta-sts.txt" in problem.detail
    assert message in problem.detail


def test_untrusted_policy_certificate_is_reported(
        sts_config: Config, policy_server: PolicyServer, leaf: x509.Certificate) -> None:
    """Without the test CA as dns.mta_sts_cafile the policy server's certificate is not
    trusted: the fetch fails and says so (as it would for every sender)."""
    policy_server.serve("example.test", POLICY_OK)
    config = dataclasses.replace(sts_config, dns=dataclasses.replace(sts_config.dns, mta_sts_cafile=None))
    res = mtasts.check(config, "example.test", [DOMAIN], leaf)
    (problem,) = res.problems
    assert "certificate is not valid for mta-sts.example.test" in problem.detail


def test_parse_policy_rules() -> None:
    """RFC 8461 §3.2: version, mode, max_age required; mx required unless mode none."""
    assert mtasts.parse_policy(POLICY_OK).mx == ("mail.example.test", "*.example.net")
    assert mtasts.parse_policy("version: STSv1\nmode: none\nmax_age: 0\n").mode is StsMode.NONE
    for bad, why in [("mode: enforce\nmx: a\nmax_age: 1\n", "version"),
                     ("version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n", "mode"),
                     ("version: STSv1\nmode: enforce\nmx: a\nmax_age: 99999999999\n", "max_age"),
                     ("version: STSv1\nmode: enforce\nmax_age: 1\n", "mx"),
                     ("version STSv1\n", "key: value")]:
        with pytest.raises(MtaStsError, match=why):
            mtasts.parse_policy(bad)


def test_mx_pattern_matching() -> None:
    """A wildcard pattern matches exactly one leftmost label (RFC 8461 §4.1)."""
    assert mtasts.mx_matches("*.example.net", "mx1.example.net")
    assert not mtasts.mx_matches("*.example.net", "example.net")
    assert not mtasts.mx_matches("*.example.net", "a.b.example.net")
    assert mtasts.mx_matches("Mail.Example.Test.", "mail.example.test")
    assert mtasts.parse_txt('"v=STSv1; " "id=abc123;"') == {"v": "STSv1", "id": "abc123"}


def test_check_all_follows_mx_coverage(
        sts_config: Config, policy_server: PolicyServer, dns_stack: DnsStack,
        leaf: x509.Certificate) -> None:
    """From an MX coverage result: only domains with an MX pointing here are checked, each
    against all its MX names; dns.mta_sts = false checks nothing."""
    policy_server.serve("example.test", POLICY_OK)
    resolver = Resolver((LO,), dns_stack.resolver_port, 2.0)
    cov = mx.domain_coverage(leaf, {"example.test": ("mydestination",),
                                    "insecure.test": ("relay_domains",)},
                             resolver, mx.here_predicate("", ()))
    assert [d.domain for d in cov.domains if d.here] == ["example.test", "insecure.test"]
    results = mtasts.check_all(sts_config, cov, leaf)
    assert [(r.domain, r.mode, r.status) for r in results] == [
        ("example.test", StsMode.ENFORCE, Status.OK), ("insecure.test", None, Status.OK)]
    off = dataclasses.replace(sts_config, dns=dataclasses.replace(sts_config.dns, mta_sts=False))
    assert mtasts.check_all(off, cov, leaf) == ()
