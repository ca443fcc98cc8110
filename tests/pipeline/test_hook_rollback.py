"""Rollback on anything: whatever fails after the hook changed files (a reload that hangs,
an exception inside the proof) restores the previous files, reloads, proves and alerts;
an internal error of the hook itself still sends the alert mail."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hook import pipeline
from hook.certs.bundle import fingerprint, parse_chain
from hook.deploy_hook import cli
from hook.exits import DeployHookExit
from hook.pipeline import prove, rollback
from tests.harness import badcerts as bc
from tests.harness.hookbed import Bed, log_line, run_hook, served_all, staged_bed
from tests.harness.stack import Pebble


@pytest.fixture(scope="module")
def bed(pebble: Pebble) -> Iterator[Bed]:
    """One staged stack for this module; each test leaves the served bundle valid."""
    with staged_bed(pebble) as b:
        yield b


def config_with(bed: Bed, name: str, **postfix: object) -> Path:
    stack = bed.stack
    return stack.write_config(stack.base / name, probe={"cafile": str(stack.base / "cafile.pem")},
                              deploy={"proof_timeout": 8}, postfix=postfix,
                              alert={"mail_to": ["postmaster@example.test"],
                                     "sendmail_command": [str(stack.base / "sendmail")]})


def test_a_hanging_reload_is_killed_and_rolled_back(bed: Bed) -> None:
    """A reload command that hangs (a real ``sleep 999``) is killed after
    ``postfix.command_timeout``; the hook restores the previous bundle, reloads (the second
    reload works), proves the old leaf on every service, exits 4 and mails an alert. The
    hung process is gone."""
    stack = bed.stack
    old_bundle, old = bed.bundle.read_bytes(), served_all(stack)
    flag, pidfile = stack.base / "hung-once", stack.base / "hung.pid"
    script = stack.base / "reload-hangs-once"
    script.write_text(f"#!/bin/sh\nif [ ! -e {flag} ]; then touch {flag}; echo $$ > {pidfile}; "
                      f"exec sleep 999; fi\nexec postfix -c {stack.postfix.config_dir} reload\n")
    script.chmod(0o755)
    cfg = config_with(bed, "hang.toml", reload_command=[str(script)], command_timeout=1)
    chain, key = bed.good_leaf()
    bc.renew_with(stack.lineage, fullchain=chain, privkey=key)
    bed.mailbox.unlink(missing_ok=True)
    start = time.monotonic()
    result = run_hook(stack, config=cfg)
    assert result.returncode == 4, result.stderr
    assert time.monotonic() - start < 20
    assert f"{script} did not finish within 1 s" in result.stderr
    assert "rolled back" in result.stderr and "is served again on 3 service(s)" in result.stderr
    assert bed.bundle.read_bytes() == old_bundle
    assert served_all(stack) == old
    assert not Path(f"/proc/{pidfile.read_text().strip()}").exists(), "the hung reload survived"
    assert "rolled_back" in bed.mailbox.read_text()
    assert log_line(result)["outcome"] == "rolled_back"


def test_an_exception_inside_the_proof_is_rolled_back(
        bed: Bed, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A bug in the proof (the first ``prove.served`` call raises) after the new bundle was
    installed and Postfix reloaded: not a bare exit 1 with unproven files, but a rollback
    (old bundle restored, reloaded, old leaf proven), exit 4, a record and an alert that
    names the exception."""
    stack = bed.stack
    old_bundle, old = bed.bundle.read_bytes(), served_all(stack)
    real = prove.served
    calls: list[int] = []

    def exploding(*args: Any, **kwargs: Any) -> prove.Proof:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("probe bug")
        return real(*args, **kwargs)

    monkeypatch.setattr(prove, "served", exploding)
    chain, key = bed.good_leaf()
    bc.renew_with(stack.lineage, fullchain=chain, privkey=key)
    bed.mailbox.unlink(missing_ok=True)
    rc = cli.main(["--config", str(stack.config_file), "--lineage", str(stack.lineage)], environ={})
    err = capsys.readouterr().err
    assert rc == DeployHookExit.ROLLED_BACK, err
    assert "unexpected RuntimeError: probe bug" in err and "rolled back" in err
    assert bed.bundle.read_bytes() == old_bundle
    assert served_all(stack) == old
    assert "probe bug" in bed.mailbox.read_text()
    new = fingerprint(parse_chain(chain, "chain")[0])
    record = sorted((stack.state_dir / "deploys").glob("*.json"))[-1].read_text()
    assert '"outcome": "rolled_back"' in record and new in record


def test_an_internal_error_still_sends_the_alert(
        bed: Bed, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """An unexpected exception in the hook itself (here: the pipeline raises) exits 1, says
    so on stderr and mails the configured address, naming the lineage and the error."""
    def broken(*args: Any, **kwargs: Any) -> pipeline.Report:
        raise RuntimeError("pipeline bug")

    monkeypatch.setattr(pipeline, "run", broken)
    bed.mailbox.unlink(missing_ok=True)
    rc = cli.main(["--config", str(bed.stack.config_file), "--lineage", str(bed.stack.lineage)],
                  environ={})
    assert rc == DeployHookExit.INTERNAL
    assert "internal error: RuntimeError: pipeline bug" in capsys.readouterr().err
    mail = bed.mailbox.read_text()
    assert "internal error" in mail and "pipeline bug" in mail and "mail.example.test" in mail


def test_a_failing_group_lookup_in_the_rollback_is_reported_not_raised(
        bed: Bed, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The rollback's ``deploy.group`` lookup (NSS) fails after the new bundle was written
    and the reload failed: the outcome is rollback_failed (exit 5, record, alert), not an
    exception escaping the pipeline as an internal error (exit 1) with no record."""
    stack = bed.stack

    def no_nss(*args: Any, **kwargs: Any) -> int | None:
        raise KeyError("getgrnam(): name not found: 'mail'")

    monkeypatch.setattr(rollback, "group_id", no_nss)
    cfg = config_with(bed, "gid-lookup.toml", reload_command=["false"])
    chain, key = bed.good_leaf()
    bc.renew_with(stack.lineage, fullchain=chain, privkey=key)
    bed.mailbox.unlink(missing_ok=True)
    try:
        rc = cli.main(["--config", str(cfg), "--lineage", str(stack.lineage)], environ={})
        err = capsys.readouterr().err
        assert rc == DeployHookExit.ROLLBACK_FAILED, err
        assert "rollback failed too: unexpected KeyError" in err, err
        assert "rollback_failed" in bed.mailbox.read_text()
        record = sorted((stack.state_dir / "deploys").glob("*.json"))[-1].read_text()
        assert '"outcome": "rollback_failed"' in record
    finally:  # the new bundle stays installed: Postfix serves it from now on
        stack.postfix.postfix("reload")
