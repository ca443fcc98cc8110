"""The judge without a network: thresholds over Let's Encrypt lifetimes, roles and the
severity of deep-check findings, stale detection, and failures as verdicts."""

from __future__ import annotations

import datetime as dt

import pytest

from hook.certs.bundle import fingerprint
from hook.certs.validate import Trust
from hook.tls.judgement import Role, Thresholds, expiry_problems, judge, role_for
from hook.tls.starttls import DeepResult, Extra, Failure, Handshake, ProbeResult, Target
from hook.verdict import Code, Status
from tests.harness.minica import MiniCA

NOW = dt.datetime.now(dt.UTC)


def status_at(lifetime_days: float, days_left: float, t: Thresholds | None = None) -> Status:
    not_after = NOW + dt.timedelta(days=days_left)
    not_before = not_after - dt.timedelta(days=lifetime_days)
    found = expiry_problems(not_before, not_after, NOW, t or Thresholds(), "x")
    return found[0].status if found else Status.OK


@pytest.mark.parametrize(("lifetime", "ok_at", "warn_at", "crit_at"), [
    (90, 30.0, 22.0, 8.9),   # certbot renews at 30 days left
    (64, 21.4, 15.9, 6.3),
    (45, 15.0, 11.2, 4.4),
    (6, 2.0, 1.4, 0.99),     # 6-day certificates: the 1-day floor decides critical
])
def test_thresholds_follow_the_lifetime(lifetime: float, ok_at: float, warn_at: float,
                                        crit_at: float) -> None:
    """At certbot's renewal point (1/3 left) every lifetime is still OK; below 1/4 it
    warns, below 1/10 (or the 1-day floor) it is critical."""
    assert status_at(lifetime, ok_at) is Status.OK
    assert status_at(lifetime, warn_at) is Status.WARNING
    assert status_at(lifetime, crit_at) is Status.CRITICAL


def test_six_day_certificate_is_never_in_permanent_warning() -> None:
    """A floor larger than a short lifetime's renewal window is capped: a fresh 6-day
    certificate is OK even with a 7-day warning floor configured."""
    t = Thresholds(warning_days=7, critical_days=2)
    assert status_at(6, 5.9, t) is Status.OK
    assert status_at(6, 2.01, t) is Status.OK
    assert t.limits(6) == pytest.approx((1.5, 1.0))


def test_floor_applies_to_long_lifetimes_only_when_larger() -> None:
    """For 90 days the fractions dominate (22.5 / 9 days); the floors don't lower them."""
    assert Thresholds().limits(90) == pytest.approx((22.5, 9.0))


@pytest.mark.parametrize(("target", "level", "role"), [
    (Target("h", 25), "", Role.MX),
    (Target("h", 587), "", Role.SUBMISSION),
    (Target("h", 465, implicit_tls=True), "", Role.SUBMISSIONS),
    (Target("h", 2525), "may", Role.MX),
    (Target("h", 2587), "encrypt", Role.SUBMISSION),
])
def test_role_for(target: Target, level: str, role: Role) -> None:
    """Roles come from implicit TLS, the port, or the Postfix security level."""
    assert role_for(target, level) is role


def _result(chain: tuple[object, ...], port: int = 25) -> ProbeResult:
    hs = Handshake(chain=chain, protocol="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256",  # type: ignore[arg-type]
                   starttls_advertised=True)
    return ProbeResult(Target("127.0.0.1", port), hs, None, "", 0.004)


def test_deep_findings_warn_on_mx_and_are_critical_on_submission() -> None:
    """The same anonymous cipher and TLS 1.0 are a warning on port 25 and critical on
    submission; each problem carries the postconf fix."""
    ca = MiniCA()
    leaf = ca.issue(["mail.example.test"])
    trust = Trust((ca.root,), ("test",))
    deep = DeepResult(Target("127.0.0.1", 25),
                      ((Extra.ANONYMOUS, "TLSv1.2 AECDH-AES256-SHA"), (Extra.TLS1, "TLSv1 x")),
                      (Extra.TLS1_1,), (), None, 0.01)
    for role, status in ((Role.MX, Status.WARNING), (Role.SUBMISSION, Status.CRITICAL)):
        v = judge(_result((leaf.cert, *leaf.chain)), trust=trust, now=NOW, deep=deep, role=role,
                  names=["mail.example.test"])
        assert v.status is status
        assert {p.code for p in v.problems} == {Code.ANONYMOUS_CIPHERS, Code.WEAK_PROTOCOL}
        assert all(p.fix.startswith("postconf -e") for p in v.problems)
        weak = next(p for p in v.problems if p.code is Code.WEAK_PROTOCOL)
        assert "TLSv1 " in weak.detail and "TLSv1.1" not in weak.detail


def test_stale_accepts_any_expected_leaf() -> None:
    """With an RSA and an ECDSA certificate on disk either served leaf is current; a
    third one is stale."""
    ca = MiniCA()
    a, b, c = (ca.issue(["mail.example.test"]) for _ in range(3))
    trust = Trust((ca.root,), ("test",))
    want = [fingerprint(a.cert), fingerprint(b.cert)]
    ok = judge(_result((b.cert, *b.chain)), trust=trust, now=NOW, expected=want)
    assert ok.status is Status.OK
    stale = judge(_result((c.cert, *c.chain)), trust=trust, now=NOW, expected=want)
    assert stale.codes == (Code.STALE,)


def test_untrusted_is_distinct_from_missing_intermediate() -> None:
    """A chain from an unknown CA is ``untrusted``; the same leaf served without its
    intermediate, from a CA we trust, is ``missing_intermediate``."""
    ca, other = MiniCA(), MiniCA("other")
    leaf = ca.issue(["mail.example.test"])
    assert judge(_result((leaf.cert, *leaf.chain)), trust=Trust((other.root,), ("x",)),
                 now=NOW).codes == (Code.UNTRUSTED,)
    assert judge(_result((leaf.cert,)), trust=Trust((ca.root,), ("x",)),
                 now=NOW).codes == (Code.MISSING_INTERMEDIATE,)


@pytest.mark.parametrize(("failure", "status"), [
    (Failure.BUSY, Status.WARNING), (Failure.TIMEOUT, Status.CRITICAL),
    (Failure.NO_STARTTLS, Status.CRITICAL), (Failure.PROTOCOL_ERROR, Status.CRITICAL),
])
def test_failures_are_verdicts(failure: Failure, status: Status) -> None:
    """A failed probe becomes a verdict with the failure's code (busy only warns)."""
    v = judge(ProbeResult(Target("h", 25), None, failure, "why", 1.0),
              trust=Trust((), ()), now=NOW)
    assert v.codes == (Code(failure.value),) and v.status is status
