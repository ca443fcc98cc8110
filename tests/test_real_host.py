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
from collections.abc import Iterator
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
    (labels sorted by name) -> value."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    out = {}
    for family in text_string_to_metric_families(host.read(TEXTFILE)):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


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
    deploy = f'postfix_certwatch_check_status{{check="deploy",lineage="{NAME}",subject="{NAME}"}}'
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
    security = host.run("systemd-analyze", "security", "--no-pager", UNIT).stdout
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d)", security)
    assert score and float(score.group(1)) <= 1.5, security
    print(f"REALHOST systemd-analyze security (booted host): {score.group(1)}")
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
