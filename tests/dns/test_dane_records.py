"""hook.dns.dane's pure parts: TLSA computation, matching, issuer families, the gate's logic."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hook.config import DaneMode
from hook.dns import dane
from hook.dns.dane import HostState, Tlsa
from hook.dns.resolver import Answer, Security
from hook.verdict import Code, Status


def _name(cn: str, org: str = "") -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _cert(subject: x509.Name, issuer: x509.Name, signer: ec.EllipticCurvePrivateKey,
          key: ec.EllipticCurvePrivateKey, ca: bool, san: str = "") -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=90))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def chain_from(intermediate_cn: str, org: str = "Let's Encrypt",
               leaf_key: ec.EllipticCurvePrivateKey | None = None) -> tuple[x509.Certificate, ...]:
    """leaf (mail.example.test) + an intermediate named like a real CA's."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = leaf_key or ec.generate_private_key(ec.SECP256R1())
    inter = _cert(_name(intermediate_cn, org), _name("Root X1", org), ca_key, ca_key, True)
    leaf = _cert(_name("mail.example.test"), inter.subject, ca_key, leaf_key, False, "mail.example.test")
    return leaf, inter


def secure(owner: str, *records: str, rcode: str = "NOERROR") -> Answer:
    return Answer(owner, "TLSA", Security.SECURE, rcode, tuple(records), 300, "127.0.0.1:53")


def test_computed_3_1_1_equals_openssl_spki_digest(tmp_path: Path) -> None:
    """3 1 1 is SHA-256 of the DER SubjectPublicKeyInfo, the digest openssl computes from
    the certificate's public key; 3 0 1 is SHA-256 of the whole DER certificate."""
    leaf, inter = chain_from("R10")
    pem = tmp_path / "leaf.pem"
    pem.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    pub = subprocess.run(["openssl", "x509", "-in", str(pem), "-noout", "-pubkey"],
                         capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub,
                         capture_output=True, check=True).stdout
    records = {r.params: r for r in dane.records_for((leaf, inter))}
    assert records["3 1 1"].data == hashlib.sha256(der).digest()
    assert records["3 1 2"].data == hashlib.sha512(der).digest()
    assert records["3 0 1"].data == hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).digest()
    assert records["2 1 1"].data == hashlib.sha256(
        inter.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)).digest()
    assert [r.params for r in dane.records_for((leaf, inter))] == [
        "3 1 1", "3 1 2", "3 0 1", "2 1 1", "2 1 2", "2 0 1"]


def test_matching_rules_follow_rfc_7672() -> None:
    """DANE-EE matches only the leaf, DANE-TA only an issuer; usages 0/1 never count."""
    leaf, inter = chain_from("R10")
    ee = dane.tlsa(leaf, 3, 1, 1)
    ta = dane.tlsa(inter, 2, 1, 1)
    assert dane.matches(ee, (leaf, inter)) and dane.matches(ta, (leaf, inter))
    assert not dane.matches(Tlsa(2, 1, 1, ee.data), (leaf, inter))   # leaf key as a TA
    assert not dane.matches(Tlsa(3, 1, 1, ta.data), (leaf, inter))   # issuer key as EE
    assert not dane.matches(Tlsa(1, 1, 1, ee.data), (leaf, inter))   # PKIX-EE: unusable
    assert dane.matches(dane.tlsa(leaf, 3, 1, 0), (leaf, inter))     # full SPKI, no hash


def test_tlsa_parse_and_rr_line() -> None:
    """Presentation format parses (hex split by spaces too) and prints as a zone-file line."""
    rec = Tlsa.parse("3 1 1 AB CD" + "00" * 30)
    assert str(rec) == "3 1 1 abcd" + "00" * 30
    assert rec.rr("Mail.Example.Test.") == "_25._tcp.mail.example.test. IN TLSA 3 1 1 abcd" + "00" * 30
    with pytest.raises(ValueError, match="not a TLSA record"):
        Tlsa.parse("x 1 1 ab")


@pytest.mark.parametrize(("old", "new", "changed"), [
    ("R10", "R11", False), ("E5", "E6", False), ("R10", "E5", True), ("R11", "YR1", True),
    ("E6", "YE2", True), ("Pebble Intermediate CA 1a2b3c", "Pebble Intermediate CA 4d5e6f", False),
])
def test_issuer_family(old: str, new: str, changed: bool) -> None:
    """Let's Encrypt's R/E intermediates are one family each; YR/YE are new families."""
    assert (dane.issuer_family(chain_from(old)[0]) != dane.issuer_family(chain_from(new)[0])) is changed


def test_gate_refuses_mismatch_and_prints_the_records_to_publish() -> None:
    """Validated 3 1 1 for the old key only, a new key: refused (refuse mode), the exact RR
    lines for the new key (3 1 1) and its issuer (2 1 1) are given (also in the JSON record);
    warn mode only warns."""
    old = chain_from("R10")
    new = (chain_from("R10")[0], old[1])
    answer = secure("_25._tcp.mail.example.test", str(dane.tlsa(old[0], 3, 1, 1)))
    res = dane.dane_gate(new, old, [answer], DaneMode.REFUSE, reuse_key=False)
    assert res.refused and res.status is Status.CRITICAL
    assert res.hosts[0].state is HostState.MISMATCH
    assert res.hosts[0].match_old and not res.hosts[0].match_new
    assert res.publish == (
        f"_25._tcp.mail.example.test. IN TLSA 3 1 1 {dane.tlsa(new[0], 3, 1, 1).data.hex()}",
        f"_25._tcp.mail.example.test. IN TLSA 2 1 1 {dane.tlsa(new[1], 2, 1, 1).data.hex()}")
    assert {p.code for p in res.problems} == {Code.DANE_MISMATCH, Code.KEY_CHANGED}
    record = json.loads(json.dumps(res.as_record()))
    assert record["refused"] is True and record["hosts"][0]["publish"] == list(res.publish)
    warn = dane.dane_gate(new, old, [answer], DaneMode.WARN, reuse_key=False)
    assert not warn.refused and warn.status is Status.WARNING


def test_gate_warns_on_issuer_family_change_when_dane_is_used() -> None:
    """A 3 1 1 for the kept key still matches after the CA moved from R to YR: the deploy
    passes, with a warning that 2 x x records of the old family would not match."""
    key = ec.generate_private_key(ec.SECP256R1())
    old, new = chain_from("R10", leaf_key=key), chain_from("YR1", leaf_key=key)
    answer = secure("_25._tcp.mail.example.test", str(dane.tlsa(old[0], 3, 1, 1)))
    res = dane.dane_gate(new, old, [answer], DaneMode.REFUSE, reuse_key=True)
    assert not res.refused
    assert [p.code for p in res.problems] == [Code.ISSUER_CHANGED]
    assert "R10" in res.problems[0].detail and "YR1" in res.problems[0].detail


def test_gate_no_warning_for_family_change_without_dane() -> None:
    """Without TLSA records a family change is only a note: nothing to update."""
    old, new = chain_from("R10"), chain_from("YE1")
    res = dane.dane_gate(new, old, [secure("_25._tcp.mail.example.test", rcode="NXDOMAIN")],
                         DaneMode.REFUSE)
    assert not res.problems and not res.refused
    assert any("changed family" in n for n in res.notes)


def test_gate_only_unusable_records_is_a_warning() -> None:
    """Only PKIX-EE (1 x x) records: SMTP senders ignore them; a warning, not a refusal."""
    leaf, inter = chain_from("R10")
    res = dane.dane_gate((leaf, inter), None,
                         [secure("_25._tcp.mail.example.test", str(Tlsa(1, 1, 1, b"\x01" * 32)))],
                         DaneMode.REFUSE)
    assert res.hosts[0].state is HostState.UNUSABLE
    assert res.status is Status.WARNING and not res.refused


def test_off_mode_looks_nothing_up() -> None:
    """dns.dane = off: no hosts judged, a note says so."""
    res = dane.dane_gate(chain_from("R10"), None, [], DaneMode.OFF)
    assert res.hosts == () and not res.refused and "off" in res.notes[0]


def test_tlsa_hosts_skip_wildcards_and_addresses() -> None:
    """Only DNS names get a TLSA lookup, each once."""
    assert dane.tlsa_hosts(["Mail.Example.Test.", "*.example.test", "192.0.2.1", "mail.example.test",
                            "mx2.example.test"]) == ("mail.example.test", "mx2.example.test")


def test_reuse_key_from_renewal_conf(tmp_path: Path) -> None:
    """certbot's renewal/NAME.conf says reuse_key = True, or nothing (off); unreadable: None."""
    conf = tmp_path / "name.conf"
    conf.write_text("[renewalparams]\nkey_type = ecdsa\nreuse_key = True\n")
    assert dane.reuse_key(conf) is True
    conf.write_text("[renewalparams]\nkey_type = ecdsa\n")
    assert dane.reuse_key(conf) is False
    assert dane.reuse_key(tmp_path / "missing.conf") is None
