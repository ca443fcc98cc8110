"""The DANE gate inside the deploy hook: certbot renews, the hook refuses, Postfix keeps
serving the old certificate; after the printed record is published, the hook deploys.

Skipped until the integrator wires :func:`hook.dane.check_before_deploy` into
:func:`hook.deploy.run` (after validate, before apply); then delete ``pytestmark``.
"""

from __future__ import annotations

import json

import pytest

from hook import dane
from hook.bundle import fingerprint, parse_chain
from hook.cli import main as hook_main
from hook.probe import Target, probe
from tests.harness.dns import DnsStack
from tests.harness.stack import DOMAIN, LO, Stack

pytestmark = pytest.mark.skip(reason="issue 6 integration: wire hook.dane into hook.deploy first")

OWNER = f"_25._tcp.{DOMAIN}"


def served(stack: Stack) -> list[str]:
    pf = stack.postfix
    out = []
    for port, implicit in ((pf.smtp_port, False), (pf.submission_port, False), (pf.smtps_port, True)):
        res = probe(Target(LO, port, implicit_tls=implicit), timeout=5)
        assert res.handshake is not None, res.detail
        out.append(fingerprint(res.handshake.leaf))
    return out


def test_renewal_with_new_key_is_refused_and_old_cert_still_served(stack: Stack, dns_stack: DnsStack) -> None:
    """3 1 1 published for the current key, certbot renews with a new key and runs the hook:
    the deploy is refused (record 'refused' with the TLSA line to publish), all three
    services still serve the old leaf. Once that line is published, running the hook again
    deploys the new leaf."""
    from daemon import check  # noqa: PLC0415

    stack.write_config(dns={"resolver": LO, "resolver_port": dns_stack.resolver_port, "timeout": 2,
                            "dane": "refuse"})
    assert check.main(["--config", str(stack.config_file), "adopt", str(stack.lineage)]) == 0
    old_chain = parse_chain((stack.lineage / "fullchain.pem").read_bytes(), "fullchain.pem")
    dns_stack.set_rrset(OWNER, "TLSA", [str(dane.tlsa(old_chain[0], 3, 1, 1))])
    old = fingerprint(old_chain[0])
    assert served(stack) == [old] * 3

    stack.install_hook()
    stack.certbot.renew(env=stack.env())
    new_chain = parse_chain((stack.lineage / "fullchain.pem").read_bytes(), "fullchain.pem")
    assert fingerprint(new_chain[0]) != old
    assert served(stack) == [old] * 3
    records = sorted((stack.state_dir / "deploys").glob("*.json"))
    record = json.loads(records[-1].read_text())
    assert record["outcome"] == "refused"
    line = f"{OWNER}. IN TLSA 3 1 1 {dane.tlsa(new_chain[0], 3, 1, 1).data.hex()}"
    assert line in record["message"]

    dns_stack.set_rrset(OWNER, "TLSA", [str(dane.tlsa(old_chain[0], 3, 1, 1)),
                                        str(dane.tlsa(new_chain[0], 3, 1, 1))])
    rc = hook_main(["--config", str(stack.config_file), "--lineage", str(stack.lineage)])
    assert rc == 0
    assert served(stack) == [fingerprint(new_chain[0])] * 3
