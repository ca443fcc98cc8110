"""The deploy proof on the real private Postfix, including RSA + ECDSA side by side."""

from __future__ import annotations

import dataclasses

from hook import config as config_mod
from hook.certs.bundle import fingerprint, parse_chain
from hook.pipeline import prove
from hook.postfix.instance import postfix_for
from tests.harness.stack import Stack


def test_rsa_and_ecdsa_leaves_served_side_by_side_are_each_provable(stack: Stack) -> None:
    """With an ECDSA and an RSA pair in smtpd_tls_chain_files, a default handshake only
    ever shows the ECDSA leaf; the proof asks for the key type it expects, so an RSA
    renewal can be proven too (on all three services, STARTTLS and implicit TLS)."""
    ec_live = stack.lineage
    rsa_live = stack.certbot.issue(name="mail-rsa", domains=["mail.example.test"], key_type="rsa")
    stack.postfix.set_main(smtpd_tls_chain_files=(
        f"{ec_live}/privkey.pem, {ec_live}/fullchain.pem, "
        f"{rsa_live}/privkey.pem, {rsa_live}/fullchain.pem"))
    stack.postfix.reload()
    cfg = config_mod.load(stack.config_file, {})
    services = postfix_for(cfg).services()
    assert len(services) == 3
    leaves = {name: parse_chain((live / "cert.pem").read_bytes(), name)[0]
              for name, live in (("ec", ec_live), ("rsa", rsa_live))}
    for leaf in leaves.values():
        proof = prove.served(services, fingerprint(leaf), cfg, leaf=leaf)
        assert proof.ok, proof.message

    quick = dataclasses.replace(cfg, deploy=dataclasses.replace(cfg.deploy, proof_timeout=1.0))
    blind = prove.served(services, fingerprint(leaves["rsa"]), quick)
    assert not blind.ok  # what the proof saw before it asked for the key type
    assert fingerprint(leaves["ec"])[:16] in blind.message
