"""The Postfix TLS configuration audit, from settings and files (no Postfix needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon.renew_check.audit import (
    PostfixTLS,
    audit,
    enabled_protocols,
    policy_verify_destinations,
)
from hook.postfix.instance import Service
from hook.verdict import Code, Status
from tests.harness.minica import MiniCA

SMTP = Service("smtp", "127.0.0.1", 25, "smtpd")
SUBMISSION = Service("submission", "127.0.0.1", 587, "smtpd",
                     {"smtpd_tls_security_level": "encrypt"})
GOOD = {"smtpd_tls_security_level": "may", "smtpd_tls_loglevel": "1",
        "smtpd_tls_protocols": ">=TLSv1.2", "smtpd_tls_mandatory_protocols": ">=TLSv1.2",
        "smtp_tls_security_level": "may", "inet_interfaces": "all"}


def codes(tls: PostfixTLS, **kw: object) -> dict[Code, Status]:
    return {p.code: p.status for p in audit(tls, **kw)}  # type: ignore[arg-type]


@pytest.fixture
def lineage(tmp_path: Path) -> Path:
    """A certbot-like lineage: cert.pem (leaf), fullchain.pem, privkey.pem (0600)."""
    issued = MiniCA().issue(["mail.example.test"])
    live = tmp_path / "live" / "mail.example.test"
    live.mkdir(parents=True)
    issued.write_chain_file(live / "bundle.pem")
    (live / "privkey.pem").write_bytes(issued.key_pem())
    (live / "privkey.pem").chmod(0o600)
    (live / "cert.pem").write_bytes(issued.cert_pem())
    (live / "fullchain.pem").write_bytes(issued.chain_pem())
    return live


@pytest.mark.parametrize(("value", "enabled"), [
    (">=TLSv1.2", ("TLSv1.2", "TLSv1.3")),
    (">=TLSv1", ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")),
    ("!SSLv2, !SSLv3", ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")),
    ("!SSLv2:!SSLv3:!TLSv1:!TLSv1.1", ("TLSv1.2", "TLSv1.3")),
    ("TLSv1.2 TLSv1.3", ("TLSv1.2", "TLSv1.3")),
    ("<=TLSv1.1", ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1")),
])
def test_protocol_syntax(value: str, enabled: tuple[str, ...]) -> None:
    """Postfix's protocol lists, old (``!TLSv1``) and 3.6+ (``>=TLSv1.2``) syntax."""
    assert enabled_protocols(value) == enabled


def test_good_configuration_has_no_findings(lineage: Path) -> None:
    """A fullchain, a private key, sane levels and protocols: nothing to report."""
    tls = PostfixTLS({**GOOD, "smtpd_tls_chain_files":
                      f"{lineage}/privkey.pem, {lineage}/fullchain.pem"}, (SMTP, SUBMISSION))
    assert audit(tls) == []


def test_cert_pem_instead_of_fullchain(lineage: Path) -> None:
    """``smtpd_tls_cert_file = .../cert.pem`` is flagged, pointing at fullchain.pem."""
    tls = PostfixTLS({**GOOD, "smtpd_tls_cert_file": f"{lineage}/cert.pem",
                      "smtpd_tls_key_file": f"{lineage}/privkey.pem"}, (SMTP,))
    found = [p for p in audit(tls) if p.code is Code.CERT_NOT_FULLCHAIN]
    assert len(found) == 1 and found[0].status is Status.CRITICAL
    assert f"{lineage}/fullchain.pem" in found[0].fix


def test_encrypt_on_public_port_25_but_not_on_loopback() -> None:
    """``encrypt`` on a public port 25 breaks RFC 3207; on a loopback-only 25 it is fine,
    and on submission it is what it should be."""
    params = {**GOOD, "smtpd_tls_security_level": "encrypt"}
    assert codes(PostfixTLS(params, (SMTP,)))[Code.MX_TLS_REQUIRED] is Status.WARNING
    loop = Service("127.0.0.1:smtp", "127.0.0.1", 25, "smtpd")
    assert Code.MX_TLS_REQUIRED not in codes(PostfixTLS(params, (loop,)))
    assert Code.MX_TLS_REQUIRED not in codes(PostfixTLS({**params, "inet_interfaces":
                                                          "loopback-only"}, (SMTP,)))
    assert Code.MX_TLS_REQUIRED not in codes(PostfixTLS(GOOD, (SMTP, SUBMISSION)))


def test_weak_protocols_note_on_mx_warning_on_submission() -> None:
    """Postfix 3.7's default ``>=TLSv1``: advice on the opportunistic service, a warning
    on submission (the mandatory parameter), each naming the parameter to change."""
    params = {**GOOD, "smtpd_tls_protocols": ">=TLSv1", "smtpd_tls_mandatory_protocols": ">=TLSv1"}
    found = [p for p in audit(PostfixTLS(params, (SMTP, SUBMISSION))) if p.code is Code.WEAK_PROTOCOL]
    assert [(p.status, p.fix) for p in found] == [
        (Status.OK, "postconf -e 'smtpd_tls_protocols = >=TLSv1.2'"),
        (Status.WARNING, "postconf -e 'smtpd_tls_mandatory_protocols = >=TLSv1.2'")]


@pytest.mark.parametrize(("level", "status"), [("0", Status.OK), ("1", None), ("2", None),
                                               ("4", Status.WARNING)])
def test_loglevel(level: str, status: Status | None) -> None:
    """Loglevel 0 gets advice (failures leave no trace), 3+ a warning, 1-2 nothing."""
    assert codes(PostfixTLS({**GOOD, "smtpd_tls_loglevel": level}, (SMTP,))).get(
        Code.TLS_LOGLEVEL) is status


def test_world_readable_key(lineage: Path) -> None:
    """A private key every local user can read is critical (and names chmod 600)."""
    key = lineage / "privkey.pem"
    key.chmod(0o644)
    for parent in [lineage, *lineage.parents]:
        if not os.stat(parent).st_mode & 0o001:
            parent.chmod(os.stat(parent).st_mode | 0o005)
    tls = PostfixTLS({**GOOD, "smtpd_tls_chain_files": f"{key}, {lineage}/fullchain.pem"}, (SMTP,))
    found = [p for p in audit(tls) if p.code is Code.KEY_PERMISSIONS]
    assert found and found[0].status is Status.CRITICAL and "chmod 600" in found[0].fix


def test_client_side_levels_and_ca(tmp_path: Path) -> None:
    """Client side: ``none`` warns (clear text out); ``verify`` without a CA file is
    critical; a policy map asking for ``secure`` without a CA file too."""
    assert codes(PostfixTLS({**GOOD, "smtp_tls_security_level": "none"}))[
        Code.CLIENT_TLS_LEVEL] is Status.WARNING
    assert codes(PostfixTLS({**GOOD, "smtp_tls_security_level": "verify"}))[
        Code.CLIENT_NO_CAFILE] is Status.CRITICAL
    assert Code.CLIENT_NO_CAFILE not in codes(PostfixTLS(
        {**GOOD, "smtp_tls_security_level": "verify", "smtp_tls_CAfile": "/etc/ssl/x.pem"}))
    policy = tmp_path / "tls_policy"
    policy.write_text("# partners\nbank.example secure match=.bank.example\n"
                      "pinned.example verify tafile=/etc/postfix/pinned.pem\nother.example may\n")
    found = [p for p in audit(PostfixTLS({**GOOD, "smtp_tls_policy_maps": f"hash:{policy}"}))
             if p.code is Code.CLIENT_NO_CAFILE]
    assert len(found) == 1 and "bank.example" in found[0].detail
    assert "pinned.example" not in found[0].detail


def test_policy_parser() -> None:
    """Only verify/secure entries without their own tafile= need the CA file."""
    assert policy_verify_destinations(
        "a.example verify\nb.example secure tafile=x\n[c.example]:25 secure # c\n") == \
        ["a.example", "[c.example]:25"]


def test_lineage_as_client_certificate_warns_about_eku_and_pins(lineage: Path,
                                                                tmp_path: Path) -> None:
    """A lineage used as ``smtp_tls_chain_files``: a warning that says the clientAuth EKU
    is gone, that fingerprint pins break at renewal, and whether reuse_key is on."""
    conf = tmp_path / "renewal.conf"
    conf.write_text("[renewalparams]\nreuse_key = True\n")
    tls = PostfixTLS({**GOOD, "smtp_tls_chain_files": f"{lineage}/privkey.pem, "
                      f"{lineage}/fullchain.pem"})
    found = [p for p in audit(tls, lineage_roots=[lineage.parent],
                              renewal_conf=lambda _: conf) if p.code is Code.CLIENT_CERT_EKU]
    assert len(found) == 1 and found[0].status is Status.WARNING
    assert "lacks it" in found[0].detail and "fingerprint" in found[0].detail
    assert "reuse_key is on" in found[0].detail


def test_per_service_certificates_are_found(lineage: Path) -> None:
    """A service with its own ``-o smtpd_tls_chain_files`` gets its own entry; the
    main.cf file is used by the other services only."""
    own = Service("submission", "127.0.0.1", 587, "smtpd",
                  {"smtpd_tls_security_level": "encrypt",
                   "smtpd_tls_chain_files": f"{lineage}/bundle.pem"})
    tls = PostfixTLS({**GOOD, "smtpd_tls_chain_files":
                      f"{lineage}/privkey.pem, {lineage}/fullchain.pem"}, (SMTP, own))
    found = [(f.where, f.path, tuple(s.name for s in f.services)) for f in tls.cert_files()]
    assert found == [("main.cf", f"{lineage}/fullchain.pem", ("smtp",)),
                     ("master.cf submission", f"{lineage}/bundle.pem", ("submission",))]


def test_leaf_only_file_completed_by_cafile(lineage: Path, tmp_path: Path) -> None:
    """A leaf-only cert file whose issuer is in ``smtpd_tls_CAfile`` (Postfix then sends
    it: measured): advice when the CA file is the lineage's own chain.pem, a warning when
    it is a copy (the next intermediate rotation breaks it), critical without it."""
    chain = lineage / "chain.pem"
    chain.write_bytes((lineage / "fullchain.pem").read_bytes().split(b"-----END CERTIFICATE-----\n", 1)[1])
    copy = tmp_path / "cacert.pem"
    copy.write_bytes(chain.read_bytes())
    base = {**GOOD, "smtpd_tls_cert_file": f"{lineage}/cert.pem",
            "smtpd_tls_key_file": f"{lineage}/privkey.pem"}
    for cafile, status in ((str(chain), Status.OK), (str(copy), Status.WARNING),
                           ("", Status.CRITICAL)):
        found = codes(PostfixTLS({**base, "smtpd_tls_CAfile": cafile}, (SMTP,)))
        assert found[Code.CERT_NOT_FULLCHAIN] is status, cafile
