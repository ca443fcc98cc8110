"""The real ``renew-daemon`` process against the real private Postfix, with a real
NOTIFY_SOCKET: readiness, watchdog, status, re-probe after a certbot renewal, alert mail
delivered by the private Postfix, metrics, SIGHUP with a broken config, SIGTERM, and a
renewal the deploy hook refused (one deploy check, no stale)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.renew_check import cli as check
from hook.certs.bundle import fingerprint, parse_chain
from tests.harness import badcerts as bc
from tests.harness.daemon import NotifySocket, running_daemon
from tests.harness.hookbed import log_line, run_hook, staged_bed
from tests.harness.stack import VENV_BIN, Pebble, Stack, wait_until


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in an exposition, read with prometheus_client's parser."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None

FAST: dict[str, object] = {"probe_interval": 30, "expiry_interval": 30, "watch_interval": 0.2,
        "settle_delay": 0.5, "jitter": 0.01}


def disk_sha256(stack: Stack) -> str:
    return fingerprint(parse_chain((stack.lineage / "cert.pem").read_bytes(), "cert.pem")[0])


def labels(stack: Stack) -> set[str]:
    pf = stack.postfix
    return {f"127.0.0.1:{pf.smtp_port}/starttls", f"127.0.0.1:{pf.submission_port}/starttls",
            f"127.0.0.1:{pf.smtps_port}/tls"}


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


def test_notify_renewal_reprobe_sighup_sigterm(stack: Stack, notify: NotifySocket) -> None:
    """READY/WATCHDOG/STATUS reach the notify socket; after a certbot renewal with the
    hook installed, the deploy record triggers a re-probe of every service that reports
    the new fingerprint; SIGHUP with a broken config keeps the daemon running on the old
    one, a fixed config is then taken and re-probed; SIGTERM sends STOPPING=1 and exits 0 within seconds."""
    assert check.main(["--config", str(stack.config_file), "adopt", str(stack.lineage)]) == 0
    stack.install_hook()
    cfg = stack.write_config(daemon=FAST)
    old = disk_sha256(stack)
    with running_daemon(cfg, notify, watchdog_usec=600_000) as d:
        ready = notify.wait_for("READY", timeout=30)[0]
        assert "3/3 TLS services ok" in ready["STATUS"]
        assert notify.with_key("EXTEND_TIMEOUT_USEC")  # asked for time during the first check
        notify.wait_for("WATCHDOG", count=3, timeout=10)
        first = [e for e in d.named("probe") if e["trigger"] == "start"]
        assert {e["service"] for e in first} == labels(stack)
        assert {e["leaf_sha256"] for e in first} == {old}

        mark = len(d.events)
        stack.certbot.renew(env=stack.env())
        new = disk_sha256(stack)
        assert new != old
        rec = d.wait_event("deploy_record", after=mark, timeout=30)
        assert (rec["outcome"], rec["new_sha256"]) == ("deployed", new)
        seen: dict[str, str] = {}
        deadline = time.monotonic() + 30
        while set(seen) != labels(stack) and time.monotonic() < deadline:
            for e in d.named("probe"):
                if e["trigger"] == "deploy_record":
                    seen[e["service"]] = e["leaf_sha256"]
            time.sleep(0.1)
        assert seen == dict.fromkeys(labels(stack), new)

        cfg.write_text("[daemon]\nprobe_interval = 'soon'\n")
        mark = len(d.events)
        d.signal(signal.SIGHUP)
        refused = d.wait_event("reload", after=mark, timeout=10)
        assert refused["ok"] is False and "daemon.probe_interval" in refused["error"]
        time.sleep(1.0)
        assert d.proc.poll() is None
        before = len(notify.with_key("WATCHDOG"))
        wait_until("watchdog pings after the refused reload",
                   lambda: len(notify.with_key("WATCHDOG")) > before + 1, 5)
        stack.write_config(daemon=FAST)
        mark = len(d.events)
        d.signal(signal.SIGHUP)
        assert d.wait_event("reload", after=mark, timeout=10)["ok"] is True
        d.wait_event("probe", lambda e: e["trigger"] == "reload", after=mark, timeout=10)

        start = time.monotonic()
        assert d.stop() == 0
        assert time.monotonic() - start < 5
    assert notify.with_key("STOPPING")
    assert any(e["event"] == "stopped" for e in d.events)


def mailbox(stack: Stack) -> Path:
    return stack.postfix.mailbox_dir / "root"


def unfolded(path: Path) -> str:
    """The mailbox with folded header lines joined (a long Subject: goes on two lines)."""
    return re.sub(r"\r?\n[ \t]+", " ", path.read_text())


def test_stale_cert_alert_mail_metrics_and_quiet_restart(stack: Stack, notify: NotifySocket) -> None:
    """A renewal whose hook is not installed leaves Postfix serving the old certificate:
    the daemon notices cert.pem changed, re-probes, reports ``stale``, mails an alert that
    the private Postfix delivers to a local mailbox (one mail naming host, lineage, the
    three services, problem and what to do: run the hook, as the lineage is staged and a
    reload would serve the old bundle again) and exports it in the metrics file. A
    restart with the same state directory does not send it again; running the hook by
    hand then sends one all-clear mail."""
    assert check.main(["--config", str(stack.config_file), "adopt", str(stack.lineage)]) == 0
    prom = stack.base / "metrics" / "postfix_certwatch.prom"
    prom.parent.mkdir()
    pf = stack.postfix
    cfg = stack.write_config(
        daemon=FAST,
        alert={"mail_to": ["root@localhost"], "mail_from": "certwatch@localhost",
               "sendmail_command": ["/usr/sbin/sendmail", "-C", str(pf.config_dir), "-i"]},
        metrics={"textfile": str(prom)})
    with running_daemon(cfg, notify) as d:
        notify.wait_for("READY", timeout=30)
        stack.certbot.renew()  # no hook: the bundle Postfix reads stays the old one
        d.wait_event("cert_changed", timeout=10)
        d.wait_event("probe", lambda e: e["trigger"] == "cert_changed", timeout=10)
        alert = d.wait_event("alert", lambda e: "stale" in e["problem"], timeout=30)
        assert alert["reason"] == "new" and alert["deliveries"][0].startswith("mail:ok")
        assert {f"probe {label}" for label in labels(stack)} <= set(alert["checks"])
        wait_until("alert mail in the local mailbox", lambda: mailbox(stack).exists()
                   and "stale" in mailbox(stack).read_text(), 20)
        text = mailbox(stack).read_text()
        assert "Subject: [postfix-certwatch] CRITICAL" in text
        for needle in ("lineage:   mail.example.test", f"127.0.0.1:{pf.smtp_port}/starttls",
                       "problem:   stale", "What to do: the deploy hook has not deployed",
                       f"run 'postfix-deploy-hook --lineage {stack.lineage}'"):
            assert needle in text, text
        wait_until("stale in the metrics file",
                   lambda: 'code="stale"' in prom.read_text(), 10)
        assert sample(prom.read_text(), "postfix_certwatch_check_status", check="probe",
                      subject=f"127.0.0.1:{pf.smtp_port}/starttls",
                      lineage="mail.example.test") == 2
        assert d.stop() == 0
    assert len(d.named("alert")) == 1  # one mail for the three services
    with running_daemon(cfg, notify) as again:
        again.wait_event("ready", timeout=30)
        again.wait_event("check", lambda e: e["ok"] == 0, timeout=10)
        assert again.named("alert") == []
        # the admin runs the hook by hand: its record triggers a re-probe, all clear
        hook = subprocess.run([str(VENV_BIN / "postfix-deploy-hook"), "--lineage",
                               str(stack.lineage)], env={**os.environ, **stack.env()},
                              capture_output=True, text=True, check=False, timeout=60)
        assert hook.returncode == 0, hook.stdout + hook.stderr
        again.wait_event("deploy_record", timeout=10)
        again.wait_event("check", lambda e: e["trigger"] == "deploy_record" and e["ok"] == 3,
                         timeout=10)
        # the alert event follows the check event once the mail is handed to sendmail
        resolved = again.wait_event("alert", lambda e: e["reason"] == "resolved", timeout=20)
        assert len(resolved["checks"]) == 3 and len(again.named("alert")) == 1
    wait_until("the all-clear mail", lambda: "resolved: 3 checks ok again" in unfolded(
        mailbox(stack)), 20)


def test_refused_renewal_is_one_deploy_check_not_stale(pebble: Pebble,
                                                       notify: NotifySocket) -> None:
    """Staged mode: a renewal whose key does not match its certificate is refused by the
    hook, so Postfix rightly keeps serving the previous certificate. The daemon expects
    that leaf (no ``stale``, no "postfix reload" advice, also once ``settle_delay`` has
    passed) and raises one ``deploy_refused`` check for the lineage, critical, naming the
    hook's message and the command to re-run, alerted once; the metric shows it."""
    settle = 2.0
    with staged_bed(pebble, daemon={**FAST, "settle_delay": settle}) as bed:
        stack = bed.stack
        prom = stack.base / "certwatch.prom"
        cfg = stack.write_config(  # staged_bed's sections, plus metrics
            probe={"cafile": str(stack.base / "cafile.pem")},
            alert={"mail_to": ["postmaster@example.test"],
                   "sendmail_command": [str(stack.base / "sendmail")]},
            daemon={**FAST, "settle_delay": settle}, metrics={"textfile": str(prom)})
        with running_daemon(cfg, notify) as d:
            notify.wait_for("READY", timeout=30)
            chain, _ = bed.good_leaf()
            bc.renew_with(stack.lineage, fullchain=chain, privkey=bc.key_pem(bc.ec_key()))
            renewed = time.monotonic()
            hook = run_hook(stack)
            assert log_line(hook)["outcome"] == "refused", hook.stdout + hook.stderr
            d.wait_event("deploy_record", lambda e: e["outcome"] == "refused", timeout=10)
            d.wait_event("check", lambda e: e["trigger"] == "deploy_record", timeout=10)
            time.sleep(max(0.0, renewed + settle + 0.5 - time.monotonic()))
            mark = len(d.events)
            d.signal(signal.SIGHUP)  # a probe cycle after the settle delay
            d.wait_event("check", lambda e: e["trigger"] == "reload", after=mark, timeout=10)
            alert = d.wait_event("alert", timeout=10)
            wait_until("deploy_failed in the metrics file", lambda: prom.exists() and sample(
                prom.read_text(), "postfix_certwatch_deploy_failed", lineage="mail.example.test")
                == 1, 10)
            assert d.stop() == 0
        probes = [e for e in d.named("probe") if e["trigger"] in ("deploy_record", "reload")]
        assert len(probes) == 6
        for e in probes:
            assert (e["status"], e["codes"], e["leaf_sha256"]) == ("ok", [], bed.served), e
            assert e["expected_sha256"] == [bed.served]
        assert not [e for e in d.named("probe") if "stale" in e["codes"]]
        assert d.named("alert") == [alert]
        assert (alert["problem"], alert["status"], alert["checks"]) == (
            "deploy_refused", "critical", ["deploy mail.example.test"])
        text = bed.mailbox.read_text().split("ARGS: ")[-1]  # the daemon's mail, after the hook's
        assert "renewal not deployed: refused:" in text and "does not match" in text, text
        assert f"postfix-deploy-hook --lineage {stack.lineage}" in text
        assert "postfix reload" not in text
