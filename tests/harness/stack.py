"""The real test stack, in Python: pebble (ACME test CA) -> certbot -> a private Postfix.

Everything binds to 127.0.0.1 on free ports picked at start, under one temporary
directory, so several stacks (and a system Postfix on port 25) never collide. Nothing
touches /etc/postfix, /etc/letsencrypt or /etc/ssl. Needs root (Postfix's master does).

Used by the pytest fixtures in ``tests/conftest.py`` and by the sandbox demo
(``python -m tests.harness.sandbox``). Facts this harness works around:

* Debian's pebble ships no certificate for its own HTTPS endpoint: we make one (trustme)
  and point certbot at it with ``REQUESTS_CA_BUNDLE``.
* pebble's root and intermediate change on every start: fetched from its management API.
* a non-interactive ``certbot renew`` sleeps up to 8 minutes unless
  ``--no-random-sleep-on-renew``; pebble's 5-year certificates need ``--force-renewal``.
* Postfix prints errors only to a terminal: commands run on a pty (``hook.postfix.instance``).
* Postfix sleeps up to ~1.8 s on every command when main.cf is under ~2 s old: we write
  main.cf/master.cf only when they change, and backdate their mtime.
* Postfix's unprivileged daemons must traverse the state directories: they are 0755.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hook.postfix.instance import run_on_pty

LO = "127.0.0.1"
DOMAIN = "mail.example.test"
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LO, 0))
        return int(s.getsockname()[1])


def wait_until(what: str, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def port_open(port: int, host: str = LO) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def make_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    return path


# --------------------------------------------------------------------------- pebble
@dataclass
class Pebble:
    """pebble on loopback with ``PEBBLE_VA_ALWAYS_VALID=1`` (no validation traffic)."""

    base: Path
    acme_port: int = field(default_factory=free_port)
    mgmt_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def directory_url(self) -> str:
        return f"https://{LO}:{self.acme_port}/dir"

    @property
    def tls_ca(self) -> Path:
        return self.base / "tls-ca.pem"

    @property
    def root(self) -> Path:
        return self.base / "root.pem"

    @property
    def intermediate(self) -> Path:
        return self.base / "intermediate.pem"

    def start(self) -> None:
        import trustme  # noqa: PLC0415

        make_dir(self.base)
        ca = trustme.CA(organization_name="certwatch test pebble HTTPS CA")
        leaf = ca.issue_cert("localhost", LO)
        ca.cert_pem.write_to_path(str(self.tls_ca))
        leaf.cert_chain_pems[0].write_to_path(str(self.base / "tls-cert.pem"))
        leaf.private_key_pem.write_to_path(str(self.base / "tls-key.pem"))
        (self.base / "config.json").write_text(json.dumps({"pebble": {
            "listenAddress": f"{LO}:{self.acme_port}",
            "managementListenAddress": f"{LO}:{self.mgmt_port}",
            "certificate": str(self.base / "tls-cert.pem"),
            "privateKey": str(self.base / "tls-key.pem"),
            "httpPort": free_port(), "tlsPort": free_port(),
            "ocspResponderURL": "", "externalAccountBindingRequired": False,
        }}))
        env = {**os.environ, "PEBBLE_VA_ALWAYS_VALID": "1", "PEBBLE_VA_NOSLEEP": "1",
               "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "100"}
        log = (self.base / "pebble.log").open("wb")
        self.proc = subprocess.Popen(["pebble", "-config", str(self.base / "config.json")],
                                     cwd=self.base, env=env, stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        wait_until("pebble ACME directory", lambda: self._get("/dir", self.acme_port) is not None)
        self.root.write_bytes(self._fetch("/roots/0"))
        self.intermediate.write_bytes(self._fetch("/intermediates/0"))

    def _ctx(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.tls_ca))

    def _get(self, path: str, port: int) -> bytes | None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"pebble exited: {(self.base / 'pebble.log').read_text()[-2000:]}")
        try:
            url = f"https://{LO}:{port}{path}"
            with urllib.request.urlopen(url, context=self._ctx(), timeout=5) as resp:
                return bytes(resp.read())
        except OSError:
            return None

    def _fetch(self, path: str) -> bytes:
        data = self._get(path, self.mgmt_port)
        if not data:
            raise RuntimeError(f"pebble management API {path} gave nothing")
        return data

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --------------------------------------------------------------------------- certbot
@dataclass
class Certbot:
    """certbot from this venv, with private directories, talking to pebble."""

    base: Path
    pebble: Pebble

    @property
    def config_dir(self) -> Path:
        return self.base / "config"

    def lineage(self, name: str = DOMAIN) -> Path:
        return self.config_dir / "live" / name

    @property
    def deploy_hooks(self) -> Path:
        return self.config_dir / "renewal-hooks" / "deploy"

    def run(self, *args: str, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(VENV_BIN / "certbot"), "--non-interactive",
                "--config-dir", str(self.config_dir), "--work-dir", str(self.base / "work"),
                "--logs-dir", str(self.base / "logs"), "--server", self.pebble.directory_url,
                *args]
        full_env = {**os.environ, "REQUESTS_CA_BUNDLE": str(self.pebble.tls_ca), **(env or {})}
        proc = subprocess.run(argv, env=full_env, capture_output=True, text=True, timeout=300,
                              check=False)
        if check and proc.returncode != 0:
            raise RuntimeError(f"certbot {' '.join(args)} failed ({proc.returncode}):\n"
                               f"{proc.stdout}\n{proc.stderr}")
        return proc

    def issue(self, name: str = DOMAIN, domains: Sequence[str] = (),
              key_type: str = "ecdsa", extra: Sequence[str] = ()) -> Path:
        for d in ("config", "work", "logs"):
            make_dir(self.base / d)
        names = list(domains) or [name]
        self.run("certonly", "--agree-tos", "--register-unsafely-without-email", "--standalone",
                 "--http-01-address", LO, "--http-01-port", str(free_port()),
                 "--key-type", key_type, "--cert-name", name,
                 *[a for d in names for a in ("-d", d)], *extra)
        return self.lineage(name)

    def renew(self, name: str = DOMAIN, env: dict[str, str] | None = None,
              extra: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
        return self.run("renew", "--cert-name", name, "--force-renewal",
                        "--no-random-sleep-on-renew", *extra, env=env)


# --------------------------------------------------------------------------- postfix
MASTER_CF_TAIL = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


@dataclass
class PostfixInstance:
    """A private Postfix: own config, queue and data directories, own loopback ports.

    Three TLS services, like a real MX + submission host: ``smtp_port`` (port-25 style,
    opportunistic STARTTLS), ``submission_port`` (587 style, STARTTLS required) and
    ``smtps_port`` (465 style, implicit TLS via ``smtpd_tls_wrappermode``).
    """

    base: Path
    hostname: str = DOMAIN
    smtp_port: int = field(default_factory=free_port)
    submission_port: int = field(default_factory=free_port)
    smtps_port: int = field(default_factory=free_port)
    chain_files: str = ""
    extra_main: dict[str, str] = field(default_factory=dict)
    postscreen: bool = False
    """Put postscreen (with tlsproxy) in front of ``smtp_port``, like a real MX."""

    @property
    def config_dir(self) -> Path:
        return self.base / "etc"

    @property
    def spool(self) -> Path:
        return self.base / "spool"

    @property
    def maillog(self) -> Path:
        return self.base / "maillog"

    @property
    def mailbox_dir(self) -> Path:
        return self.base / "mail"

    @property
    def ports(self) -> tuple[int, int, int]:
        return (self.smtp_port, self.submission_port, self.smtps_port)

    def main_cf(self) -> str:
        params = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.spool),
            "data_directory": str(self.base / "data"),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.base),
            "myhostname": self.hostname,
            "mydomain": self.hostname.partition(".")[2] or "example.test",
            "myorigin": "$myhostname",
            "inet_interfaces": LO,
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_peername_lookup": "no",
            "mydestination": "$myhostname, localhost",
            "local_recipient_maps": "",
            "mail_spool_directory": str(self.mailbox_dir),
            "default_transport": "error:5.7.1 private test instance never relays",
            "relay_transport": "$default_transport",
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
            "smtpd_tls_chain_files": self.chain_files,
            "smtpd_tls_security_level": "may",
            "smtpd_tls_loglevel": "1",
            "smtp_tls_security_level": "none",
            **self.extra_main,
        }
        return "# private test instance (tests/harness/stack.py)\n" + "".join(
            f"{k} = {v}\n" for k, v in params.items())

    def master_cf(self) -> str:
        if self.postscreen:
            front = (f"{LO}:{self.smtp_port} inet n - n - 1 postscreen\n"
                     "smtpd     pass  -       -       n       -       -       smtpd\n"
                     "tlsproxy  unix  -       -       n       -       0       tlsproxy\n"
                     "dnsblog   unix  -       -       n       -       0       dnsblog\n")
        else:
            front = f"{LO}:{self.smtp_port} inet n - n - - smtpd\n"
        return (
            front +
            f"{LO}:{self.submission_port} inet n - n - - smtpd\n"
            "  -o smtpd_tls_security_level=encrypt\n"
            f"{LO}:{self.smtps_port} inet n - n - - smtpd\n"
            "  -o smtpd_tls_wrappermode=yes\n"
            "  -o smtpd_tls_security_level=encrypt\n"
        ) + MASTER_CF_TAIL

    def write_config(self) -> None:
        make_dir(self.config_dir)
        make_dir(self.spool)
        make_dir(self.mailbox_dir).chmod(0o1777)
        for name, text in (("main.cf", self.main_cf()), ("master.cf", self.master_cf())):
            write_backdated(self.config_dir / name, text)

    def postfix(self, *args: str, check: bool = True) -> str:
        res = run_on_pty(["postfix", "-c", str(self.config_dir), *args])
        if check and not res.ok:
            raise RuntimeError(f"postfix {' '.join(args)} failed ({res.returncode}): "
                               f"{res.output}\n{self.log_tail()}")
        return res.output

    def postconf(self, *args: str) -> str:
        return subprocess.run(["postconf", "-c", str(self.config_dir), *args], check=True,
                              capture_output=True, text=True).stdout

    def set_main(self, **params: str) -> None:
        """Change main.cf parameters (backdated, so Postfix does not stall)."""
        self.extra_main.update(params)
        write_backdated(self.config_dir / "main.cf", self.main_cf())

    def reset_main(self, *names: str) -> None:
        """Drop parameters added with :meth:`set_main` (back to the harness defaults)."""
        for name in names or tuple(self.extra_main):
            self.extra_main.pop(name, None)
        write_backdated(self.config_dir / "main.cf", self.main_cf())

    def master_pid(self) -> int | None:
        try:
            pid = int((self.spool / "pid" / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def start(self) -> None:
        self.write_config()
        self.postfix("check")
        if self.master_pid():
            self.postfix("reload")
            return
        self.postfix("start")
        for port in self.ports:
            wait_until(f"postfix on {LO}:{port}", lambda p=port: port_open(p), 15)  # type: ignore[misc]

    def reload(self) -> None:
        self.postfix("reload")

    def stop(self) -> None:
        pid = self.master_pid()
        if pid is None:
            return
        self.postfix("stop", check=False)
        with contextlib.suppress(TimeoutError):
            wait_until("postfix master exit", lambda: self.master_pid() is None, 15)
        if self.master_pid():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.maillog.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def write_backdated(path: Path, text: str) -> None:
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)
    old = time.time() - 5
    os.utime(path, (old, old))


# --------------------------------------------------------------------------- the stack
@dataclass
class Stack:
    """pebble + certbot + a private Postfix, plus a config file for our tools."""

    base: Path
    pebble: Pebble
    certbot: Certbot
    postfix: PostfixInstance
    kept: bool = False
    """Set by ``--keep`` (sandbox): the cleanup leaves Postfix running."""

    @property
    def lineage(self) -> Path:
        return self.certbot.lineage()

    @property
    def config_file(self) -> Path:
        return self.base / "certwatch.toml"

    @property
    def bundle_dir(self) -> Path:
        return self.base / "bundles"

    @property
    def state_dir(self) -> Path:
        return self.base / "state"

    def write_config(self, path: Path | None = None, **sections: dict[str, object]) -> Path:
        """Write the TOML config our tools read; keyword args add or override sections.

        ``path``: write there instead of :attr:`config_file` (a second configuration)."""
        data: dict[str, dict[str, object]] = {
            "postfix": {"config_directory": str(self.postfix.config_dir)},
            "certbot": {"config_dir": str(self.certbot.config_dir)},
            "deploy": {"bundle_dir": str(self.bundle_dir), "state_dir": str(self.state_dir)},
            "probe": {"cafile": str(self.pebble.root)},
            # No DNS from the hook under test: the machine's resolver is not on loopback.
            # Tests of the DNS checks point [dns] at tests/harness/dns.py's Unbound.
            "dns": {"dane": "off", "mta_sts": False},
        }
        for name, values in sections.items():
            data.setdefault(name, {}).update(values)
        target = path or self.config_file
        target.write_text("".join(
            f"[{name}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in values.items()) + "\n"
            for name, values in data.items()))
        return target

    def env(self) -> dict[str, str]:
        return {"POSTFIX_CERTWATCH_CONFIG": str(self.config_file)}

    def install_hook(self) -> Path:
        """Install the deploy hook the documented way: a symlink in renewal-hooks/deploy/."""
        make_dir(self.certbot.deploy_hooks)
        link = self.certbot.deploy_hooks / "postfix-certwatch"
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(VENV_BIN / "postfix-deploy-hook")
        return link

def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))


def new_base(prefix: str = "certwatch-") -> Path:
    """A fresh 0755 directory under /tmp (pytest's tmp dirs are 0700: Postfix can't enter)."""
    return make_dir(Path(tempfile.mkdtemp(prefix=prefix)))


@contextlib.contextmanager
def running_pebble(base: Path | None = None) -> Iterator[Pebble]:
    root = base or new_base("certwatch-pebble-")
    pebble = Pebble(root)
    try:
        pebble.start()
        yield pebble
    finally:
        pebble.stop()
        if base is None and not os.environ.get("CERTWATCH_KEEP_STACK"):
            shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def running_stack(pebble: Pebble | None = None, base: Path | None = None,
                  key_type: str = "ecdsa") -> Iterator[Stack]:
    """Bring the whole stack up: pebble (unless given), a certificate, and a Postfix that
    reads certbot's ``live/`` files in place, as most tutorials set it up."""
    root = base or new_base()
    with contextlib.ExitStack() as cleanup:  # callbacks run last-in, first-out
        if base is None and not os.environ.get("CERTWATCH_KEEP_STACK"):
            cleanup.callback(shutil.rmtree, root, ignore_errors=True)
        if pebble is None:
            pebble = cleanup.enter_context(running_pebble(root / "pebble"))
        stack = Stack(root, pebble, Certbot(root / "certbot", pebble),
                      PostfixInstance(root / "postfix"))
        # looked up at exit, not now: a kept stack (sandbox --keep) leaves Postfix running
        cleanup.callback(lambda: None if stack.kept else stack.postfix.stop())
        lineage = stack.certbot.issue(key_type=key_type)
        stack.postfix.chain_files = f"{lineage}/privkey.pem, {lineage}/fullchain.pem"
        stack.postfix.start()
        stack.write_config()
        yield stack
