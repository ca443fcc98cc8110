"""The whole product on a real Debian 12 host, the way an admin runs it: systemd as PID 1,
the distribution's Postfix as a system service, Debian's certbot 2.1 with its timer,
pebble as the ACME CA trusted through the system store, and scripts/install.sh from an
offline wheelhouse with the production paths. The host is a container booted by
:mod:`tests.harness.host` (root cached between runs, private network only).

Every step of the lifecycle is asserted inside the booted host, and the seconds each
took are printed at the end (``REALHOST`` lines).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.harness import host as host_mod
from tests.harness.host import Host

pytestmark = pytest.mark.realhost

NAME = "mail.example.test"
LIVE = f"/etc/letsencrypt/live/{NAME}"
RENEWAL_CONF = f"/etc/letsencrypt/renewal/{NAME}.conf"
SRC = "/root/postfix-certwatch"      # the admin's copy of the project
WHEELS = "/root/wheelhouse"          # built on a machine with Internet access
WHEELS_NEW = "/root/wheelhouse-new"  # the same, one version later
ENDPOINTS = (("127.0.0.1", 25, True), ("192.0.2.25", 25, True), ("127.0.0.1", 587, True),
             ("127.0.0.1", 465, False))
"""Every TLS service of the system Postfix: MX on loopback and on the second address,
submission (STARTTLS) and submissions (implicit TLS)."""
UNIT = "postfix-certwatch.service"
TEXTFILE = "/var/lib/prometheus/node-exporter/postfix_certwatch.prom"
WATCHDOG_SEC = 6
CONFIG = f"""\
# /etc/postfix-certwatch/config.toml as the admin of the test bed writes it
[alert]
mail_to = ["root"]

[daemon]
watch_interval = 1.0
settle_delay = 10.0

[metrics]
textfile = "{TEXTFILE}"
"""
TEST_DROPIN = f"""\
# test bed: a short watchdog (the daemon pings at a third of it) and a quick restart
[Service]
WatchdogSec={WATCHDOG_SEC}
RestartSec=1
"""
SWAP_KEY_HOOK = """\
#!/bin/sh
# test bed: a broken renewal. certbot runs deploy hooks in name order, so this runs
# before postfix-certwatch and swaps the private key of the version certbot just made.
set -e
key=$(readlink -f "$RENEWED_LINEAGE/privkey.pem")
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$key.swap"
chmod 600 "$key.swap"
mv -f "$key.swap" "$key"
"""


@dataclass
class Timings:
    """Seconds per step, printed at the end of the run."""

    steps: dict[str, float] = field(default_factory=dict)
    _last: float = field(default_factory=time.monotonic)

    def lap(self, step: str) -> None:
        now = time.monotonic()
        self.steps[step] = round(now - self._last, 2)
        self._last = now


@dataclass(frozen=True)
class Bed:
    """The booted host and what it took to get there."""

    host: Host
    root: host_mod.Root
    boot_seconds: float
    wheel_seconds: float


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    root = host_mod.build_root()
    start = time.monotonic()
    wheels = host_mod.build_wheelhouse(tmp_path_factory.mktemp("wheelhouse"))
    newer = _newer_wheelhouse(wheels, tmp_path_factory.mktemp("wheelhouse-new"))
    wheel_seconds = time.monotonic() - start
    binds = [(host_mod.REPO, SRC), (wheels, WHEELS), (newer, WHEELS_NEW)]
    with host_mod.booted(root, binds) as (host, boot_seconds):
        yield Bed(host, root, boot_seconds, wheel_seconds)


def _newer_wheelhouse(wheels: Path, out: Path) -> Path:
    """The wheelhouse of the next version (0.1.0 -> 0.1.0.post1...): a copy of the
    project with the version bumped, built as a wheel next to the same dependencies."""
    src = out / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=host_mod.REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if (host_mod.REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(host_mod.REPO / rel, src / rel)
    for rel in ("pyproject.toml", "hook/__init__.py"):
        path = src / rel
        path.write_text(re.sub(r'(version\w* = )"([^"]+)"', r'\1"\2.post1"', path.read_text(), count=1))
    wheelhouse = out / "wheels"
    wheelhouse.mkdir()
    for whl in wheels.glob("*.whl"):
        if not whl.name.startswith("postfix_certwatch-"):
            shutil.copy2(whl, wheelhouse)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--use-pep517",
                    "--wheel-dir", str(wheelhouse), str(src)],
                   capture_output=True, text=True, check=True, timeout=300)
    return wheelhouse


def events(lines: list[str], name: str) -> list[dict[str, object]]:
    """The daemon's JSON events called ``name`` among journal lines."""
    out = []
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and ev.get("event") == name:
            out.append(ev)
    return out


def served(host: Host) -> dict[str, str]:
    return {f"{h}:{p}": host.served_sha256(h, p, starttls) for h, p, starttls in ENDPOINTS}


def leaf_on_disk(host: Host, path: str = f"{LIVE}/cert.pem") -> str:
    out = host.sh(f"openssl x509 -in {path} -noout -fingerprint -sha256")
    return out.strip().partition("=")[2].replace(":", "").lower()


def wait_served_everywhere(host: Host, sha: str, timeout: float = 30.0) -> dict[str, str]:
    """Wait until every endpoint serves ``sha`` three times in a row (an idle old smtpd
    may still answer once right after a reload)."""
    deadline = time.monotonic() + timeout
    streak = 0
    seen: dict[str, str] = {}
    while streak < 3:
        seen = served(host)
        streak = streak + 1 if set(seen.values()) == {sha} else 0
        if time.monotonic() > deadline:
            raise AssertionError(f"not every endpoint serves {sha[:16]}: {seen}")
        if streak < 3:
            time.sleep(0.3)
    return seen


def deploy_records(host: Host) -> list[dict[str, object]]:
    """The hook's deploy records, oldest first."""
    out = host.run("python3", "-c", "import glob, json, os\n"
                   "for f in sorted(glob.glob('/var/lib/postfix-certwatch/deploys/*.json'),"
                   " key=os.path.getmtime): print(json.dumps(json.load(open(f))))").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def metrics(host: Host) -> dict[str, float]:
    """The textfile's samples, read with prometheus_client's own parser: ``name{labels}``
    (labels sorted by name, see :func:`sample`) -> value."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    out = {}
    for family in text_string_to_metric_families(host.read(TEXTFILE)):
        for s in family.samples:
            out[sample(s.name, **s.labels)] = s.value
    return out


def security_score(host: Host) -> float:
    """``systemd-analyze security`` of the installed unit, on the booted host."""
    security = host.run("systemd-analyze", "security", "--no-pager", UNIT).stdout
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d)", security)
    assert score, security
    return float(score.group(1))


def sample(name: str, **labels: str) -> str:
    """The key of a sample in :func:`metrics`."""
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}" if labels else name


def test_lifecycle_on_a_booted_debian_host(bed: Bed, capsys: pytest.CaptureFixture[str]) -> None:
    """On a booted Debian 12 with systemd, the system Postfix and Debian's certbot 2.1:
    install.sh installs offline with the production paths; certbot issues, renew-check
    adopts and passes; the daemon becomes active only after READY=1 and pings the
    watchdog; a renewal run by certbot.service is deployed by the hook (certbot's own
    environment) and served on 25/587/465, and the daemon re-probes after the deploy
    record (one JSON event per probe); a renewal with a swapped key is refused, the old
    leaf stays served, the alert mail reaches root's mailbox and status and metrics say
    so; a broken config is refused on reload and a good one applied; a stopped daemon is
    killed and restarted by the watchdog; the sandbox holds (read-only /etc, no view of
    the bundles, IPAddressDeny= until install.sh's drop-in) and the unit scores <= 1.5
    online; certbot renew --dry-run skips our hook; install.sh upgrades in place
    (restarting the daemon) and --uninstall removes what it put there, keeping config,
    state and bundles."""
    host = bed.host
    t = Timings()

    # -- 0. why install.sh refuses a Python under /root: the unit cannot even exec it ---
    host.run("cp", "/usr/bin/python3.11", "/root/python3")  # as a pyenv build would be
    hidden = host.run("systemd-run", "--wait", "--quiet", "-p", "ProtectHome=yes",
                      "/root/python3", "-c", "pass", check=False)
    assert hidden.returncode == 203, hidden  # 203/EXEC: systemd could not execute it
    refused = host.run("bash", f"{SRC}/scripts/install.sh", "--python", "/root/python3",
                       "--wheelhouse", WHEELS, check=False)
    assert refused.returncode == 1 and "ProtectHome=yes" in refused.stderr, refused
    assert host.run("test", "-e", "/opt/postfix-certwatch", check=False).returncode == 1
    t.lap("a Python under /root: refused")

    # -- 1. install, as the README says (offline: from the wheelhouse) -------------------
    out = host.run("bash", f"{SRC}/scripts/install.sh", "--wheelhouse", WHEELS).stdout
    assert "venv         /opt/postfix-certwatch (Python 3.11" in out, out
    assert "home = /usr/bin" in host.read("/opt/postfix-certwatch/pyvenv.cfg")
    assert host.run("readlink", "/etc/letsencrypt/renewal-hooks/deploy/postfix-certwatch"
                    ).stdout.strip() == "/opt/postfix-certwatch/bin/postfix-deploy-hook"
    allowed = host.read(f"/etc/systemd/system/{UNIT}.d/10-addresses.conf")
    assert "IPAddressAllow=192.0.2.25" in allowed, allowed
    for doc in re.findall(r"file://(\S+)", host.read(f"/etc/systemd/system/{UNIT}")):
        host.run("test", "-s", doc)  # Documentation= points at files that exist
    t.lap("install.sh (offline wheelhouse)")

    # -- 2. certbot certonly; Postfix reads live/ (as at first); adopt; renew-check -------
    host.run("certbot", "certonly", "--non-interactive", "--agree-tos",
             "--register-unsafely-without-email", "--standalone",
             "--server", "https://127.0.0.1:14000/dir", "-d", NAME, timeout=120)
    first = leaf_on_disk(host)
    host.run("postconf", "-e", f"smtpd_tls_cert_file = {LIVE}/fullchain.pem",
             f"smtpd_tls_key_file = {LIVE}/privkey.pem")
    host.run("systemctl", "reload", "postfix")
    wait_served_everywhere(host, first)
    t.lap("certbot certonly + postfix reload")
    stock = host.run("renew-check", "--no-dns", check=False)
    # Debian 12's stock main.cf: TLSv1/1.1 and anonymous ciphers on submission
    assert stock.returncode == 2 and "anonymous_ciphers" in stock.stdout, stock.stdout
    host.run("postconf", "-e", "smtpd_tls_protocols = >=TLSv1.2",
             "smtpd_tls_mandatory_protocols = >=TLSv1.2", "smtpd_tls_exclude_ciphers = aNULL",
             "smtpd_tls_mandatory_exclude_ciphers = aNULL", "smtpd_tls_loglevel = 1")
    host.run("systemctl", "reload", "postfix")
    adopt = host.run("renew-check", "adopt", LIVE)
    assert "OK: Postfix now reads /etc/postfix-certwatch/bundles/" in adopt.stdout, adopt.stdout
    check = host.run("renew-check", "--no-dns", check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    t.lap("adopt + renew-check")

    # -- 3. the daemon under systemd -----------------------------------------------------
    host.write("/etc/postfix-certwatch/config.toml", CONFIG)
    host.run("mkdir", "-p", "/var/lib/prometheus/node-exporter")
    host.write(f"/etc/systemd/system/{UNIT}.d/20-test-bed.conf", TEST_DROPIN)
    host.run("systemctl", "daemon-reload")
    cursor = host.cursor()
    host.run("systemctl", "enable", "--now", UNIT, timeout=120)
    t.lap("systemctl enable --now (until READY=1)")
    props = host.show(UNIT, "ActiveState", "SubState", "StatusText", "MainPID",
                      "ActiveEnterTimestampMonotonic", "WatchdogTimestampMonotonic")
    assert (props["ActiveState"], props["SubState"]) == ("active", "running"), props
    journal = host.journal(UNIT, cursor)
    ready = events(journal, "ready")
    assert ready and len(events(journal, "probe")) == len(ENDPOINTS), journal
    # Type=notify: active only after READY=1, which follows the first full check; a
    # Type=simple unit would have been active at exec, before any probe
    stamps = host.run("systemctl", "show", UNIT, "--timestamp=us+utc", "--value",
                      "-pExecMainStartTimestamp", "-pActiveEnterTimestamp").stdout.split("\n")
    exec_at, active_at = (dt.datetime.strptime(s.strip()[4:], "%Y-%m-%d %H:%M:%S.%f UTC")
                          .replace(tzinfo=dt.UTC) for s in stamps[:2])
    checked_at = dt.datetime.fromisoformat(str(events(journal, "check")[0]["timestamp"]))
    assert exec_at < checked_at <= active_at, (exec_at, checked_at, active_at)
    print(f"REALHOST exec -> first check done {(checked_at - exec_at).total_seconds():.2f} s, "
          f"-> active {(active_at - exec_at).total_seconds():.2f} s")
    status = props["StatusText"]  # the worst problem first (none here), then the next expiry
    assert status.startswith(f"{len(ENDPOINTS)}/{len(ENDPOINTS)} TLS services ok") \
        and "next expiry" in status, props
    dog = props["WatchdogTimestampMonotonic"]
    host.wait_for("the watchdog timestamp to move",
                  f"[ \"$(systemctl show {UNIT} -pWatchdogTimestampMonotonic --value)\" != \"{dog}\" ]",
                  WATCHDOG_SEC)
    t.lap("status + watchdog pings")

    # -- 4. a renewal the way the timer does it ------------------------------------------
    host.sh(f"sed -i '1i renew_before_expiry = 100 days' {RENEWAL_CONF}")
    cursor = host.cursor()
    host.run("systemctl", "start", "certbot.service", timeout=180)
    second = leaf_on_disk(host)
    assert second != first
    records = deploy_records(host)
    assert [r.get("outcome") for r in records] == ["deployed"], records
    wait_served_everywhere(host, second)
    t.lap("certbot.service renewal + hook + served")
    host.wait_for("the daemon to re-probe after the deploy record",
                  f"journalctl -u {UNIT} -o cat --after-cursor '{cursor}' | "
                  f"grep '\"event\": \"probe\"' | grep -c '{second}' | grep -qx {len(ENDPOINTS)}",
                  30)
    journal = host.journal(UNIT, cursor)
    assert events(journal, "deploy_record")[0]["outcome"] == "deployed"
    probes = [e for e in events(journal, "probe") if e["leaf_sha256"] == second]
    assert {str(e["service"]) for e in probes} == {f"{h}:{p}/{'starttls' if s else 'tls'}"
                                                   for h, p, s in ENDPOINTS}, probes
    assert all(e["status"] == "ok" for e in probes), probes
    t.lap("daemon re-probe after deploy record")

    # -- 5. a bad renewal: the key swapped in the new archive version -------------------
    host.write("/etc/letsencrypt/renewal-hooks/deploy/00-test-swap-key", SWAP_KEY_HOOK, "0755")
    host.run("systemctl", "start", "certbot.service", timeout=180)
    host.run("rm", "/etc/letsencrypt/renewal-hooks/deploy/00-test-swap-key")
    third = leaf_on_disk(host)
    assert third not in (first, second)
    records = deploy_records(host)
    assert records[-1].get("outcome") not in ("deployed", None), records[-1]
    assert set(served(host).values()) == {second}  # the old leaf, everywhere
    host.wait_for("the alert mail in root's mailbox",
                  "grep -q '^Subject: .*postfix-certwatch' /var/mail/root", 30)
    mailbox = host.read("/var/mail/root")  # delivered by the system Postfix's local(8)
    subjects = re.findall(r"^Subject: (.*)$", mailbox, re.M)
    # the hook's alert: a renewal that did not reach Postfix is critical news to the admin
    assert any(re.match(rf"\[postfix-certwatch\] CRITICAL {NAME}: ", x) for x in subjects), subjects
    print(f"REALHOST refused renewal: record outcome {records[-1].get('outcome')}; "
          f"mail to root: {subjects}")
    host.wait_for("the daemon to report the refusal",
                  f"systemctl show {UNIT} -pStatusText --value | grep -q deploy_", 30)
    status = host.show(UNIT, "StatusText")["StatusText"]
    samples = metrics(host)
    failed = [v for k, v in samples.items() if k.startswith("postfix_certwatch_deploy_failed")]
    assert failed and max(failed) == 1.0, samples
    # the worst problem first: the refusal, critical (certbot will not retry by itself),
    # as the hook's alert mail says
    assert status.startswith(f"CRITICAL {NAME}: deploy_refused"), status
    deploy = sample("postfix_certwatch_check_status", check="deploy", subject=NAME, lineage=NAME)
    assert samples[deploy] == 2.0, samples  # 0 ok, 1 warning, 2 critical
    print("REALHOST metrics after the refused renewal: " + "; ".join(
        f"{k} {v:g}" for k, v in samples.items() if "deploy" in k or "check_status" in k))
    t.lap("bad renewal refused + alert mail + status")
    print(f"REALHOST status after the refused renewal: {status}")

    # -- 6. reload: a broken config is refused, a good one applied -----------------------
    pid = host.show(UNIT, "MainPID")["MainPID"]
    cursor = host.cursor()
    host.write("/etc/postfix-certwatch/config.toml", CONFIG + "\n[daemon]\nbogus = 1\n")
    host.run("systemctl", "reload", UNIT)
    host.wait_for("the refused reload", f"journalctl -u {UNIT} -o cat --after-cursor '{cursor}' "
                  "| grep '\"event\": \"reload\"' | grep -q '\"ok\": false'", 15)
    props = host.show(UNIT, "ActiveState", "MainPID")
    assert props == {"ActiveState": "active", "MainPID": pid}, props
    cursor = host.cursor()
    host.write("/etc/postfix-certwatch/config.toml", CONFIG.replace("settle_delay = 10.0",
                                                                     "settle_delay = 11.0"))
    host.run("systemctl", "reload", UNIT)
    host.wait_for("the applied reload", f"journalctl -u {UNIT} -o cat --after-cursor '{cursor}' "
                  "| grep '\"event\": \"reload\"' | grep -q '\"ok\": true'", 15)
    assert host.show(UNIT, "MainPID")["MainPID"] == pid
    t.lap("reload refused + applied")

    # -- 7. watchdog: a stopped daemon is killed and restarted -------------------------
    restarts = int(host.show(UNIT, "NRestarts")["NRestarts"])
    cursor = host.cursor()
    host.run("kill", "-STOP", pid)
    stopped = time.monotonic()
    host.wait_for("systemd to restart the stopped daemon",
                  f"[ \"$(systemctl show {UNIT} -pMainPID --value)\" != {pid} ] && "
                  f"[ \"$(systemctl show {UNIT} -pMainPID --value)\" != 0 ]", WATCHDOG_SEC * 3)
    killed_after = time.monotonic() - stopped
    assert killed_after < WATCHDOG_SEC + 3, killed_after  # WatchdogSec=, then RestartSec=1
    assert int(host.show(UNIT, "NRestarts")["NRestarts"]) == restarts + 1
    system_log = host.run("journalctl", "--no-pager", "-o", "cat", "--after-cursor", cursor).stdout
    assert "Watchdog timeout" in system_log, system_log
    host.wait_for("the restarted daemon to be active",
                  f"[ \"$(systemctl show {UNIT} -pActiveState --value)\" = active ]", 60)
    t.lap("watchdog kill + restart")
    print(f"REALHOST watchdog: SIGSTOP -> new MainPID after {killed_after:.1f} s "
          f"(WatchdogSec={WATCHDOG_SEC}, RestartSec=1)")

    # -- 8. the sandbox, with the daemon still doing its job ---------------------------
    pid = host.show(UNIT, "MainPID")["MainPID"]
    inside = ["nsenter", "-t", pid, "-m", "--"]
    write = host.run(*inside, "touch", "/etc/postfix-certwatch/probe", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr, write
    bundle = host.run(*inside, "cat", f"/etc/postfix-certwatch/bundles/{NAME}.pem", check=False)
    assert bundle.returncode != 0, "the daemon's view shows the key bundle"
    assert host.run(*inside, "ls", "-A", "/root").stdout.strip() == ""  # ProtectHome=yes
    dropin = f"/etc/systemd/system/{UNIT}.d/10-addresses.conf"
    host.run("mv", dropin, "/root/10-addresses.conf")
    host.run("systemctl", "daemon-reload")
    # the installed unit as on a host whose Postfix listens on all interfaces (no drop-in)
    alone = security_score(host)
    assert alone <= 1.5, alone
    cursor = host.cursor()
    host.run("systemctl", "restart", UNIT, timeout=120)
    probes = events(host.journal(UNIT, cursor), "probe")
    by_service = {str(e["service"]): e for e in probes}
    assert by_service["192.0.2.25:25/starttls"]["status"] != "ok", by_service
    assert by_service["127.0.0.1:25/starttls"]["status"] == "ok", by_service
    print(f"REALHOST without the drop-in: {by_service['192.0.2.25:25/starttls'].get('detail')}")
    host.run("mv", "/root/10-addresses.conf", dropin)
    host.run("systemctl", "daemon-reload")
    cursor = host.cursor()
    host.run("systemctl", "restart", UNIT, timeout=120)
    probes = events(host.journal(UNIT, cursor), "probe")
    assert {str(e["service"]): e["status"] for e in probes}["192.0.2.25:25/starttls"] == "ok"
    # the drop-in's non-localhost IPAddressAllow= is one more exposure item (0.1)
    with_dropin = security_score(host)
    assert with_dropin <= 1.6, with_dropin
    print(f"REALHOST systemd-analyze security (booted host): {alone} as installed, "
          f"{with_dropin} with the address drop-in for 192.0.2.25")
    t.lap("sandbox checks")

    # -- 9. certbot renew --dry-run on certbot 2.1 --------------------------------------
    before = len(deploy_records(host))
    # --dry-run talks to Let's Encrypt's staging CA, not the server in the renewal conf,
    # unless --server is given: here that is pebble (a real host needs the network)
    pebble = ("--server", "https://127.0.0.1:14000/dir")
    dry = host.run("certbot", "renew", "--dry-run", "--no-random-sleep-on-renew", *pebble,
                   timeout=180)
    assert "all simulated renewals succeeded" in dry.stdout, dry.stdout
    # certbot 2.1 says it skipped our hook only in its log (INFO), not on the terminal
    assert "Dry run: skipping deploy hook command: /etc/letsencrypt/renewal-hooks/deploy/" \
           "postfix-certwatch" in host.read("/var/log/letsencrypt/letsencrypt.log")
    assert "skipping deploy hook" not in dry.stdout + dry.stderr
    assert len(deploy_records(host)) == before and set(served(host).values()) == {second}
    flag = host.run("certbot", "renew", "--dry-run", "--run-deploy-hooks", *pebble, check=False,
                    timeout=60)
    print(f"REALHOST certbot 2.1 --run-deploy-hooks: exit {flag.returncode}: "
          f"{(flag.stderr.strip().splitlines() or [''])[-1]}")
    # renew-check --dry-run runs the hook's pipeline on what live/ holds now: the pair
    # with the swapped key, which it would refuse, so it says so and exits 2
    ours = host.run("renew-check", "--dry-run", check=False)
    assert ours.returncode == 2, ours.stdout + ours.stderr
    t.lap("certbot renew --dry-run")

    # -- 10. upgrade in place, then uninstall ------------------------------------------
    pid = host.show(UNIT, "MainPID")["MainPID"]
    up = host.run("bash", f"{SRC}/scripts/install.sh", "--wheelhouse", WHEELS_NEW).stdout
    assert "restarted    postfix-certwatch.service" in up, up
    version = host.run("/opt/postfix-certwatch/bin/python", "-c", "import hook; print(hook.__version__)")
    assert version.stdout.strip().endswith(".post1")
    props = host.show(UNIT, "ActiveState", "MainPID")
    assert props["ActiveState"] == "active" and props["MainPID"] != pid, props
    assert "kept" in up and "config.toml" in up
    t.lap("upgrade in place")
    gone = host.run("bash", f"{SRC}/scripts/install.sh", "--uninstall").stdout
    for path in ("/opt/postfix-certwatch", f"/etc/systemd/system/{UNIT}",
                 "/etc/letsencrypt/renewal-hooks/deploy/postfix-certwatch",
                 "/usr/local/bin/renew-check", dropin):
        assert host.run("test", "-e", path, check=False).returncode != 0, f"{path} left: {gone}"
    for path in ("/etc/postfix-certwatch/config.toml", f"/etc/postfix-certwatch/bundles/{NAME}.pem",
                 "/var/lib/postfix-certwatch/deploys", f"/etc/systemd/system/{UNIT}.d/20-test-bed.conf"):
        host.run("test", "-e", path)
    assert set(served(host).values()) == {second}  # Postfix keeps serving the bundle
    t.lap("uninstall")

    with capsys.disabled():
        build = f"{bed.root.build_seconds:.1f} s" if bed.root.build_seconds else "cached"
        print(f"\nREALHOST root {bed.root.key}: {build}; wheelhouses {bed.wheel_seconds:.1f} s; "
              f"boot {bed.boot_seconds:.1f} s")
        for step, secs in t.steps.items():
            print(f"REALHOST {secs:7.2f} s  {step}")
        print(f"REALHOST {sum(t.steps.values()):7.2f} s  lifecycle in all")


def test_resource_limits_cannot_be_enforced_here(bed: Bed) -> None:
    """MemoryMax= and TasksMax= need the memory and pids controllers in the unit's cgroup.
    Where the container's cgroup v2 tree has them, a transient unit with both gets the
    limits; where it does not (this machine mounts them on cgroup v1 outside), the test
    says so and skips: nothing pretends they were enforced."""
    host = bed.host
    controllers = host.read("/sys/fs/cgroup/cgroup.controllers").split()
    probe = host.run("systemd-run", "--wait", "--pipe", "--quiet", "-p", "MemoryMax=64M",
                     "-p", "TasksMax=8", "sh", "-c",
                     "cg=/sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup); "
                     "cat $cg/memory.max 2>/dev/null || echo none; "
                     "cat $cg/pids.max 2>/dev/null || echo none").stdout.split()
    if "memory" not in controllers or "pids" not in controllers:
        assert probe == ["none", "none"], probe  # no limit files: nothing enforces them
        pytest.skip(f"MemoryMax=/TasksMax= are not enforced on this machine: the container's "
                    f"cgroup v2 root offers controllers {controllers or 'none'} (the host mounts "
                    f"memory and pids on cgroup v1), so systemd accepts the settings and a "
                    f"unit gets no memory.max/pids.max")
    assert probe == [str(64 * 1024 * 1024), "8"], probe


# ------------------------------------------------------------------ the journal source
JOURNAL_CONFIG = CONFIG + """
[peers]
ignore_clients = []
interval = 1.0
"""
STATE = "/var/lib/postfix-certwatch"
CLIENTS = f"{SRC}/tests/harness/host_clients.py"
"""TLS clients run inside the container with the installed venv's Python."""
COUNT_TLS = r"""
import json, re, subprocess, sys
# The TLS lines of Postfix's smtpd processes (any syslog_name) in the journal after a
# realtime (microseconds), counted with a regex of our own: not the product's parser.
tls = re.compile(r"TLS connection established from|SSL_accept error from|"
                 r"TLS library problem|lost connection after STARTTLS from")
out = subprocess.run(["journalctl", "-o", "json", "--no-pager", "--since", "@" + sys.argv[1]],
                     capture_output=True, text=True, check=True).stdout
n, last = 0, ""
for line in out.splitlines():
    e = json.loads(line)
    ident = e.get("SYSLOG_IDENTIFIER", "")
    if (ident.startswith("postfix/") and ident.endswith("/smtpd") and
            int(e["__REALTIME_TIMESTAMP"]) > int(float(sys.argv[1]) * 1e6) and
            isinstance(e.get("MESSAGE"), str) and tls.search(e["MESSAGE"])):
        n, last = n + 1, e["__CURSOR"]
print(n, last)
"""


def clients(host: Host, *kinds: str, port: int = 25) -> None:
    host.run("/opt/postfix-certwatch/bin/python", CLIENTS, "127.0.0.1", str(port), *kinds)


def tls_entries_since(host: Host, when: float) -> tuple[int, str]:
    """Postfix's smtpd TLS entries in the journal after ``when`` (epoch seconds), and the
    cursor of the last."""
    n, _, cursor = host.run("python3", "-c", COUNT_TLS, f"{when:.6f}").stdout.strip().partition(" ")
    return int(n), cursor


def wait_tls(host: Host, since: float, n: int, timeout: float = 15.0) -> None:
    """Wait until the journal holds ``n`` smtpd TLS entries after ``since``."""
    deadline = time.monotonic() + timeout
    while (got := tls_entries_since(host, since)[0]) != n:
        assert got < n and time.monotonic() < deadline, f"{got} TLS entries in the journal, not {n}"
        time.sleep(0.2)


def clock(host: Host) -> float:
    return float(host.run("date", "+%s.%N").stdout)


def peers_state(host: Host) -> dict[str, object]:
    return dict(json.loads(host.read(f"{STATE}/peers.json")))


def events_total(host: Host) -> float:
    return metrics(host).get("postfix_certwatch_peer_tls_events_total", -1.0)


def wait_events(host: Host, want: Callable[[], int], timeout: float = 20.0) -> int:
    """Wait until the metrics textfile says the daemon read as many TLS events as
    ``want()`` counts in the journal; fail if it goes past it (counted twice)."""
    deadline = time.monotonic() + timeout
    while True:
        expected = want()
        got = events_total(host)
        if got == expected:
            return expected
        assert got < expected, f"the daemon counted {got:g} TLS events, {expected} in the journal"
        assert time.monotonic() < deadline, f"the daemon counted {got:g}, not {expected}"
        time.sleep(0.3)


def peers_view(host: Host) -> dict[str, object]:
    out = host.run("renew-check", "peers", "--json", "--no-dns", check=False)
    return dict(json.loads(out.stdout)["peers"])


def _log_counts(view: dict[str, object]) -> Counter[str]:
    log = view["log"]
    assert isinstance(log, dict), view
    counts: Counter[str] = Counter()
    for s in log["sessions"]:
        counts[f"{s['direction']} {s['level']}"] += s["count"]
    for f in log["failures"]:
        counts[f"{f['direction']} {f['failure']}"] += f["count"]
    counts["failed sessions"] = log["failed_inbound_sessions"]
    return counts


def _journal_bed(host: Host) -> None:
    """The product installed, Postfix serving a certbot lineage through the bundle with
    TLS logging on, the daemon stopped with no peers.json: after the lifecycle test's
    --uninstall (it keeps config, state and bundles) or alone on a fresh boot."""
    if host.run("test", "-x", "/opt/postfix-certwatch/bin/renew-daemon", check=False).returncode:
        host.run("bash", f"{SRC}/scripts/install.sh", "--wheelhouse", WHEELS)
    if host.run("test", "-e", f"{LIVE}/cert.pem", check=False).returncode:
        host.run("certbot", "certonly", "--non-interactive", "--agree-tos",
                 "--register-unsafely-without-email", "--standalone",
                 "--server", "https://127.0.0.1:14000/dir", "-d", NAME, timeout=120)
        host.run("postconf", "-e", f"smtpd_tls_cert_file = {LIVE}/fullchain.pem",
                 f"smtpd_tls_key_file = {LIVE}/privkey.pem", "smtpd_tls_loglevel = 1",
                 "smtpd_tls_exclude_ciphers = aNULL", "smtpd_tls_protocols = >=TLSv1.2")
        host.run("systemctl", "reload", "postfix")
        host.run("renew-check", "adopt", LIVE)
    host.sh(f"grep -q '^renew_before_expiry' {RENEWAL_CONF} || "
            f"sed -i '1i renew_before_expiry = 100 days' {RENEWAL_CONF}")
    # Debian's Postfix under systemd logs through /dev/log to journald, and only there
    assert host.run("postconf", "-h", "maillog_file").stdout.strip() == ""
    for path in ("/usr/sbin/rsyslogd", "/usr/sbin/syslog-ng", "/var/log/mail.log", "/var/log/maillog"):
        assert host.run("test", "-e", path, check=False).returncode != 0, path
    assert host.run("readlink", "/dev/log").stdout.strip() == "/run/systemd/journal/dev-log"
    host.write("/etc/postfix-certwatch/config.toml", JOURNAL_CONFIG)
    host.run("mkdir", "-p", "/var/lib/prometheus/node-exporter")
    host.write(f"/etc/systemd/system/{UNIT}.d/20-test-bed.conf", TEST_DROPIN)
    host.run("systemctl", "daemon-reload")
    host.run("rm", "-f", f"{STATE}/peers.json")


def _journal_renew_check(host: Host) -> None:
    """renew-check peers --json: the source is the journal, and it counts exactly the
    sessions made inside: a good STARTTLS on 25 and on 587 (submission, syslog_name
    postfix/submission), a client gone mid-handshake, an aNULL-only client."""
    before = _log_counts(peers_view(host))
    start = clock(host)
    clients(host, "ok", "dropped", "anon")
    clients(host, "ok", port=587)
    wait_tls(host, start, 7)
    view = peers_view(host)
    assert view["source"] == "the systemd journal", view
    got = _log_counts(view)
    got.subtract(before)
    assert +got == Counter({"inbound anonymous": 2, "inbound handshake": 2,
                            "inbound lost_after_starttls": 2, "inbound tls_library": 1,
                            "failed sessions": 2}), (got, view)


def _journal_cursor(host: Host) -> None:
    """The unit follows the journal (its first read: the last 24 h); stopped, it misses
    nothing: started again it counts exactly what was logged meanwhile, once."""
    host.run("systemctl", "enable", "--now", UNIT, timeout=120)
    total = wait_events(host, lambda: tls_entries_since(host, 0)[0])
    samples = metrics(host)
    log_check = [v for k, v in samples.items() if 'check="peers"' in k and 'subject="log"' in k]
    assert log_check == [0.0], samples  # "reading the systemd journal", inside the sandbox
    host.run("systemctl", "stop", UNIT)
    stopped = events_total(host)
    state = peers_state(host)
    assert (state["lines"], state["source"]) == (stopped, "journal") and state["cursor"], state
    start = clock(host)
    clients(host, "dropped", "dropped", "anon")
    wait_tls(host, start, 7)
    host.run("systemctl", "start", UNIT, timeout=120)
    # the 7 made while stopped, then whatever the daemon's own start-up probes logged
    now = wait_events(host, lambda: int(stopped) + tls_entries_since(host, start)[0])
    print(f"REALHOST journal: first read {total} TLS entries; stopped at {stopped:g}; "
          f"7 made while stopped; after the start {now} (its own probes: {now - stopped - 7:g})")


def _journal_rotate(host: Host) -> None:
    """journalctl --rotate while it runs; then, stopped, a rotation and a vacuum that
    delete the file holding its cursor: started again it counts what is left, once."""
    base = events_total(host)
    host.run("journalctl", "--rotate")
    start = clock(host)
    clients(host, "dropped")
    assert wait_events(host, lambda: int(base) + tls_entries_since(host, start)[0]) == base + 2
    host.run("systemctl", "stop", UNIT)
    stopped = events_total(host)
    host.run("journalctl", "--rotate")
    start = clock(host)
    clients(host, "dropped", "anon")
    vacuum = host.run("journalctl", "--vacuum-files=1")
    assert "Deleted archived journal" in vacuum.stdout + vacuum.stderr, vacuum
    wait_tls(host, start, 5)
    host.run("systemctl", "start", UNIT, timeout=120)
    now = wait_events(host, lambda: int(stopped) + tls_entries_since(host, start)[0])
    print(f"REALHOST journal: rotate + vacuum while stopped: {stopped:g} -> {now} (5 made)")


def _journal_renewal_alert(host: Host) -> None:
    """A renewal by certbot.service (a real deploy record), then three failed inbound
    STARTTLS sessions: peer_failures_after_renewal, naming the renewal. The comparison
    needs 15 min of history before the renewal: peers.json's ``since`` is set an hour
    back, as if the daemon had followed the journal that long."""
    host.run("systemctl", "stop", UNIT)
    host.run("python3", "-c", "import json, time\n"
             f"p = '{STATE}/peers.json'; s = json.load(open(p)); s['since'] = time.time() - 3600\n"
             "json.dump(s, open(p, 'w'))")
    host.run("systemctl", "start", UNIT, timeout=120)
    cursor = host.cursor()
    host.run("systemctl", "start", "certbot.service", timeout=180)
    records = deploy_records(host)
    assert records and records[-1]["outcome"] == "deployed", records
    host.wait_for("the daemon to read the deploy record",
                  f"journalctl -u {UNIT} -o cat --after-cursor '{cursor}' | grep -q deploy_record", 30)
    clients(host, "dropped", "dropped", "anon")
    host.wait_for("the alert", f"journalctl -u {UNIT} -o cat --after-cursor '{cursor}' | "
                  "grep '\"event\": \"alert\"' | grep -q peer_failures_after_renewal", 30)
    alerts = [e for e in events(host.journal(UNIT, cursor), "alert")
              if e.get("problem") == "peer_failures_after_renewal"]
    # one alert about this lineage, delivered: the unit lets Postfix's sendmail run
    # (AF_NETLINK for its getifaddrs), and the mail reaches root's mailbox
    assert [(a["lineage"], str(a["summary"])) for a in alerts] == [
        (NAME, f"peer_failures_after_renewal: seen by peers: renewal {NAME}")], alerts
    deliveries = alerts[0]["deliveries"]
    assert isinstance(deliveries, list) and all(str(d).startswith("mail:ok") for d in deliveries)
    host.wait_for("the daemon's alert mail in root's mailbox",
                  "grep -q 'peer_failures_after_renewal' /var/mail/root", 30)
    check = sample("postfix_certwatch_check_status", check="peers", subject=f"renewal {NAME}",
                   lineage=NAME)
    assert metrics(host)[check] == 1.0
    print(f"REALHOST journal: alert {alerts[0]['summary']} ({len(alerts)} event(s)); "
          f"deliveries {alerts[0].get('deliveries')}")


def test_journal_source_on_a_booted_host(bed: Bed, capsys: pytest.CaptureFixture[str]) -> None:
    """Debian's Postfix logging only to the journal (no rsyslog, no maillog_file):
    renew-check peers counts real sessions and failures from the journal (submission's
    smtpd too); the daemon, as its sandboxed unit, follows it with a persisted cursor
    across a stop, a rotation and a vacuum (nothing lost, nothing counted twice, checked
    against the journal itself); a renewal followed by failed handshakes is alerted."""
    host = bed.host
    t = Timings()
    _journal_bed(host)
    t.lap("journal: install + config")
    _journal_renew_check(host)
    t.lap("journal: renew-check peers")
    _journal_cursor(host)
    t.lap("journal: daemon, stop, start")
    _journal_rotate(host)
    t.lap("journal: rotate + vacuum")
    _journal_renewal_alert(host)
    t.lap("journal: renewal + alert")
    with capsys.disabled():
        for step, secs in t.steps.items():
            print(f"REALHOST {secs:7.2f} s  {step}")
