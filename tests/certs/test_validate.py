"""The chain validator (cryptography's x509 verification) on the cases that trip peers."""

from __future__ import annotations

import datetime as dt

from hook.certs.validate import Trust, check_chain
from hook.verdict import Code
from tests.harness.minica import MiniCA

NOW = dt.datetime.now(dt.UTC)


def codes(chain: tuple[object, ...], trust: Trust, names: list[str]) -> list[Code]:
    return [p.code for p in check_chain(chain, trust=trust, now=NOW, names=names)]  # type: ignore[arg-type]


def test_wildcard_first_certificate_is_trusted_and_matches_one_label() -> None:
    """A leaf whose first SAN is a wildcard validates (no crash on ``*.`` as verifier
    subject); it covers one label, not two."""
    ca = MiniCA()
    trust = Trust((ca.root,), ("test",))
    leaf = ca.issue(["*.example.test"])
    chain = (leaf.cert, *leaf.chain)
    assert codes(chain, trust, ["mail.example.test"]) == []
    assert codes(chain, trust, ["a.b.example.test"]) == [Code.NAME_MISMATCH]


def test_names_compare_case_and_trailing_dot_insensitively() -> None:
    """``MAIL.example.test.`` (as in a DNS zone or myhostname) matches mail.example.test."""
    ca = MiniCA()
    leaf = ca.issue(["mail.example.test"])
    assert codes((leaf.cert, *leaf.chain), Trust((ca.root,), ("t",)), ["MAIL.example.test."]) == []


def test_expired_leaf_is_expired_not_untrusted() -> None:
    """Trust is judged inside the leaf's own validity window, so an expired certificate
    from a trusted CA is reported as ``expired`` only."""
    ca = MiniCA()
    leaf = ca.issue(["mail.example.test"], days=-3)
    assert codes((leaf.cert, *leaf.chain), Trust((ca.root,), ("t",)), ["mail.example.test"]) == \
        [Code.EXPIRED]


def test_self_signed_missing_intermediate_untrusted_are_distinct() -> None:
    """Three different failures, three different codes (peers say 'untrusted' for all)."""
    ca, other = MiniCA(), MiniCA("other")
    trust = Trust((ca.root,), ("t",))
    ss = ca.issue(["mail.example.test"], self_signed=True)
    good = ca.issue(["mail.example.test"])
    foreign = other.issue(["mail.example.test"])
    assert codes((ss.cert,), trust, []) == [Code.SELF_SIGNED]
    assert codes((good.cert,), trust, []) == [Code.MISSING_INTERMEDIATE]
    assert codes((foreign.cert, *foreign.chain), trust, []) == [Code.UNTRUSTED]
