"""A real Debian 12 host for the tests: a root built from Debian's packages, booted with
systemd as PID 1 in ``systemd-nspawn`` on a private network (its own loopback and a veth
pair inside it; nothing leaves the container).

The root is built by ``tests/harness/host_root.sh`` (mmdebstrap, from the mirror the
machine's apt already uses) and cached under :data:`CACHE`, keyed by a hash of that
script and the apt sources: a changed package list or customization rebuilds it, an
unchanged one is reused (a build takes 35-50 s, a boot 1-2 s). Every boot uses
``--volatile=overlay``: the cached root is never written to.

Facts this harness works around (measured here, see STACK-NOTES):

* PID 1 of the machine is not systemd: ``machinectl`` and ``systemd-run -M`` do not
  work. Commands enter the container with ``nsenter -t LEADER -a`` and a clean
  environment (an admin's root shell: PATH, HOME=/root, nothing of ours).
* Without ``--system-call-filter=bpf`` nspawn blocks ``bpf()`` and systemd silently
  ignores ``IPAddressDeny=``; without ``SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1`` the
  container gets the host's cgroup v1 layout.
* The host mounts the memory, pids and cpu controllers on cgroup v1, so the container's
  unified hierarchy has no controllers: ``MemoryMax=``/``TasksMax=`` cannot be enforced.
* The kernel has no ``dummy`` module: the second address sits on a veth pair.
* The container reaches no package registry: the project comes in as a wheelhouse built
  here with ``scripts/wheelhouse.sh`` and is installed offline.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("CERTWATCH_HOST_CACHE", "/var/cache/postfix-certwatch-test"))
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BUILD_SCRIPT = HERE / "host_root.sh"
ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root",
       "LANG=C.UTF-8", "TERM=dumb")
"""The environment of every command run inside: an admin's root login shell."""
PRUNE_AFTER = 7 * 86400.0
"""Cached roots (of other keys) unused for this long are removed."""


class HostError(RuntimeError):
    """The test bed could not be built or booted: a test needing it must fail, loudly."""


# ------------------------------------------------------------------------------ the root
def apt_sources(paths: Sequence[Path] | None = None) -> tuple[str, ...]:
    """The machine's apt sources as one-line ``deb URI SUITE COMPONENTS`` entries (the
    deb822 ``*.sources`` files and ``sources.list``), for mmdebstrap."""
    if paths is None:
        d = Path("/etc/apt/sources.list.d")
        paths = [Path("/etc/apt/sources.list"), *sorted(d.glob("*.list")), *sorted(d.glob("*.sources"))]
    lines: list[str] = []
    for path in paths:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^(\w[\w-]*):[ \t]*(.*)$", stanza, re.M))
                if fields.get("Enabled", "yes") == "no" or "deb" not in fields.get("Types", "").split():
                    continue
                for uri in fields.get("URIs", "").split():
                    for suite in fields.get("Suites", "").split():
                        lines.append(f"deb {uri} {suite} {fields.get('Components', 'main')}")
        else:
            lines += [ln.strip() for ln in text.splitlines() if ln.strip().startswith("deb ")]
    if not lines:
        raise HostError("no apt sources found on this machine (/etc/apt/sources.list*)")
    return tuple(dict.fromkeys(lines))


def root_key(sources: Sequence[str]) -> str:
    digest = hashlib.sha256(BUILD_SCRIPT.read_bytes())
    digest.update("\n".join(sources).encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Root:
    """A built root: where it is, its cache key, and how long building it took (None:
    it came from the cache)."""

    path: Path
    key: str
    build_seconds: float | None


def build_root(cache: Path = CACHE) -> Root:
    """The cached root for the current build script and apt sources, built if missing.
    Several test runs at once wait for each other on a lock (one build, not two)."""
    for tool in ("mmdebstrap", "systemd-nspawn", "nsenter"):
        if shutil.which(tool) is None:
            raise HostError(f"{tool} is missing: run scripts/setup.sh (apt: mmdebstrap systemd-container)")
    if os.geteuid() != 0:
        raise HostError("building and booting the test host needs root")
    sources = apt_sources()
    key = root_key(sources)
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"root-{key}"
    with open(cache / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _prune(cache, keep=target)
        if (target / "usr/lib/systemd/systemd").exists():
            os.utime(target)  # last used: for _prune
            return Root(target, key, None)
        start = time.monotonic()
        proc = subprocess.run(["bash", str(BUILD_SCRIPT), str(target), *sources],
                              capture_output=True, text=True, check=False, timeout=900)
        if proc.returncode != 0:
            raise HostError(f"building the test host root failed ({proc.returncode}):\n"
                            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return Root(target, key, time.monotonic() - start)


def _prune(cache: Path, keep: Path) -> None:
    for old in cache.glob("root-*"):
        if old != keep and old.is_dir() and time.time() - old.stat().st_mtime > PRUNE_AFTER:
            shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------- the wheelhouse
def build_wheelhouse(out: Path, source: Path = REPO) -> Path:
    """postfix-certwatch and its dependencies as wheels, built on this machine with the
    distribution's Python (the container's is the same Debian 12 python3.11), the way
    docs/install.md tells an admin to do it for a server without Internet access."""
    proc = subprocess.run(["bash", str(source / "scripts" / "wheelhouse.sh"), str(out),
                           "--python", "/usr/bin/python3"],
                          capture_output=True, text=True, check=False, timeout=600)
    if proc.returncode != 0:
        raise HostError(f"scripts/wheelhouse.sh failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return out


# ------------------------------------------------------------------------------- the host
@dataclass(frozen=True)
class Host:
    """A booted container: run commands inside as root, as an admin would."""

    name: str
    leader: int
    """PID (in our namespace) of the container's systemd."""
    nspawn: int
    log: Path

    def run(self, *argv: str, check: bool = True, input: str | None = None,
            timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside, in a clean root environment; raise with its output on a
        non-zero exit when ``check``."""
        full = ["nsenter", "-t", str(self.leader), "-a", "env", "-i", *ENV, *argv]
        proc = subprocess.run(full, capture_output=True, text=True, check=False,
                              input=input, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"inside {self.name}: {' '.join(argv)} exited {proc.returncode}:\n"
                                 f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        return proc

    def sh(self, script: str, check: bool = True, timeout: float = 120.0) -> str:
        """Run a shell snippet inside and return its stdout."""
        return self.run("sh", "-ec", script, check=check, timeout=timeout).stdout

    def read(self, path: str) -> str:
        return self.run("cat", path).stdout

    def write(self, path: str, text: str, mode: str = "0644") -> None:
        self.run("sh", "-ec", f'mkdir -p "$(dirname "{path}")"; cat > "{path}.tmp"; '
                 f'chmod {mode} "{path}.tmp"; mv -f "{path}.tmp" "{path}"', input=text)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl show -p ...`` as a dict."""
        out = self.run("systemctl", "show", unit, *(f"-p{p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str, since_cursor: str = "") -> list[str]:
        """``journalctl -u UNIT -o cat`` lines (after ``since_cursor``, if given)."""
        args = ["journalctl", "--no-pager", "-u", unit, "-o", "cat"]
        if since_cursor:
            args += ["--after-cursor", since_cursor]
        return self.run(*args).stdout.splitlines()

    def cursor(self) -> str:
        out = self.run("journalctl", "--no-pager", "-n", "0", "--show-cursor").stdout
        match = re.search(r"-- cursor: (\S+)", out)
        return match.group(1) if match else ""

    def served_sha256(self, host: str, port: int, starttls: bool) -> str:
        """SHA-256 fingerprint (lower-case hex) of the leaf served on host:port, read with
        the container's own openssl, or "" if none."""
        tls = "-starttls smtp" if starttls else ""
        out = self.sh(f"timeout 10 openssl s_client -connect {host}:{port} {tls} "
                      f"-servername mail.example.test </dev/null 2>/dev/null "
                      f"| openssl x509 -noout -fingerprint -sha256 2>/dev/null || true")
        return out.strip().partition("=")[2].replace(":", "").lower()

    def wait_for(self, what: str, script: str, timeout: float = 30.0) -> float:
        """Poll a shell snippet inside until it exits 0; the seconds it took."""
        start = time.monotonic()
        while self.run("sh", "-c", script, check=False).returncode != 0:
            if time.monotonic() - start > timeout:
                raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
            time.sleep(0.2)
        return time.monotonic() - start


@contextlib.contextmanager
def booted(root: Root, binds: Sequence[tuple[Path, str]] = (), boot_timeout: float = 60.0
           ) -> Iterator[tuple[Host, float]]:
    """Boot ``root`` (read-only, an overlay on top) and yield the host and the seconds
    until ``systemctl is-system-running --wait`` answered; power it off afterwards."""
    name = f"certwatch-{os.getpid()}-{int(time.time() * 1000) % 100000}"
    log = Path(f"/run/{name}.log")
    argv = ["systemd-nspawn", "-D", str(root.path), "-b", "--private-network",
            "--register=no", "--keep-unit", "-M", name, "--console=read-only",
            "--system-call-filter=bpf", "--volatile=overlay", "--timezone=off",
            *(f"--bind-ro={src}:{dst}" for src, dst in binds)]
    start = time.monotonic()
    with open(log, "wb") as out:
        nspawn = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                  start_new_session=True,
                                  env={**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"})
    host: Host | None = None
    try:
        leader = _wait_leader(nspawn, log, start + boot_timeout)
        host = Host(name, leader, nspawn.pid, log)
        state = ""
        while time.monotonic() < start + boot_timeout:
            proc = host.run("systemctl", "is-system-running", "--wait", check=False, timeout=boot_timeout)
            state = proc.stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(0.1)
        if state != "running":
            failed = host.run("systemctl", "--failed", "--no-pager", check=False).stdout
            raise HostError(f"{name} booted to {state!r}, not 'running':\n{failed}\n{_tail(log)}")
        yield host, time.monotonic() - start
    finally:
        _power_off(nspawn, host)
        with contextlib.suppress(OSError):
            log.unlink()


def _wait_leader(nspawn: subprocess.Popen[bytes], log: Path, deadline: float) -> int:
    children = Path(f"/proc/{nspawn.pid}/task/{nspawn.pid}/children")
    while time.monotonic() < deadline:
        if nspawn.poll() is not None:
            raise HostError(f"systemd-nspawn exited {nspawn.returncode} (can this machine boot "
                            f"containers? root, CAP_SYS_ADMIN, /sys/fs/cgroup):\n{_tail(log)}")
        with contextlib.suppress(OSError, ValueError):
            pids = children.read_text().split()
            if pids and Path(f"/proc/{pids[0]}/root/usr/lib/systemd/systemd").exists():
                comm = Path(f"/proc/{pids[0]}/comm").read_text().strip()
                if comm == "systemd":
                    return int(pids[0])
        time.sleep(0.05)
    raise HostError(f"no systemd in the container after the boot timeout:\n{_tail(log)}")


def _power_off(nspawn: subprocess.Popen[bytes], host: Host | None) -> None:
    if nspawn.poll() is None and host is not None:
        host.run("systemctl", "poweroff", "--no-block", check=False, timeout=30)
        with contextlib.suppress(subprocess.TimeoutExpired):
            nspawn.wait(30)
    if nspawn.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(nspawn.pid, signal.SIGKILL)
        nspawn.wait(10)


def _tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
