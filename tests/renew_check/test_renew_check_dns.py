"""``renew-check`` with the DNS checks on the real stack: Postfix + pebble certificate,
Knot + Unbound on loopback (tests/harness/dns.py), the MTA-STS policy server
(tests/harness/policy.py); and the survey's on-disk verdict being the deploy hook's.

The signed zone has ``example.test MX mail.example.test`` (covered by the certificate)
and ``lists.example.test MX mx2.example.test`` (127.0.0.1, here, not covered).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from daemon.renew_check import adopt
from daemon.renew_check import cli as check
from hook import config as config_mod
from hook.certs import lineage
from hook.certs.bundle import parse_chain
from hook.dns import dane
from tests.harness.dns import DnsStack
from tests.harness.policy import PolicyServer
from tests.harness.stack import DOMAIN, LO, Stack
from tests.renew_check.test_renew_check import HARDENED, assert_schema, run_json

OWNER = f"_25._tcp.{DOMAIN}"
POLICY = "version: STSv1\nmode: enforce\nmx: {mx}\nmax_age: 1209600\n"


@pytest.fixture
def dns_stack_config(stack: Stack, dns_stack: DnsStack, policy_server: PolicyServer,
                     tmp_path: Path) -> Stack:
    """A hardened (and adopted) Postfix that accepts mail for example.test and lists.example.test, and a
    config whose [dns] points at the test resolver and policy server."""
    stack.postfix.set_main(**HARDENED,
                           mydestination="$myhostname, localhost, example.test, lists.example.test")
    cfg = config_mod.load(stack.config_file, {})  # adopt, or the audit warns: lineage_in_place
    adopt.adopt(cfg, lineage.resolve(stack.lineage, cfg.certbot.config_dir))
    time.sleep(0.3)
    dns_stack.set_rrset("lists.example.test", "MX", ["10 mx2.example.test."])
    dns_stack.set_rrset("_mta-sts.lists.example.test", "TXT", [])
    dns_stack.set_rrset("_mta-sts.example.test", "TXT", ['"v=STSv1; id=20261126T0957;"'])
    stack.write_config(dns={"resolver": LO, "resolver_port": dns_stack.resolver_port, "timeout": 2,
                            "dane": "refuse", "mta_sts": True,
                            "mta_sts_cafile": str(policy_server.write_ca(tmp_path / "sts-ca.pem")),
                            "mta_sts_connect": policy_server.connect})
    return stack


def codes(problems: list[dict[str, Any]]) -> dict[str, str]:
    return {p["code"]: p["status"] for p in problems}


def test_dane_mismatch_mx_not_covered_and_mta_sts_mismatch(
        dns_stack_config: Stack, dns_stack: DnsStack, policy_server: PolicyServer,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A TLSA record matching nothing, an MX the certificate does not cover and an enforce
    policy naming another MX: all three in the certificate's ``dns`` block, CRITICAL (exit
    2). Publishing the right 3 1 1 and policy leaves the uncovered MX: WARNING (exit 1),
    with the 2 1 1 to add before a key rollover. ``--no-dns`` checks none of it (exit 0)."""
    stack = dns_stack_config
    cfg = str(stack.config_file)
    dns_stack.set_rrset(OWNER, "TLSA", ["3 1 1 " + "00" * 32])
    policy_server.serve("example.test", POLICY.format(mx="mx.example.org"))

    rc, doc = run_json(capsys, "--config", cfg, "--no-deep")
    assert_schema(doc)
    [cert] = doc["certificates"]
    dns = cert["dns"]
    assert (rc, doc["exit_code"], dns["status"]) == (2, 2, "critical")
    [host] = dns["dane"]["hosts"]
    assert (host["host"], host["state"], host["security"]) == (DOMAIN, "mismatch", "secure")
    assert host["match_served"] == [] and host["match_on_disk"] == []
    found = codes(dns["problems"])
    assert found["dane_mismatch"] == "critical"
    assert found["mx_not_covered"] == "warning"
    assert found["mta_sts_mismatch"] == "critical"
    assert dns["uncovered_domains"] == ["lists.example.test"]
    [sts] = [r for r in dns["mta_sts"] if r["domain"] == "example.test"]
    assert (sts["mode"], sts["max_age"], sts["status"]) == ("enforce", 1209600, "critical")
    dane_problem = next(p for p in dns["problems"] if p["code"] == "dane_mismatch")
    assert "matches the certificate Postfix serves now" in dane_problem["detail"]
    chain = parse_chain((stack.lineage / "fullchain.pem").read_bytes(), "fullchain.pem")
    good = str(dane.tlsa(chain[0], 3, 1, 1))
    assert f"{OWNER}. IN TLSA {good}" in dane_problem["fix"]
    assert "mta_sts_mismatch" in doc["summary"] or "dane_mismatch" in doc["summary"]

    dns_stack.set_rrset(OWNER, "TLSA", [good])
    policy_server.serve("example.test", POLICY.format(mx=DOMAIN))
    rc, doc = run_json(capsys, "--config", cfg, "--no-deep")
    [cert] = doc["certificates"]
    dns = cert["dns"]
    assert rc == 1 and codes(dns["problems"]) == {"mx_not_covered": "warning"}, dns["problems"]
    [host] = dns["dane"]["hosts"]
    assert host["state"] == "match" and host["match_served"] == [good]
    assert host["add_for_rollover"] == [f"{OWNER}. IN TLSA {dane.tlsa(chain[1], 2, 1, 1)}"]
    assert doc["summary"].endswith(f"worst: mx_not_covered on DNS of {DOMAIN}")

    rc = check.main(["--config", cfg, "--no-deep"])
    text = capsys.readouterr().out
    assert rc == 1 and text.startswith("WARNING: ")
    assert f"dns {DOMAIN}: mx_not_covered: lists.example.test" in text
    assert f"DANE {DOMAIN}: match" in text and "MTA-STS example.test: mode enforce" in text

    rc, doc = run_json(capsys, "--config", cfg, "--no-deep", "--no-dns")
    assert rc == 0 and doc["certificates"][0]["dns"] is None


def test_survey_requires_the_hooks_names(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    """deploy.names lists a name the certificate lacks: renew-check reports it on the
    certificate (the deploy hook's own validation, with its deploy.names hint) and on every
    service, as the hook would refuse the next deploy."""
    stack.write_config(deploy={"names": ["mx2.example.test"]})
    rc, doc = run_json(capsys, "--config", str(stack.config_file), "--no-deep")
    [cert] = doc["certificates"]
    mismatch = next(p for p in cert["problems"] if p["code"] == "name_mismatch")
    assert "does not cover mx2.example.test" in mismatch["detail"]
    assert str(stack.lineage / "fullchain.pem") in mismatch["detail"]
    assert "deploy.names" in mismatch["fix"]
    assert all("name_mismatch" in codes(s["problems"]) for s in doc["services"])
    assert rc == 2


def test_survey_trust_honours_trust_system_store(stack: Stack, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The pebble root as OpenSSL's default CA file (SSL_CERT_FILE) and no probe.cafile:
    trusted while trust.system_store is true, untrusted on disk once it is false, as the
    deploy hook would judge it."""
    monkeypatch.setenv("SSL_CERT_FILE", str(stack.pebble.root))
    stack.write_config(probe={"cafile": ""})
    rc, doc = run_json(capsys, "--config", str(stack.config_file), "--no-deep")
    assert "untrusted" not in codes(doc["certificates"][0]["problems"])
    stack.write_config(probe={"cafile": ""}, trust={"system_store": False})
    rc, doc = run_json(capsys, "--config", str(stack.config_file), "--no-deep")
    assert codes(doc["certificates"][0]["problems"]).get("untrusted") == "critical" and rc == 2
