"""The DANE gate inside the deploy hook: certbot renews, the hook refuses, Postfix keeps
serving the old certificate; after the printed record is published, the hook deploys.

Real parts only: pebble + certbot renewals, the private Postfix, Knot + Unbound on
loopback (tests/harness/dns.py). TLSA names: the hook looks up ``_25._tcp.<myhostname>``
(``mail.example.test`` on the test stack), see :func:`hook.dns.dane.tlsa_names`.
"""

from __future__ import annotations

import json
from typing import Any

from hook.certs.bundle import fingerprint, parse_chain
from hook.deploy_hook.cli import main as hook_main
from hook.dns import dane, danestate
from tests.harness.dns import DnsStack, free_udp_tcp_port
from tests.harness.hookbed import served_all
from tests.harness.stack import DOMAIN, LO, Stack

OWNER = f"_25._tcp.{DOMAIN}"


def chain_of(stack: Stack) -> tuple[Any, ...]:
    return parse_chain((stack.lineage / "fullchain.pem").read_bytes(), "fullchain.pem")


def last_record(stack: Stack) -> dict[str, Any]:
    records = sorted((stack.state_dir / "deploys").glob("*.json"))
    return dict(json.loads(records[-1].read_text()))


def adopt_with_dane(stack: Stack, dns_stack: DnsStack, port: int | None = None,
                    mode: str = "refuse") -> None:
    """Point [dns] at the test resolver (or ``port``), stage a bundle (adopt)."""
    from daemon.renew_check import cli as check  # noqa: PLC0415

    stack.write_config(dns={"resolver": LO, "resolver_port": port or dns_stack.resolver_port,
                            "timeout": 1, "dane": mode})
    assert check.main(["--config", str(stack.config_file), "adopt", str(stack.lineage)]) == 0


def hook(stack: Stack, *extra: str) -> int:
    return hook_main(["--config", str(stack.config_file), "--lineage", str(stack.lineage), *extra])


def test_renewal_with_new_key_is_refused_and_old_cert_still_served(stack: Stack, dns_stack: DnsStack) -> None:
    """3 1 1 published for the current key, certbot renews with a new key and runs the hook:
    the deploy is refused (record 'refused' with the TLSA line to publish), all three
    services still serve the old leaf and the bundle is byte-identical. Once that line is
    published, running the hook again deploys the new leaf."""
    adopt_with_dane(stack, dns_stack)
    old_chain = chain_of(stack)
    dns_stack.set_rrset(OWNER, "TLSA", [str(dane.tlsa(old_chain[0], 3, 1, 1))])
    old = fingerprint(old_chain[0])
    assert served_all(stack) == [old] * 3
    bundle = stack.bundle_dir / f"{DOMAIN}.pem"
    before = bundle.read_bytes()

    stack.install_hook()
    stack.certbot.renew(env=stack.env())
    new_chain = chain_of(stack)
    assert fingerprint(new_chain[0]) != old
    assert served_all(stack) == [old] * 3
    assert bundle.read_bytes() == before
    record = last_record(stack)
    assert record["outcome"] == "refused"
    line = f"{OWNER}. IN TLSA 3 1 1 {dane.tlsa(new_chain[0], 3, 1, 1).data.hex()}"
    assert line in record["message"]
    assert f"{bundle} unchanged, Postfix keeps serving it" in record["message"]
    assert record["dane"]["refused"] is True
    assert record["dane"]["hosts"][0]["publish"][0] == line
    assert any("key_changed" in w for w in record["warnings"])

    dns_stack.set_rrset(OWNER, "TLSA", [str(dane.tlsa(old_chain[0], 3, 1, 1)),
                                        str(dane.tlsa(new_chain[0], 3, 1, 1))])
    assert hook(stack) == 0
    assert served_all(stack) == [fingerprint(new_chain[0])] * 3
    record = last_record(stack)
    assert record["outcome"] == "deployed" and record["dane"]["status"] == "warning"
    assert "DANE warning: " in record["message"]  # key_changed: next renewal, new key again


def test_matching_3_1_1_deploys(stack: Stack, dns_stack: DnsStack) -> None:
    """A validated 3 1 1 for the key, certbot renews with --reuse-key: the gate passes,
    the new leaf is served, the record says which TLSA record matched, and the host is
    remembered in state_dir/dane.json as using DANE."""
    adopt_with_dane(stack, dns_stack)
    old_chain = chain_of(stack)
    record_3_1_1 = str(dane.tlsa(old_chain[0], 3, 1, 1))
    dns_stack.set_rrset(OWNER, "TLSA", [record_3_1_1])
    stack.certbot.renew(extra=["--reuse-key"])
    new = fingerprint(chain_of(stack)[0])

    assert hook(stack) == 0
    assert served_all(stack) == [new] * 3
    record = last_record(stack)
    assert record["outcome"] == "deployed", record["message"]
    assert record["message"].endswith(f"DANE ok: {DOMAIN} match")
    assert record["dane"]["hosts"][0]["match_new"] == [record_3_1_1]
    assert record["warnings"] == []
    seen = danestate.load(stack.state_dir).hosts[DOMAIN]
    assert seen.records == (record_3_1_1,) and seen.lineage == DOMAIN


def test_2_1_1_for_the_issuer_deploys_across_a_key_rollover(stack: Stack, dns_stack: DnsStack) -> None:
    """Only a 2 1 1 for the issuing intermediate is published: certbot's default renewal
    (new key) still matches, the hook deploys, and no key-change warning is raised (the
    gate sees no 3 x x records to break)."""
    adopt_with_dane(stack, dns_stack)
    old_chain = chain_of(stack)
    dns_stack.set_rrset(OWNER, "TLSA", [str(dane.tlsa(old_chain[1], 2, 1, 1))])
    stack.certbot.renew()
    new_chain = chain_of(stack)
    assert dane.tlsa(new_chain[0], 3, 1, 1) != dane.tlsa(old_chain[0], 3, 1, 1)

    assert hook(stack) == 0
    assert served_all(stack) == [fingerprint(new_chain[0])] * 3
    record = last_record(stack)
    assert record["dane"]["hosts"][0]["match_new"][0].startswith("2 1 1 ")
    assert record["dane"]["problems"] == []


def test_unsigned_zone_deploys_with_a_note(stack: Stack, dns_stack: DnsStack) -> None:
    """Postfix's myhostname is in an unsigned zone that has a TLSA record matching nothing:
    senders ignore it, so the hook deploys; the note in the record says why nothing was
    enforced, and only myhostname (not the certificate's other name) was looked up."""
    name = "mail.insecure.test"
    stack.certbot.issue(domains=[DOMAIN, name], extra=["--expand"])
    stack.postfix.set_main(myhostname=name)
    adopt_with_dane(stack, dns_stack)
    dns_stack.set_rrset(f"_25._tcp.{name}", "TLSA", ["3 1 1 " + "00" * 32])

    assert hook(stack) == 0
    record = last_record(stack)
    assert record["outcome"] == "deployed", record["message"]
    assert [h["host"] for h in record["dane"]["hosts"]] == [name]
    assert record["dane"]["hosts"][0]["state"] == "insecure"
    assert any(f"_25._tcp.{name}: the zone is not DNSSEC-signed, so DANE is not in force" in n
               for n in record["notes"])
    assert record["message"].endswith(f"DANE ok: {name} insecure")


def test_lookup_failure_warns_for_a_host_never_seen_using_dane(stack: Stack, dns_stack: DnsStack) -> None:
    """Nothing listens at the resolver address (a real lookup failure) and no earlier
    deploy saw TLSA records for the host: the renewal is deployed, with a warning that the
    gate could not check, naming the resolver."""
    port = free_udp_tcp_port()
    adopt_with_dane(stack, dns_stack, port=port)
    stack.certbot.renew()
    new = fingerprint(chain_of(stack)[0])

    assert hook(stack) == 0
    assert served_all(stack) == [new] * 3
    record = last_record(stack)
    assert record["outcome"] == "deployed"
    warning = next(w for w in record["warnings"] if w.startswith("dns_lookup_failed"))
    assert f"the DANE gate could not check {DOMAIN}" in warning and f"{LO}:{port}" in warning
    assert record["dane"]["hosts"][0]["state"] == "lookup_failed"


def test_lookup_failure_refuses_where_dane_was_seen(stack: Stack, dns_stack: DnsStack) -> None:
    """A first deploy sees a validated 3 1 1 (remembered in state_dir/dane.json); at the
    next renewal the resolver is down: refused, exit 3, the old leaf still served and the
    bundle unchanged, the message says DANE was in use and when it was seen."""
    adopt_with_dane(stack, dns_stack)
    old_chain = chain_of(stack)
    dns_stack.set_rrset(OWNER, "TLSA", [str(dane.tlsa(old_chain[0], 3, 1, 1))])
    assert hook(stack) == 0  # same certificate: deploys, records the observation
    assert DOMAIN in danestate.load(stack.state_dir).hosts
    old = fingerprint(old_chain[0])
    bundle = stack.bundle_dir / f"{DOMAIN}.pem"
    before = bundle.read_bytes()

    port = free_udp_tcp_port()
    stack.write_config(dns={"resolver": LO, "resolver_port": port, "timeout": 1, "dane": "refuse"})
    stack.certbot.renew(extra=["--reuse-key"])
    assert hook(stack) == 3
    assert served_all(stack) == [old] * 3 and bundle.read_bytes() == before
    record = last_record(stack)
    assert record["outcome"] == "refused"
    assert record["message"].startswith(f"refused by the DANE gate: dns_lookup_failed: cannot tell "
                                        f"whether {OWNER} still has TLSA records")
    assert f"DANE was in use for {DOMAIN} (DNSSEC-validated TLSA 3 1 1" in record["message"]
    assert danestate.load(stack.state_dir).hosts[DOMAIN].records  # a failure forgets nothing


def test_in_place_refusal_says_the_old_pair_cannot_be_kept(stack: Stack, dns_stack: DnsStack) -> None:
    """Postfix reads certbot's live/ files directly (no adopt): a DANE mismatch still
    refuses with exit 7 (refused, but Postfix reads the files in place: act now), and the
    message says the old pair cannot be kept."""
    stack.write_config(dns={"resolver": LO, "resolver_port": dns_stack.resolver_port,
                            "timeout": 1, "dane": "refuse"})
    dns_stack.set_rrset(OWNER, "TLSA", ["3 1 1 " + "22" * 32])
    assert hook(stack, "--dry-run") == 7
    assert hook(stack) == 7
    record = last_record(stack)
    assert "Postfix reads certbot's files in place, so the old pair cannot be kept" in record["message"]


def test_bogus_tlsa_answer_refuses_the_deploy(stack: Stack, dns_stack: DnsStack) -> None:
    """myhostname is in a zone whose DNSSEC validation fails (wrong trust anchor): the TLSA
    answer is bogus (SERVFAIL), which stays a refusal in refuse mode even though DANE was
    never seen for the host; the old bundle is kept and the message quotes the resolver."""
    name = "mail.bogus.test"
    stack.certbot.issue(domains=[DOMAIN, name], extra=["--expand"])
    stack.postfix.set_main(myhostname=name)
    adopt_with_dane(stack, dns_stack)
    bundle = stack.bundle_dir / f"{DOMAIN}.pem"
    before = bundle.read_bytes()
    stack.certbot.renew(extra=["--reuse-key"])

    assert hook(stack) == 3
    assert bundle.read_bytes() == before
    record = last_record(stack)
    assert record["message"].startswith(f"refused by the DANE gate: dane_bogus: TLSA _25._tcp.{name}: "
                                        "DNSSEC validation failed")
    assert f"resolver {LO}:{dns_stack.resolver_port}" in record["message"]
