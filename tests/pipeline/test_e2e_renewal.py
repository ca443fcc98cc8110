"""The walking skeleton end to end: certbot renews on pebble, our hook deploys to Postfix."""

from __future__ import annotations

import json
import stat

from daemon.renew_check import cli as check
from hook.certs.bundle import fingerprint, parse_chain
from tests.harness.hookbed import served_all
from tests.harness.stack import Stack


def disk_sha256(stack: Stack) -> str:
    return fingerprint(parse_chain((stack.lineage / "cert.pem").read_bytes(), "cert.pem")[0])


def test_certbot_renewal_runs_hook_and_postfix_serves_new_leaf(stack: Stack) -> None:
    """A forced certbot renewal runs the installed hook, which stages the new bundle,
    reloads Postfix and proves it: all three TLS services serve the new cert.pem."""
    cfg = str(stack.config_file)
    assert check.main(["--config", cfg, "adopt", str(stack.lineage)]) == 0
    old = disk_sha256(stack)
    assert served_all(stack) == [old] * 3

    stack.install_hook()
    result = stack.certbot.renew(env=stack.env())
    assert "Hook 'deploy-hook' ran with error output" not in result.stderr, result.stderr

    new = disk_sha256(stack)
    assert new != old
    assert served_all(stack) == [new] * 3

    bundle = stack.bundle_dir / "mail.example.test.pem"
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    assert fingerprint(parse_chain(bundle.read_bytes(), str(bundle))[0]) == new
    records = sorted((stack.state_dir / "deploys").glob("*.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["outcome"] == "deployed"
    assert (record["old_sha256"], record["new_sha256"]) == (old, new)
    assert "PRIVATE KEY" not in records[0].read_text()
