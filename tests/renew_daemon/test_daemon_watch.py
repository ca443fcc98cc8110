"""The daemon's jobs in-process (no scheduler running): deploy records, the optional
renew job, a Postfix whose configuration cannot be read, and watchdog health."""

from __future__ import annotations

import dataclasses
import json
import socket
import sys
import urllib.request
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from daemon.renew_daemon.notify import Notifier
from daemon.renew_daemon.state import Check, DeployInfo, Kind
from daemon.renew_daemon.watch import Watcher
from hook import config
from hook.errors import ConfigError
from tests.harness.stack import Stack


@pytest.fixture
def watcher(tmp_path: Path) -> Iterator[tuple[Watcher, list[MutableMapping[str, Any]]]]:
    cfg = config.Config(
        postfix=config.PostfixConfig(config_directory=tmp_path / "no-postfix-here"),
        certbot=config.CertbotConfig(config_dir=tmp_path / "letsencrypt"),
        deploy=config.DeployConfig(state_dir=tmp_path / "state", bundle_dir=tmp_path / "b"),
        daemon=config.DaemonConfig(renew=True, renew_command=(
            sys.executable, "-c", "import sys; print('renewal failed: rate limited'); sys.exit(1)")))
    with capture_logs() as logs:
        w = Watcher(cfg, structlog.get_logger("test"), Notifier({}))
        yield w, logs


def write_record(state_dir: Path, name: str, outcome: str) -> None:
    folder = state_dir / "deploys"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps({
        "time": 1.0, "outcome": outcome, "lineage": "mx.example.org",
        "message": f"{outcome}: key does not match", "new_sha256": "ab" * 32}))


def test_failed_deploy_record_alerts_once_and_history_is_not_news(
        watcher: tuple[Watcher, list[MutableMapping[str, Any]]]) -> None:
    """On the very first run existing records are history (no alert); a new refused
    record afterwards alerts once, schedules a re-probe and marks the deploy failed."""
    w, logs = watcher
    state_dir = w.config.deploy.state_dir
    write_record(state_dir, "20260101T000000Z-1-mx.example.org.json", "rolled_back")
    w.watch()
    assert not [e for e in logs if e["event"] in ("alert", "deploy_record")]
    write_record(state_dir, "20260102T000000Z-2-mx.example.org.json", "refused")
    w.watch()
    (rec,) = [e for e in logs if e["event"] == "deploy_record"]
    assert rec["outcome"] == "refused"
    (alert,) = [e for e in logs if e["event"] == "alert"]
    assert alert["problem"] == "deploy_refused" and alert["deliveries"] == ["none configured"]
    assert w.state.deploys["mx.example.org"].outcome == "refused"
    assert w.scheduler.get_job("reprobe") is not None
    w.watch()
    assert len([e for e in logs if e["event"] == "alert"]) == 1


def test_refusal_is_critical_and_says_when_the_served_certificate_expires(
        watcher: tuple[Watcher, list[MutableMapping[str, Any]]]) -> None:
    """A refused renewal is one critical ``deploy_refused`` check (certbot will not retry:
    nothing heals by itself), whose detail says how long the certificate Postfix still
    serves lasts; its action is to fix what the hook said and re-run it, not a reload."""
    w, _ = watcher
    now = w.clock()
    served = Check(Kind.PROBE, "127.0.0.1:25/starttls", status="ok", lineage="mx.example.org",
                   sha256="cd" * 32, not_before=now - 60 * 86400, not_after=now + 30 * 86400,
                   last_run=now)
    w.state.checks[served.key] = served
    info = DeployInfo(time=now, outcome="refused", new_sha256="ab" * 32, old_sha256="cd" * 32,
                      message="refused: the key does not match the certificate")
    w.state.deploys["mx.example.org"] = info
    w._judge_deploy("mx.example.org", now, info)
    check = w.state.checks["deploy mx.example.org"]
    assert (check.status, check.codes) == ("critical", ("deploy_refused",))
    assert check.detail.startswith("renewal not deployed: refused: the key does not match")
    assert "(30.0 days left)" in check.detail
    assert "postfix-deploy-hook --lineage" in check.action and "postfix reload" not in check.action
    w._judge_deploy("mx.example.org", now + 25 * 86400, info)  # 5 of 90 days left
    assert w.state.checks["deploy mx.example.org"].status == "critical"
    w._judge_deploy("mx.example.org", now + 26 * 86400, None)  # another leaf on disk now
    assert w.state.checks["deploy mx.example.org"].status == "ok"


def test_in_place_refusal_is_critical_at_once(
        watcher: tuple[Watcher, list[MutableMapping[str, Any]]]) -> None:
    """Refused while Postfix reads certbot's files in place (hook exit 7): new smtpd
    processes already load the refused files, so it is critical whatever the old
    certificate's expiry, and the action says to act now and to adopt."""
    w, _ = watcher
    now = w.clock()
    info = DeployInfo(time=now, outcome="refused_in_place", new_sha256="ab" * 32,
                      old_sha256="cd" * 32, message="refused: the key does not match")
    w.state.deploys["mx.example.org"] = info
    w._judge_deploy("mx.example.org", now, info)
    check = w.state.checks["deploy mx.example.org"]
    assert (check.status, check.codes) == ("critical", ("deploy_refused_in_place",))
    assert check.action.startswith("ACT NOW") and "renew-check adopt" in check.action


def test_renew_job_failure_is_alerted(watcher: tuple[Watcher, list[MutableMapping[str, Any]]]) -> None:
    """The optional renew job runs daemon.renew_command; a failure is a critical check
    with the command's output, and it is alerted."""
    w, logs = watcher
    w.renew()
    check = w.state.checks["deploy certbot renew"]
    assert check.status == "critical" and "rate limited" in check.detail
    assert any(e["event"] == "alert" and e["problem"] == "renew_failed" for e in logs)


def test_unreadable_postfix_config_is_a_check_not_a_crash(
        watcher: tuple[Watcher, list[MutableMapping[str, Any]]]) -> None:
    """If postconf fails, the probe job records a critical ``postfix`` check and alerts,
    instead of failing (which would stop the watchdog and restart the daemon in a loop)."""
    w, logs = watcher
    w.probe_all()
    check = w.state.checks["postfix postfix"]
    assert check.kind is Kind.POSTFIX and check.codes == ("postfix_config",)
    assert "no-postfix-here" in check.detail
    assert any(e["event"] == "alert" and e["problem"] == "postfix_config" for e in logs)


def test_watchdog_only_while_healthy(watcher: tuple[Watcher, list[MutableMapping[str, Any]]]) -> None:
    """Health needs a running scheduler, no job stuck past its limit and fewer than
    three failures in a row."""
    w, _ = watcher
    assert not w.healthy()  # scheduler not started
    w.scheduler.start(paused=True)
    try:
        assert w.healthy()
        w.busy_since = w.clock() - 10_000
        assert not w.healthy()
        w.busy_since = None
        w.failures = 3
        assert not w.healthy()
    finally:
        w.scheduler.shutdown(wait=False)


def test_expiry_watch_of_the_real_lineage(stack: Stack) -> None:
    """The expiry job reads the cert.pem of the lineage the private Postfix uses: fresh
    is ok, with a fifth of its lifetime left it warns, and past notAfter it is expired
    (the clock is moved, not the certificate); each check is one ``expiry`` event."""
    cfg = config.load(stack.config_file, {})
    with capture_logs() as logs:
        w = Watcher(cfg, structlog.get_logger("test"), Notifier({}))
        w.check_expiry()
        (event,) = [e for e in logs if e["event"] == "expiry"]
        assert event["lineage"] == "mail.example.test" and event["mode"] == "in_place"
        assert len(event["services"]) == 3
        fresh = w.state.checks["expiry mail.example.test"]
        assert (fresh.status, fresh.codes) == ("ok", ())
        life = fresh.not_after - fresh.not_before
        for at, status, codes in ((fresh.not_after - life / 5, "warning", ("expiring_soon",)),
                                  (fresh.not_after + 86400, "critical", ("expired",))):
            later = Watcher(cfg, structlog.get_logger("test"), Notifier({}),
                            clock=lambda at=at: at)  # type: ignore[misc]
            later.check_expiry()
            check = later.state.checks["expiry mail.example.test"]
            assert (check.status, check.codes) == (status, codes)
        assert "certbot renew --cert-name mail.example.test" in check.action


def test_rsa_and_ecdsa_lineages_on_one_service_are_not_stale(stack: Stack) -> None:
    """Postfix serving an ECDSA and an RSA lineage on the same services (two pairs in
    smtpd_tls_chain_files): each service belongs to both, and the leaf the handshake
    picks is one of them, so nothing is called stale."""
    rsa = stack.certbot.issue(name="mail-rsa", domains=["mail.example.test"], key_type="rsa")
    ec = stack.lineage
    stack.postfix.set_main(smtpd_tls_chain_files=f"{ec}/privkey.pem, {ec}/fullchain.pem, "
                                                 f"{rsa}/privkey.pem, {rsa}/fullchain.pem")
    stack.postfix.reload()
    cfg = config.load(stack.write_config(daemon={"settle_delay": 0.01}), {})
    with capture_logs() as logs:
        w = Watcher(cfg, structlog.get_logger("test"), Notifier({}))
        w.probe_all()
    assert w.discovery is not None
    assert [x.lineage.name for x in w.discovery.lineages] == ["mail-rsa", "mail.example.test"]
    probes = [e for e in logs if e["event"] == "probe"]
    assert len(probes) == 3
    for e in probes:
        assert (e["status"], e["codes"], e["lineage"]) == ("ok", [], "mail-rsa,mail.example.test")
        assert e["leaf_sha256"] in e["expected_sha256"] and len(e["expected_sha256"]) == 2


def test_reload_refuses_a_metrics_port_in_use(
        watcher: tuple[Watcher, list[MutableMapping[str, Any]]]) -> None:
    """A reload whose metrics.listen cannot be bound is refused (ConfigError) and the
    running configuration stays; a free port is taken and serves /metrics."""
    w, _ = watcher
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        bad = dataclasses.replace(w.config, metrics=config.MetricsConfig(listen=f"127.0.0.1:{port}"))
        with pytest.raises(ConfigError, match="cannot listen"):
            w.reload(bad)
        assert w.config.metrics.listen == "" and w.exporter is None
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        w.reload(dataclasses.replace(w.config, metrics=config.MetricsConfig(listen="[::1]:http")))
    good = dataclasses.replace(w.config, metrics=config.MetricsConfig(listen="127.0.0.1:0"))
    w.scheduler.start(paused=True)
    try:
        w.reload(good)
        assert w.exporter is not None and w.config is good
        with urllib.request.urlopen(f"http://127.0.0.1:{w.exporter.port}/metrics", timeout=5):
            pass
    finally:
        if w.exporter:
            w.exporter.close()
        w.scheduler.shutdown(wait=False)


def test_probe_requires_the_names_postfix_presents(stack: Stack) -> None:
    """The served certificate must cover what Postfix presents it for, as the hook
    requires: myhostname (covered here) and ``deploy.names``; a missing MX name is a
    critical ``name_mismatch`` on every service."""
    cfg = config.load(stack.write_config(deploy={"names": ["mx2.example.test"]}), {})
    with capture_logs() as logs:
        w = Watcher(cfg, structlog.get_logger("test"), Notifier({}))
        w.probe_all()
    probes = [e for e in logs if e["event"] == "probe"]
    assert len(probes) == 3
    for e in probes:
        assert (e["status"], e["codes"]) == ("critical", ["name_mismatch"])
        assert "does not cover mx2.example.test" in e["detail"]


def test_undelivered_alert_is_retried_after_a_pause_not_every_cycle(tmp_path: Path) -> None:
    """A sendmail that fails: the alert is logged as failed once, the next cycles within
    RETRY_UNDELIVERED do not try again (the peers job runs every 10 s), and after the
    pause it is tried again."""
    from daemon.renew_daemon.watch import RETRY_UNDELIVERED  # noqa: PLC0415

    cfg = config.Config(
        postfix=config.PostfixConfig(config_directory=tmp_path / "no-postfix-here"),
        deploy=config.DeployConfig(state_dir=tmp_path / "state", bundle_dir=tmp_path / "b"),
        alert=config.AlertConfig(mail_to=("root",), sendmail_command=(
            sys.executable, "-c", "import sys; sys.exit('sendmail: fatal: no way out')")))
    with capture_logs() as logs:
        w = Watcher(cfg, structlog.get_logger("test"), Notifier({}))
        now = w.clock()
        problem = Check(Kind.POSTFIX, "postfix", status="critical", codes=("postfix_unreadable",),
                        detail="postconf failed")
        for at in (now, now + 10, now + 20, now + RETRY_UNDELIVERED - 1):
            w._record(problem, at)
        failed = [e for e in logs if e["event"] == "alert"]
        assert len(failed) == 1 and failed[0]["deliveries"][0].startswith("mail:failed"), failed
        w._record(problem, now + RETRY_UNDELIVERED + 1)
        assert len([e for e in logs if e["event"] == "alert"]) == 2


def test_a_new_state_is_alerted_at_once_after_an_undelivered_alert(tmp_path: Path) -> None:
    """A failed send pauses retries of the same state only: an escalation (warning ->
    critical) and an all-clear a few seconds later are news and are sent at once, not
    after RETRY_UNDELIVERED (the all-clear would otherwise never be sent)."""
    from daemon.renew_daemon.watch import RETRY_UNDELIVERED  # noqa: PLC0415

    flag = tmp_path / "sendmail-fails"
    cfg = config.Config(
        postfix=config.PostfixConfig(config_directory=tmp_path / "no-postfix-here"),
        deploy=config.DeployConfig(state_dir=tmp_path / "state", bundle_dir=tmp_path / "b"),
        alert=config.AlertConfig(mail_to=("root",), sendmail_command=(
            sys.executable, "-c", f"import os, sys; sys.stdin.read(); "
                                  f"os.path.exists({str(flag)!r}) and sys.exit('sendmail: fatal')")))
    with capture_logs() as logs:
        w = Watcher(cfg, structlog.get_logger("test"), Notifier({}))
        now = w.clock()

        def state(status: str, codes: tuple[str, ...]) -> Check:
            return Check(Kind.POSTFIX, "postfix", status=status, codes=codes, detail="postconf")

        day, crit = 86400.0, state("critical", ("postfix_unreadable",))
        w._record(state("warning", ("postfix_slow",)), now)  # delivered
        flag.touch()
        w._record(state("warning", ("postfix_slow",)), now + day)  # the repeat: fails
        w._record(crit, now + day + 10)  # an escalation: tried at once (fails too)
        flag.unlink()
        w._record(crit, now + day + 20)  # the same state: paused
        w._record(crit, now + day + 10 + RETRY_UNDELIVERED)  # retried: delivered
        flag.touch()
        w._record(crit, now + 2 * day + 10 + RETRY_UNDELIVERED)  # the repeat: fails
        flag.unlink()
        w._record(state("ok", ()), now + 2 * day + 20 + RETRY_UNDELIVERED)  # the all-clear
        sent = [(e["reason"], e["deliveries"][0].split()[0]) for e in logs if e["event"] == "alert"]
    assert sent == [("new", "mail:ok"), ("repeat", "mail:failed"), ("new", "mail:failed"),
                    ("new", "mail:ok"), ("repeat", "mail:failed"), ("resolved", "mail:ok")], sent
