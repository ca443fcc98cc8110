"""``renew-check adopt`` on the real stack: RSA + ECDSA lineages side by side stay side by
side, a failed adopt puts every file back, and adopt waits for a running deploy."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import threading
import time

import pytest

from daemon.renew_check import adopt
from hook import config
from hook.certs import lineage
from hook.certs.bundle import fingerprint, parse_chain
from hook.errors import Error
from hook.pipeline import prove
from hook.postfix.instance import postfix_for
from tests.harness.hookbed import served_all
from tests.harness.stack import DOMAIN, Stack


def test_rsa_and_ecdsa_lineages_adopted_side_by_side_and_renewed(stack: Stack) -> None:
    """``smtpd_tls_chain_files`` lists an ECDSA and an RSA lineage: adopting one replaces
    only its two entries (the other lineage's stay, in order), adopting the other too gives
    two bundles; a certbot renewal of the RSA lineage with the hook installed deploys
    (record ``deployed``) and both leaves are proven on all three services."""
    ec_live = stack.lineage
    rsa_live = stack.certbot.issue(name="mail-rsa", domains=[DOMAIN], key_type="rsa")
    pf = stack.postfix
    pf.set_main(smtpd_tls_chain_files=f"{ec_live}/privkey.pem, {ec_live}/fullchain.pem, "
                                      f"{rsa_live}/privkey.pem, {rsa_live}/fullchain.pem")
    pf.reload()
    cfg = config.load(stack.config_file, {})
    ec_bundle, rsa_bundle = (cfg.deploy.bundle_dir / f"{n}.pem" for n in (DOMAIN, "mail-rsa"))

    adopt.adopt(cfg, lineage.resolve(ec_live, cfg.certbot.config_dir))
    assert pf.postconf("-h", "smtpd_tls_chain_files").strip() == \
        f"{ec_bundle}, {rsa_live}/privkey.pem, {rsa_live}/fullchain.pem"
    adopt.adopt(cfg, lineage.resolve(rsa_live, cfg.certbot.config_dir))
    assert pf.postconf("-h", "smtpd_tls_chain_files").strip() == f"{ec_bundle}, {rsa_bundle}"

    old_rsa = (rsa_live / "cert.pem").read_bytes()
    stack.install_hook()
    stack.certbot.renew(name="mail-rsa", env=stack.env())
    assert (rsa_live / "cert.pem").read_bytes() != old_rsa
    record = json.loads(sorted((stack.state_dir / "deploys").glob("*.json"))[-1].read_text())
    assert (record["lineage"], record["outcome"]) == ("mail-rsa", "deployed"), record["message"]
    services = postfix_for(cfg).services()
    for live in (ec_live, rsa_live):
        leaf = parse_chain((live / "cert.pem").read_bytes(), str(live))[0]
        proof = prove.served(services, fingerprint(leaf), cfg, leaf=leaf)
        assert proof.ok, proof.message


def test_adopt_waits_for_the_deploy_lock_and_a_failed_adopt_restores_everything(
        stack: Stack) -> None:
    """adopt holds the deploy lock (it waits while a hook runs); a re-adopt whose reload
    fails restores main.cf and the staged bundle byte for byte (not a new bundle left
    behind with the old main.cf) and Postfix still serves the old leaf."""
    cfg = config.load(stack.config_file, {})
    lin = lineage.resolve(stack.lineage, cfg.certbot.config_dir)
    stack.state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(stack.state_dir / "deploy.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        waiting = threading.Thread(target=adopt.adopt, args=(cfg, lin))
        waiting.start()
        time.sleep(0.5)
        assert waiting.is_alive(), "adopt did not wait for the deploy lock"
    finally:
        os.close(fd)
    waiting.join(60)
    bundle = cfg.deploy.bundle_dir / f"{DOMAIN}.pem"
    main_cf = stack.postfix.config_dir / "main.cf"
    before = {p: p.read_bytes() for p in (bundle, main_cf)}
    old = served_all(stack)

    stack.certbot.renew()  # no hook: the lineage moves on, the bundle does not
    failing = dataclasses.replace(cfg, postfix=dataclasses.replace(
        cfg.postfix, reload_command=("/bin/false",)))
    with pytest.raises(Error, match="'/bin/false' failed"):
        adopt.adopt(failing, lin)
    assert {p: p.read_bytes() for p in before} == before
    assert served_all(stack) == old
