"""The unit's ``SystemCallFilter=`` against reality: the daemon and everything it runs
(postconf, Postfix's sendmail and postdrop) make only system calls the filter allows.

``systemd-analyze security`` checks the unit offline; it cannot know what the program
calls. Without systemd here, strace records every call during a first check, probes,
an alert mail through sendmail, a SIGHUP and a SIGTERM; each must be in the filter.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from tests.harness.daemon import UNIT_UMASK
from tests.harness.stack import VENV_BIN, Stack, wait_until

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "postfix-certwatch.service"


@functools.cache
def expand(group: str) -> frozenset[str]:
    """The system calls in ``@group`` (recursively) or the call itself."""
    if not group.startswith("@"):
        return frozenset({group})
    out = subprocess.run(["systemd-analyze", "syscall-filter", group], capture_output=True,
                         text=True, check=True).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        item = line.strip()
        if item and not item.startswith("#"):
            names |= expand(item)
    return frozenset(names)


def allowed_by_unit() -> set[str]:
    """Apply the unit's SystemCallFilter= lines in order (allow list first)."""
    allowed: set[str] = set()
    for line in UNIT.read_text().splitlines():
        if not line.startswith("SystemCallFilter="):
            continue
        value = line.partition("=")[2]
        deny = value.startswith("~")
        names = set().union(*(expand(g) for g in value.lstrip("~").split()))
        allowed = allowed - names if deny else allowed | names
    return allowed


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def test_every_system_call_is_allowed_by_the_unit(stack: Stack, tmp_path: Path) -> None:
    """Under strace -f: first check, probes, a refused deploy record alerted by mail
    through sendmail (postdrop), SIGHUP and SIGTERM; the set of calls is a subset of the unit's filter."""
    pf = stack.postfix
    cfg = stack.write_config(
        daemon={"probe_interval": 1, "watch_interval": 0.2, "jitter": 0.01},
        alert={"mail_to": ["root@localhost"],
               "sendmail_command": ["/usr/sbin/sendmail", "-C", str(pf.config_dir), "-i"]},
        metrics={"textfile": str(tmp_path / "m.prom"), "listen": "127.0.0.1:0"})
    trace = tmp_path / "strace.out"
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "600000"}
    proc = subprocess.Popen(["strace", "-f", "-qq", "-o", str(trace), str(VENV_BIN / "renew-daemon"),
                             "--config", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, umask=UNIT_UMASK,
                            start_new_session=True)
    try:
        wait_until("the daemon under strace", lambda: bool(children(proc.pid)), 10)
        daemon = children(proc.pid)[0]
        wait_until("the first check", (stack.state_dir / "daemon.json").exists, 30)
        records = stack.state_dir / "deploys"
        records.mkdir(exist_ok=True)
        (records / "20260101T000000Z-1-mail.example.test.json").write_text(json.dumps({
            "time": time.time(), "lineage": "mail.example.test", "outcome": "refused",
            "message": "refused: the key does not match"}))  # -> an alert mail
        wait_until("an alert mail", (pf.mailbox_dir / "root").exists, 30)
        time.sleep(1.5)
        os.kill(daemon, signal.SIGHUP)
        time.sleep(1.0)
        os.kill(daemon, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out.decode()[-2000:]
    used = set()
    for line in trace.read_text().splitlines():
        m = re.match(r"\d+\s+(?:<\.\.\. )?([a-z_0-9]+)[( ]", line)
        if m:
            used.add(m.group(1))
    assert {"execve", "prlimit64", "sendto", "connect"} <= used  # it saw the real work
    assert used - allowed_by_unit() == set()
