"""The daemon's pure parts: when to alert, what state survives a restart, sd_notify."""

from __future__ import annotations

import json
import os
import socket
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest

from daemon.renew_daemon import policy, state
from daemon.renew_daemon.notify import Notifier, watchdog_interval
from daemon.renew_daemon.state import Check, Kind
from daemon.renew_daemon.watch import status_line

HOUR = 3600.0


def probe_check(status: str = "critical", codes: tuple[str, ...] = ("stale",), **kw: object) -> Check:
    base = Check(Kind.PROBE, "127.0.0.1:25/starttls", status=status, codes=codes,
                 detail="serves abc, disk has def", action="reload Postfix",
                 lineage="mx.example.org", last_run=1000.0)
    return replace(base, **kw)  # type: ignore[arg-type]


def test_alert_on_change_repeat_while_persisting_and_resolve_once() -> None:
    """ok -> problem alerts at once; the same problem is quiet until repeat_interval, then
    repeats; other codes alert at once; ok again sends one all-clear, then nothing."""
    ok, reason = policy.advance(None, probe_check("ok", ()), 0.0, 24 * HOUR)
    assert reason is None
    bad, reason = policy.advance(ok, probe_check(), 10.0, 24 * HOUR)
    assert reason is policy.Reason.NEW and bad.since == 10.0
    bad = replace(bad, last_alert=10.0)
    again, reason = policy.advance(bad, probe_check(), 5 * HOUR, 24 * HOUR)
    assert reason is None and again.since == 10.0 and again.last_alert == 10.0
    later, reason = policy.advance(again, probe_check(), 25 * HOUR, 24 * HOUR)
    assert reason is policy.Reason.REPEAT
    other, reason = policy.advance(replace(later, last_alert=25 * HOUR),
                                   probe_check(codes=("stale", "expiring_soon")), 26 * HOUR,
                                   24 * HOUR)
    assert reason is policy.Reason.NEW and other.last_alert == 0.0
    fixed, reason = policy.advance(replace(other, last_alert=26 * HOUR), probe_check("ok", ()),
                                   27 * HOUR, 24 * HOUR)
    assert reason is policy.Reason.RESOLVED
    _, reason = policy.advance(fixed, probe_check("ok", ()), 28 * HOUR, 24 * HOUR)
    assert reason is None


def test_undelivered_alert_is_retried_and_unalerted_recovery_is_quiet() -> None:
    """If no channel took the alert (last_alert stays 0) the next result retries it; a
    problem that was never alerted recovers without an all-clear."""
    bad, _ = policy.advance(None, probe_check(), 0.0, 24 * HOUR)
    _, reason = policy.advance(bad, probe_check(), 60.0, 24 * HOUR)
    assert reason is policy.Reason.NEW
    _, reason = policy.advance(bad, probe_check("ok", ()), 120.0, 24 * HOUR)
    assert reason is None


def test_last_certificate_survives_a_failed_probe() -> None:
    """An unreachable service keeps the expiry of the last certificate it served (its
    metrics do not vanish), and the time of its last successful probe."""
    good = probe_check("ok", (), sha256="ab" * 32, not_before=0.0, not_after=9e9, last_ok=1000.0)
    down = probe_check("critical", ("unreachable",), last_run=2000.0, last_ok=0.0)
    merged, reason = policy.advance(good, down, 2000.0, HOUR)
    assert reason is policy.Reason.NEW
    assert (merged.sha256, merged.not_after, merged.last_ok) == ("ab" * 32, 9e9, 1000.0)


def test_alert_names_host_lineage_service_problem_and_fix() -> None:
    """The alert built for a check carries everything an admin needs to act."""
    alert = policy.alert_for(probe_check(), policy.Reason.NEW, host="mx1.example.org")
    body = alert.body()
    for needle in ("mx1.example.org", "mx.example.org", "127.0.0.1:25/starttls", "stale",
                   "What to do: reload Postfix"):
        assert needle in body or needle in alert.subject()
    assert alert.subject().startswith("[postfix-certwatch] CRITICAL mx1.example.org:")
    resolved = policy.alert_for(probe_check(), policy.Reason.RESOLVED, host="mx1")
    assert resolved.severity == "resolved" and "ok again" in resolved.summary


def test_state_round_trip_and_corrupt_file_set_aside(tmp_path: Path) -> None:
    """State is saved atomically and loads back equal; a corrupt file is moved aside and
    the daemon starts afresh instead of refusing to run."""
    st = state.State()
    c = probe_check(last_alert=5.0)
    st.checks[c.key] = c
    st.deploys["mx.example.org"] = state.DeployInfo(time=1.0, outcome="deployed", last_success=1.0)
    st.seen_records = ["20260101T000000Z-1-mx.example.org.json"]
    state.save(tmp_path, st)
    assert oct((tmp_path / "daemon.json").stat().st_mode & 0o777) == "0o644"
    back, note = state.load(tmp_path)
    assert note == "" and back.checks == st.checks and back.deploys == st.deploys
    assert back.seen_records == st.seen_records and back.fresh is False
    (tmp_path / "daemon.json").write_text("{not json")
    fresh, note = state.load(tmp_path)
    assert "unreadable state" in note and fresh.checks == {} and fresh.fresh
    assert (tmp_path / "daemon.json.corrupt").exists()


def test_watchdog_interval_and_notify_datagrams(monkeypatch: pytest.MonkeyPatch) -> None:
    """WATCHDOG_USEC gives a ping every third of it (none if WATCHDOG_PID is another
    process); messages reach a bound datagram socket, also an abstract one (sdnotify
    reads NOTIFY_SOCKET from the process environment, as under systemd)."""
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 10.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, pid=2) is None
    assert watchdog_interval({}) is None
    assert Notifier({}).send(READY="1") is False
    with tempfile.TemporaryDirectory() as d:
        path = str(Path(d) / "n.sock")
        for addr, env in ((path, path), ("\0certwatch-test-" + Path(d).name,
                                         "@certwatch-test-" + Path(d).name)):
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as srv:
                srv.bind(addr)
                monkeypatch.setenv("NOTIFY_SOCKET", env)
                n = Notifier(os.environ)
                assert n.ready("1/1 ok")
                assert srv.recv(100) == b"READY=1\nSTATUS=1/1 ok"
                n.close()


def test_status_line_names_the_worst_problem() -> None:
    """The STATUS= line leads with the worst problem and counts the rest."""
    st = state.State()
    for c in (probe_check(), probe_check("warning", ("expiring_soon",), subject="x:587/starttls"),
              probe_check("ok", (), subject="x:465/tls")):
        st.checks[c.key] = c
    line = status_line(st, 0.0)
    assert line.startswith("CRITICAL 127.0.0.1:25/starttls: stale (+1 more); 1/3 TLS services ok")
    assert json.dumps(line)


def test_digest_one_mail_for_several_checks() -> None:
    """Checks that changed in one job make one alert: every service and detail named,
    the worst severity, the codes, and each distinct fix once."""
    items = [(probe_check(subject=f"127.0.0.1:{p}/starttls"), policy.Reason.NEW)
             for p in (25, 587)]
    items.append((probe_check("warning", ("expiring_soon",), subject="127.0.0.1:465/tls",
                              action="check certbot.timer"), policy.Reason.NEW))
    alert = policy.digest(items, host="mx1")
    assert alert.severity == "critical" and alert.problem == "expiring_soon, stale"
    assert alert.service == "127.0.0.1:25/starttls, 127.0.0.1:587/starttls, 127.0.0.1:465/tls"
    assert alert.lineage == "mx.example.org"
    assert alert.action == "\n- reload Postfix\n- check certbot.timer"
    assert alert.detail.count("serves abc, disk has def") == 3
    single = policy.digest(items[:1], host="mx1")
    assert single == policy.alert_for(items[0][0], policy.Reason.NEW, host="mx1")
    clear = policy.digest([(c, policy.Reason.RESOLVED) for c, _ in items], host="mx1")
    assert clear.severity == "resolved" and clear.summary.startswith("resolved: 3 checks ok again")
