"""The probe and the judge against the real private Postfix, one problem code at a time.

Each test points Postfix at a bad certificate (built by tests/harness/minica.py) or a
bad TLS setting with ``set_main`` + reload, then checks the verdict on its three TLS
services: STARTTLS like port 25 (``may``), STARTTLS like 587 (``encrypt``), implicit TLS
like 465. Findings measured here (Debian 12, Postfix 3.7, OpenSSL 3.0): stock Postfix
accepts anonymous ciphers and TLS 1.0/1.1 on all three services without any
``@SECLEVEL`` change on its side; ``smtpd_tls_protocols = <=TLSv1.1`` alone makes it
speak only the old protocols.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hook.certs.bundle import fingerprint, parse_chain
from hook.certs.validate import Trust, load_trust
from hook.tls.judgement import Role, Verdict, judge
from hook.tls.starttls import ProbeResult, Target, probe, probe_deep
from hook.verdict import Code, Status
from tests.harness.minica import MiniCA
from tests.harness.stack import DOMAIN, LO, Pebble, Stack, running_stack

HARDENED = {"smtpd_tls_exclude_ciphers": "aNULL", "smtpd_tls_mandatory_exclude_ciphers": "aNULL",
            "smtpd_tls_protocols": ">=TLSv1.2", "smtpd_tls_mandatory_protocols": ">=TLSv1.2"}


@pytest.fixture(scope="module")
def pf_stack(pebble: Pebble) -> Iterator[Stack]:
    """One stack for this module; each test resets main.cf to the harness defaults."""
    with running_stack(pebble) as s:
        yield s


@pytest.fixture
def ca() -> MiniCA:
    return MiniCA()


@pytest.fixture
def trust(pf_stack: Stack, ca: MiniCA, tmp_path: Path) -> Trust:
    """Trust the pebble root and the test CA, not the system store (hermetic)."""
    bundle = tmp_path / "anchors.pem"
    bundle.write_bytes(pf_stack.pebble.root.read_bytes() + ca.root_pem())
    return load_trust(bundle, system=False)


@pytest.fixture
def configure(pf_stack: Stack) -> Iterator[Callable[..., None]]:
    """Set main.cf parameters, reload, and wait until every service shows the change."""
    pf = pf_stack.postfix

    def apply(until: Callable[[ProbeResult], bool] = lambda r: True, **params: str) -> None:
        pf.set_main(**params)
        pf.reload()
        for target in targets(pf_stack):
            streak, deadline = 0, time.monotonic() + 10
            while streak < 3 and time.monotonic() < deadline:
                streak = streak + 1 if until(probe(target, timeout=3)) else 0
                if streak == 0:
                    time.sleep(0.05)

    yield apply
    pf.reset_main()
    pf.reload()


def targets(stack: Stack) -> list[Target]:
    pf = stack.postfix
    return [Target(LO, pf.smtp_port), Target(LO, pf.submission_port),
            Target(LO, pf.smtps_port, implicit_tls=True)]


ROLES = (Role.MX, Role.SUBMISSION, Role.SUBMISSIONS)


def verdicts(stack: Stack, trust: Trust, *, deep: bool = False, expected: str | None = None,
             ) -> list[Verdict]:
    out = []
    for target, role in zip(targets(stack), ROLES, strict=True):
        res = probe(target, timeout=3)
        dr = probe_deep(target, timeout=3) if deep else None
        out.append(judge(res, trust=trust, names=[DOMAIN], role=role, deep=dr,
                         expected_sha256=expected))
    return out


def serves(path: Path) -> Callable[[ProbeResult], bool]:
    want = fingerprint(parse_chain(path.read_bytes(), str(path))[0])
    return lambda r: r.handshake is not None and fingerprint(r.handshake.leaf) == want


def test_stock_postfix_is_ok_but_accepts_anonymous_and_old_protocols(
        pf_stack: Stack, trust: Trust) -> None:
    """Debian's stock settings with a good certbot certificate: the chain is fine on all
    three services, but the deep checks find an anonymous cipher and TLS 1.0/1.1 - a
    warning on opportunistic port 25, critical on submission and implicit TLS - each
    with the postconf lines that fix it."""
    got = verdicts(pf_stack, trust, deep=True)
    assert [v.status for v in got] == [Status.WARNING, Status.CRITICAL, Status.CRITICAL]
    for v in got:
        assert set(v.codes) == {Code.ANONYMOUS_CIPHERS, Code.WEAK_PROTOCOL}, v.problems
        anon = next(p for p in v.problems if p.code is Code.ANONYMOUS_CIPHERS)
        assert "no certificate" in anon.detail and "Untrusted" in anon.detail
        assert "smtpd_tls_exclude_ciphers = aNULL" in anon.fix
        weak = next(p for p in v.problems if p.code is Code.WEAK_PROTOCOL)
        assert "TLSv1 and TLSv1.1" in weak.detail and ">=TLSv1.2" in weak.fix
        assert v.leaf_sha256 and v.protocol == "TLSv1.3"


def test_the_printed_fix_lines_make_deep_checks_pass(
        pf_stack: Stack, trust: Trust, configure: Callable[..., None]) -> None:
    """After the suggested postconf lines, the deep checks find nothing: all OK."""
    configure(**HARDENED)
    got = verdicts(pf_stack, trust, deep=True)
    assert [v.status for v in got] == [Status.OK] * 3, [v.problems for v in got]
    assert all(v.deep and v.deep.accepted == () for v in got)


def test_expired_certificate(pf_stack: Stack, trust: Trust, ca: MiniCA,
                             configure: Callable[..., None], tmp_path: Path) -> None:
    """A certificate that expired yesterday is ``expired`` and critical everywhere."""
    path = ca.issue([DOMAIN], days=-1).write_chain_file(tmp_path / "expired.pem")
    configure(serves(path), smtpd_tls_chain_files=str(path))
    for v in verdicts(pf_stack, trust):
        assert v.codes == (Code.EXPIRED,) and v.status is Status.CRITICAL


def test_wrong_name(pf_stack: Stack, trust: Trust, ca: MiniCA,
                    configure: Callable[..., None], tmp_path: Path) -> None:
    """A trusted certificate for another host name is ``name_mismatch``."""
    path = ca.issue(["www.example.test"]).write_chain_file(tmp_path / "other.pem")
    configure(serves(path), smtpd_tls_chain_files=str(path))
    for v in verdicts(pf_stack, trust):
        assert v.codes == (Code.NAME_MISMATCH,)
        assert "www.example.test" in v.problems[0].detail


def test_self_signed(pf_stack: Stack, trust: Trust, ca: MiniCA,
                     configure: Callable[..., None], tmp_path: Path) -> None:
    """A self-signed certificate is ``self_signed``, not just ``untrusted``."""
    path = ca.issue([DOMAIN], self_signed=True).write_chain_file(tmp_path / "self.pem")
    configure(serves(path), smtpd_tls_chain_files=str(path))
    for v in verdicts(pf_stack, trust):
        assert v.codes == (Code.SELF_SIGNED,)


def test_missing_intermediate_from_cert_pem(pf_stack: Stack, trust: Trust,
                                            configure: Callable[..., None]) -> None:
    """Postfix pointed at certbot's cert.pem (leaf only) instead of fullchain.pem: the
    verdict is ``missing_intermediate`` with the fix, where peers only say untrusted."""
    lin = pf_stack.lineage
    configure(lambda r: r.handshake is not None and len(r.handshake.chain) == 1,
              smtpd_tls_chain_files=f"{lin}/privkey.pem, {lin}/cert.pem")
    for v in verdicts(pf_stack, trust):
        assert v.codes == (Code.MISSING_INTERMEDIATE,)
        assert "fullchain.pem" in v.problems[0].fix


def test_stale_certificate(pf_stack: Stack, trust: Trust, ca: MiniCA,
                           configure: Callable[..., None], tmp_path: Path) -> None:
    """Postfix serves a copy made once, while the lineage on disk holds another leaf:
    ``stale``, naming both fingerprints."""
    path = ca.issue([DOMAIN]).write_chain_file(tmp_path / "copy.pem")
    configure(serves(path), smtpd_tls_chain_files=str(path))
    disk = fingerprint(parse_chain((pf_stack.lineage / "cert.pem").read_bytes(), "cert.pem")[0])
    for v in verdicts(pf_stack, trust, expected=disk):
        assert v.codes == (Code.STALE,)
        assert disk[:16] in v.problems[0].detail


def test_tls10_11_only(pf_stack: Stack, trust: Trust, configure: Callable[..., None]) -> None:
    """``smtpd_tls_protocols = <=TLSv1.1``: a modern client cannot connect at all; the
    deep checks still get the certificate over TLS 1.0 and say why it fails."""
    configure(lambda r: r.handshake is None,
              smtpd_tls_protocols="<=TLSv1.1", smtpd_tls_mandatory_protocols="<=TLSv1.1")
    for v in verdicts(pf_stack, trust, deep=True):
        assert v.status is Status.CRITICAL
        assert Code.HANDSHAKE_FAILED in v.codes and Code.WEAK_PROTOCOL in v.codes
        only = next(p for p in v.problems if p.code is Code.WEAK_PROTOCOL
                    and "only" in p.detail)
        assert only.status is Status.CRITICAL
        assert v.leaf_sha256 is not None and v.protocol == "TLSv1"


def test_starttls_off(pf_stack: Stack, trust: Trust, configure: Callable[..., None]) -> None:
    """``smtpd_tls_security_level = none`` on port 25: ``no_starttls``, critical, with a
    fix; the services with their own ``-o`` level keep working."""
    configure(lambda r: r.handshake is None or r.target.port != pf_stack.postfix.smtp_port,
              smtpd_tls_security_level="none")
    mx, sub, smtps = verdicts(pf_stack, trust)
    assert mx.codes == (Code.NO_STARTTLS,) and mx.status is Status.CRITICAL
    assert "smtpd_tls_security_level" in mx.problems[0].fix
    assert sub.status is Status.OK and smtps.status is Status.OK


def test_key_not_matching_certificate(pf_stack: Stack, trust: Trust, ca: MiniCA,
                                      configure: Callable[..., None], tmp_path: Path) -> None:
    """A key that does not match the certificate passes ``postfix check``; STARTTLS then
    answers 454 (``starttls_refused``) and the implicit-TLS port fails the handshake."""
    good, other = ca.issue([DOMAIN]), ca.issue([DOMAIN])
    path = tmp_path / "mismatch.pem"
    path.write_bytes(other.key_pem() + good.cert_pem())
    configure(lambda r: r.handshake is None, smtpd_tls_chain_files=str(path))
    mx, sub, smtps = verdicts(pf_stack, trust)
    assert mx.codes == (Code.STARTTLS_REFUSED,) and sub.codes == (Code.STARTTLS_REFUSED,)
    assert smtps.codes[0] in (Code.HANDSHAKE_FAILED, Code.UNREACHABLE)


def test_cafile_completes_a_leaf_only_chain(pf_stack: Stack, trust: Trust,
                                            configure: Callable[..., None]) -> None:
    """Measured fact the audit relies on: with ``smtpd_tls_cert_file = cert.pem`` and the
    intermediate in ``smtpd_tls_CAfile``, Postfix (OpenSSL) still serves the full chain."""
    lin = pf_stack.lineage
    configure(lambda r: r.handshake is not None and len(r.handshake.chain) == 2,
              smtpd_tls_chain_files="", smtpd_tls_cert_file=f"{lin}/cert.pem",
              smtpd_tls_key_file=f"{lin}/privkey.pem", smtpd_tls_CAfile=f"{lin}/chain.pem")
    for v in verdicts(pf_stack, trust):
        assert v.status is Status.OK, v.problems
