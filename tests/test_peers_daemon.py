"""The daemon's peers checks against the real lines of two private Postfix instances
(tests/harness/peerbed.py): failures after a renewal, seed 000's anonymous-cipher and
untrusted-outbound diagnoses (and that the printed fix works), metrics, restarts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from daemon.renew_daemon import metrics, peers_metrics
from daemon.renew_daemon.notify import Notifier
from daemon.renew_daemon.watch import Watcher
from hook import config
from tests.harness.peerbed import PeerBed, running_peerbed

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def bed() -> Iterator[PeerBed]:
    with running_peerbed() as b:
        yield b


def make_watcher(bed: PeerBed, state: Path) -> Watcher:
    cfg = config.Config(postfix=config.PostfixConfig(config_directory=bed.ours.config_dir),
                        certbot=config.CertbotConfig(config_dir=state / "letsencrypt"),
                        deploy=config.DeployConfig(state_dir=state, bundle_dir=state / "b"),
                        peers=config.PeersConfig(min_failures=3, ignore_clients=()))
    return Watcher(cfg, structlog.get_logger("test"), Notifier({}))


def count(bed: PeerBed, text: str) -> int:
    return bed.maillog.read_text(errors="replace").count(text)


def wait_count(bed: PeerBed, text: str, n: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while count(bed, text) < n:
        assert time.monotonic() < deadline, f"{text!r} x{n} not in {bed.maillog}"
        time.sleep(0.05)


def settle(bed: PeerBed, quiet: float = 0.3, timeout: float = 10) -> None:
    """Wait until Postfix's log has not grown for ``quiet`` seconds (postlogd writes late)."""
    deadline = time.monotonic() + timeout
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now_size = bed.maillog.stat().st_size
        if now_size != size:
            size, since = now_size, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.05)


def test_failures_after_a_renewal_are_alerted_with_the_renewal_named(bed: PeerBed, tmp_path: Path) -> None:
    """A deploy record, then three clients' handshakes fail: one alert that says
    "since the renewal ... at T: 3 inbound STARTTLS failure(s) from 1 client(s), before:
    0.0 an hour"; a good STARTTLS session is counted, not alerted."""
    with capture_logs() as logs:
        w = make_watcher(bed, tmp_path)
        w.peers_tick()  # opens Postfix's maillog_file (found with postconf), reads its tail
        assert w.state.checks["peers log"].detail == f"reading {bed.maillog}"
        w.peers.state.since = time.time() - 3600  # as if the daemon had followed the log for an hour
        renewal = time.time()
        (tmp_path / "deploys").mkdir()
        (tmp_path / "deploys" / "20261202T000000Z-mx.json").write_text(json.dumps(
            {"time": renewal, "outcome": "deployed", "lineage": "mx.example.test", "message": "ok"}))
        w.watch()
        settle(bed)  # the bed's own start-up connections (465's readiness probe fails TLS)
        w.peers_tick()  # failed sessions already logged in the renewal's minute count as after it
        minute = int(renewal // 60 * 60)
        already = w.peers.failed_between(minute, minute + 60)[0]
        before = count(bed, "SSL_accept error from")
        bed.inbound_ok()
        bed.inbound_broken()
        bed.inbound_broken()
        bed.inbound_dropped()
        wait_count(bed, "SSL_accept error from", before + 3)
        wait_count(bed, "lost connection after STARTTLS", 3)
        w.peers_tick()
        check = w.state.checks["peers renewal mx.example.test"]
        assert (check.status, check.codes) == ("warning", ("peer_failures_after_renewal",))
        assert check.detail.startswith("since the renewal of mx.example.test at ")
        assert check.detail.endswith(f": {3 + already} inbound STARTTLS failure(s) from 1 "
                                     "client(s), before: 0.0 an hour"), (already, check.detail)
        alerts = [e for e in logs if e["event"] == "alert"]
        assert [a["problem"] for a in alerts] == ["peer_failures_after_renewal"]
        assert "mx.example.test" in alerts[0]["summary"]
        w.peers_tick()  # nothing new: no second alert
        assert len([e for e in logs if e["event"] == "alert"]) == 1
        exposition = metrics.Exposition()  # served beside the other metrics, as the daemon does
        exposition.update(peers_metrics.families(w.peers.state))
        text = exposition.text()
        assert 'postfix_certwatch_peer_tls_failures_total{direction="inbound",failure="handshake"}' in text
        assert 'peer_tls_sessions_total{direction="inbound",level="anonymous"}' in text
        lines = w.peers.state.lines
        w.stop()
    again = make_watcher(bed, tmp_path)  # a restart: the position is kept, nothing read twice
    again.peers_tick()
    assert again.peers.state.lines == lines
    again.peers.close()


def test_seed_000_diagnoses_and_the_fix_works(bed: PeerBed, tmp_path: Path) -> None:
    """An aNULL client: peer_anonymous_cipher with the exact postconf line; applying it
    makes Postfix refuse that client (SSL_accept error). Untrusted outbound with
    smtp_tls_CAfile/CApath unset: peer_untrusted with the smtp_tls_CAfile line."""
    w = make_watcher(bed, tmp_path)
    w.peers_tick()
    bed.inbound_anonymous()
    wait_count(bed, "with cipher ADH-", 1)
    bed.send_out("may")
    bed.wait_for("Untrusted TLS connection established to")
    w.peers_tick()
    check = w.state.checks["peers tls"]
    assert set(check.codes) == {"peer_anonymous_cipher", "peer_untrusted"}
    assert "postconf -e 'smtpd_tls_exclude_ciphers = aNULL' && postfix reload" in check.action
    assert "postconf -e 'smtp_tls_CAfile = " in check.action
    assert "smtp_tls_CAfile and smtp_tls_CApath are unset" in check.detail
    anon_before = count(bed, "with cipher ADH-")
    errors_before = count(bed, "SSL_accept error from")
    subprocess.run(["postconf", "-c", str(bed.ours.config_dir), "-e",
                    "smtpd_tls_exclude_ciphers = aNULL"], check=True)
    time.sleep(2.1)  # Postfix stalls on a main.cf younger than 2 s
    bed.ours.reload()
    bed.inbound_anonymous()
    wait_count(bed, "SSL_accept error from", errors_before + 1)
    assert count(bed, "with cipher ADH-") == anon_before
    bed.ours.reset_main("smtpd_tls_exclude_ciphers")
    bed.ours.reload()
    w.peers.close()


CRASH_RUN = """
import re, resource, sys, time
from pathlib import Path
import email, email.policy, email.message, structlog  # imported before the limit
from daemon.renew_daemon.peers import PeerWatch
from hook import config
state, box, headroom = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
cfg = config.Config(deploy=config.DeployConfig(state_dir=state, bundle_dir=state / "b"),
                    peers=config.PeersConfig(tlsrpt_mailbox=box))
w = PeerWatch(cfg, structlog.get_logger("t"))
vm = int(re.search(r"VmSize:\\s+(\\d+) kB", Path("/proc/self/status").read_text())[1]) << 10
resource.setrlimit(resource.RLIMIT_AS, (vm + headroom, vm + headroom))
print("reports", w.read_reports(time.time(), {"mx.example.test"}))
w.save()
"""


def test_a_message_that_kills_the_daemon_is_not_read_again(tmp_path: Path) -> None:
    """A report that takes more memory than the daemon may use kills it while it is being
    parsed (here: MemoryError under RLIMIT_AS, as systemd's MemoryMax would OOM-kill it).
    The message was remembered as read before parsing, so the restarted daemon skips it
    (no crash loop) and reads the next one."""
    from tests.test_tlsrpt import bomb_doc, mail, report  # noqa: PLC0415

    md = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (md / sub).mkdir(parents=True)
    (md / "new" / "1.bomb.host").write_bytes(mail(bomb_doc(3000, 1000)))  # 12 MB of JSON
    state = tmp_path / "state"

    def run(headroom: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", CRASH_RUN, str(state), str(md), str(headroom)],
                              check=False, capture_output=True, text=True, timeout=120,
                              cwd=Path(__file__).parent.parent)

    first = run(4 << 20)
    assert first.returncode != 0 and "MemoryError" in first.stderr, first.stdout + first.stderr
    (md / "new" / "2.ok.host").write_bytes(mail(report("after", {})))
    second = run(256 << 20)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "reports 1" in second.stdout and "1.bomb.host" not in second.stdout + second.stderr
    seen = json.loads((state / "peers.json").read_text())["tlsrpt"]["seen"]
    assert seen == ["1.bomb.host", "2.ok.host"]


def test_the_mailbox_is_read_every_few_minutes_not_every_tick(tmp_path: Path) -> None:
    """The TLSRPT mailbox is read at the first tick, then not before MAILBOX_INTERVAL."""
    from daemon.renew_daemon.peers import MAILBOX_INTERVAL, PeerWatch  # noqa: PLC0415
    from tests.test_tlsrpt import mail, report  # noqa: PLC0415

    md = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (md / sub).mkdir(parents=True)
    (md / "new" / "1.a.host").write_bytes(mail(report("r1", {})))
    cfg = config.Config(deploy=config.DeployConfig(state_dir=tmp_path / "s", bundle_dir=tmp_path / "b"),
                        peers=config.PeersConfig(tlsrpt_mailbox=md))
    w = PeerWatch(cfg, structlog.get_logger("test"))
    now = 1_800_000_000.0
    assert w.read_reports(now, {"mx.example.test"}) == 1
    (md / "new" / "2.b.host").write_bytes(mail(report("r2", {})))
    assert w.read_reports(now + 10, {"mx.example.test"}) == 0
    assert w.read_reports(now + MAILBOX_INTERVAL, {"mx.example.test"}) == 1


def test_the_outbound_domain_cap_costs_a_lookup_per_event(tmp_path: Path) -> None:
    """With a full table of 10000 domains, 5000 outbound sessions are counted in well under
    a second (the table was rebuilt for every event: seconds); the cap holds after a
    restart (the set is made again from the saved table)."""
    from daemon.renew_daemon.peers import PeerState, PeerWatch  # noqa: PLC0415
    from hook.peers.tlslog import Direction, Level, TlsEvent  # noqa: PLC0415

    cfg = config.Config(deploy=config.DeployConfig(state_dir=tmp_path / "s", bundle_dir=tmp_path / "b"),
                        peers=config.PeersConfig(domain_table_size=10000))
    w = PeerWatch(cfg, structlog.get_logger("test"))
    now = 1_800_000_000.0

    def out(host: str) -> TlsEvent:
        return TlsEvent(now, Direction.OUTBOUND, Level.VERIFIED, host=host)

    for n in range(10000):
        w.add(out(f"mx.d{n}.example"), now)
    start = time.monotonic()
    for n in range(5000):
        w.add(out(f"mx.new{n}.example"), now)
    assert time.monotonic() - start < 1.0
    assert w.state.domains["other verified"] == 5000
    again = PeerState.from_json(json.loads(json.dumps(w.state.to_json())))
    assert len(again.known_domains) == 10001 and "d7.example" in again.known_domains
