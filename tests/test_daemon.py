"""The real ``renew-daemon`` process against the real private Postfix, with a real
NOTIFY_SOCKET: readiness, watchdog, status, re-probe after a certbot renewal, alert mail
delivered by the private Postfix, metrics, SIGHUP with a broken config, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon import check
from hook.bundle import fingerprint, parse_chain
from tests.harness.daemon import NotifySocket, running_daemon
from tests.harness.stack import VENV_BIN, Stack, wait_until

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


def test_stale_cert_alert_mail_metrics_and_quiet_restart(stack: Stack, notify: NotifySocket) -> None:
    """A renewal whose hook is not installed leaves Postfix serving the old certificate:
    the daemon notices cert.pem changed, re-probes, reports ``stale``, mails an alert that
    the private Postfix delivers to a local mailbox (one mail naming host, lineage, the
    three services, problem and what to do) and exports it in the metrics file. A
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
                       "problem:   stale", "What to do: postfix reload"):
            assert needle in text, text
        wait_until("stale in the metrics file",
                   lambda: 'code="stale"' in prom.read_text(), 10)
        metrics = prom.read_text()
        assert (f'postfix_certwatch_check_status{{check="probe",subject="127.0.0.1:{pf.smtp_port}'
                f'/starttls",lineage="mail.example.test"}} 2') in metrics
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
    wait_until("the all-clear mail", lambda: "resolved: 3 checks ok again" in mailbox(stack)
               .read_text(), 20)
