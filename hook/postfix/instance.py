"""Read and control a Postfix instance: ``postconf`` queries, ``postfix check/reload``,
``postmap -F`` for SNI tables, "is the master process running?".

Postfix prints its error messages to stderr only when stderr is a terminal (otherwise
only to syslog or ``maillog_file``), so ``postfix`` commands run on a pseudo-terminal
here: a failing ``postfix check`` then says why in our own error message.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hook.config import Config
from hook.errors import PostfixError

WELL_KNOWN_PORTS = {"smtp": 25, "submission": 587, "smtps": 465, "submissions": 465}
TLS_SERVER_COMMANDS = ("smtpd", "postscreen")


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    output: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


COMMAND_TIMEOUT = 60.0
"""Seconds a Postfix command (check, reload, postmap) may take (``postfix.command_timeout``)."""


def run_on_pty(argv: Sequence[str], timeout: float = COMMAND_TIMEOUT) -> CommandResult:
    """Run ``argv`` with stdout+stderr on a pseudo-terminal; return its exit code and text.

    Every failure to run or to finish in ``timeout`` seconds is a :class:`PostfixError`
    (the process group is killed): callers roll back on that one error type."""
    start = time.monotonic()
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                                close_fds=True, start_new_session=True)
    except OSError as exc:
        os.close(master)
        os.close(slave)
        raise PostfixError(f"cannot run {argv[0]}: {exc.strerror}") from exc
    os.close(slave)
    chunks: list[bytes] = []
    deadline = start + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PostfixError(f"{' '.join(argv)} did not finish within {timeout:g} s")
            ready, _, _ = select.select([master], [], [], min(remaining, 0.5))
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError as exc:  # EIO: every writer closed the terminal
                    if exc.errno != errno.EIO:
                        raise
                    data = b""
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        try:
            rc = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired as exc:  # it closed the terminal but did not exit
            raise PostfixError(f"{' '.join(argv)} did not finish within {timeout:g} s") from exc
    finally:
        os.close(master)
        if proc.poll() is None:
            _kill_group(proc)
    text = b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
    return CommandResult(tuple(argv), rc, text, time.monotonic() - start)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the command and whatever it started (its own session), then reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


@dataclass(frozen=True)
class Service:
    """One ``inet`` service of master.cf that speaks SMTP (smtpd or postscreen)."""

    name: str
    host: str
    port: int
    command: str
    overrides: Mapping[str, str] = field(default_factory=dict)
    implicit_tls: bool = False

    @property
    def label(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}{'/tls' if self.implicit_tls else '/starttls'}"


@dataclass(frozen=True)
class Postfix:
    """One Postfix instance, addressed by its configuration directory."""

    config_directory: Path
    reload_command: tuple[str, ...] = ()
    probe_host: str = ""
    command_timeout: float = COMMAND_TIMEOUT

    # -- queries ---------------------------------------------------------------------
    def postconf(self, *args: str) -> str:
        argv = ["postconf", "-c", str(self.config_directory), *args]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PostfixError(f"cannot run {' '.join(argv)}: {exc}") from exc
        if proc.returncode != 0:
            raise PostfixError(f"{' '.join(argv)} failed (exit {proc.returncode})",
                               proc.stderr or proc.stdout)
        return proc.stdout

    def parameters(self, *names: str) -> dict[str, str]:
        """Effective (``$``-expanded) values of main.cf parameters."""
        out = self.postconf("-x", *names)
        return dict(_split_assignment(line) for line in out.splitlines() if " = " in line
                    or line.endswith(" ="))

    def services(self, inet_interfaces: str | None = None) -> tuple[Service, ...]:
        """Every SMTP-speaking ``inet`` service in master.cf, with its ``-o`` overrides
        (``inet_interfaces``: main.cf's value, when the caller read it already).

        Read with ``postconf -F`` (one field per line) and ``postconf -Px`` (one ``-o``
        per line, ``$``-expanded, ``{ ... }`` values with spaces intact) rather than by
        splitting master.cf lines. A ``postscreen`` service hands clients to the
        ``smtpd pass`` service, whose overrides decide which certificate they see.
        """
        if inet_interfaces is None:
            inet_interfaces = self.parameters("inet_interfaces").get("inet_interfaces", "all")
        default_host = self._default_probe_host(inet_interfaces)
        commands: dict[tuple[str, str], str] = {}
        for line in self.postconf("-F").splitlines():
            key, value = _split_assignment(line)
            name, svc_type, fld = _split_service_key(key)
            if fld == "command":
                commands[(name, svc_type)] = value.split()[0] if value.split() else ""
        overrides: dict[tuple[str, str], dict[str, str]] = {}
        for line in self.postconf("-Px").splitlines():
            key, value = _split_assignment(line)
            name, svc_type, param = _split_service_key(key)
            overrides.setdefault((name, svc_type), {})[param] = value
        handoff = next((overrides.get(k, {}) for k, cmd in commands.items()
                        if k[1] == "pass" and cmd == "smtpd"), {})
        found = []
        for (name, svc_type), command in commands.items():
            if svc_type != "inet" or command not in TLS_SERVER_COMMANDS:
                continue
            own = overrides.get((name, svc_type), {})
            if command == "postscreen":
                own = {**handoff, **own}
            host, port = split_service_name(name, default_host)
            implicit = own.get("smtpd_tls_wrappermode", "no") == "yes"
            found.append(Service(name, host, port, command, own, implicit))
        return tuple(found)

    def syslog_names(self) -> tuple[str, ...]:
        """The ``syslog_name`` of main.cf and every ``-o syslog_name=`` of master.cf
        (Debian's submission and submissions services log as ``postfix/submission/smtpd``):
        the journal's ``SYSLOG_IDENTIFIER`` is ``NAME/PROCESS``."""
        names = [self.parameters("syslog_name").get("syslog_name", "")]
        for line in self.postconf("-Px").splitlines():
            key, value = _split_assignment(line)
            if _split_service_key(key)[2] == "syslog_name":
                names.append(value)
        return tuple(n for n in dict.fromkeys(names) if n)

    def _default_probe_host(self, inet_interfaces: str) -> str:
        if self.probe_host:
            return self.probe_host
        names = [n.strip() for n in inet_interfaces.replace(",", " ").split()]
        if not names or "all" in names or "loopback-only" in names:
            return "127.0.0.1"
        for loop in ("127.0.0.1", "localhost", "[::1]", "::1"):
            if loop in names:
                return loop.strip("[]")
        return names[0].strip("[]")

    def has_chain_files(self) -> bool:
        """Postfix >= 3.4 reads ``smtpd_tls_chain_files`` (key + chain in one file)."""
        version = self.postconf("-h", "mail_version").strip()
        try:
            major, minor = (int(x) for x in version.split(".")[:2])
        except ValueError:
            return True
        return (major, minor) >= (3, 4)

    # -- control ---------------------------------------------------------------------
    def check(self) -> CommandResult:
        """``postfix check``; raises :class:`PostfixError` with Postfix's own words."""
        res = run_on_pty(["postfix", "-c", str(self.config_directory), "check"],
                         self.command_timeout)
        if not res.ok:
            raise PostfixError(f"'postfix -c {self.config_directory} check' failed "
                               f"(exit {res.returncode})", res.output)
        return res

    def check_readonly(self) -> CommandResult:
        """What a dry run can check without writing: ``postconf -c DIR`` parses main.cf
        and master.cf (``postfix check`` would also create missing queue directories).
        A failure or a ``fatal:`` line is a :class:`PostfixError` (warnings, as with
        ``postfix check``, are not)."""
        res = run_on_pty(["postconf", "-c", str(self.config_directory)], self.command_timeout)
        said = [ln for ln in res.output.splitlines() if "fatal:" in ln]
        if not res.ok or said:
            raise PostfixError(f"'postconf -c {self.config_directory}' reports a problem with "
                               f"the Postfix configuration (exit {res.returncode})",
                               "\n".join(said) or res.output)
        return res

    def reload(self) -> CommandResult:
        argv = list(self.reload_command) or ["postfix", "-c", str(self.config_directory), "reload"]
        res = run_on_pty(argv, self.command_timeout)
        if not res.ok:
            raise PostfixError(f"'{' '.join(argv)}' failed (exit {res.returncode})", res.output)
        return res

    def postmap(self, spec: str) -> CommandResult:
        """``postmap -F`` (the table holds a copy of each certificate and key file)."""
        argv = ["postmap", "-F", "-c", str(self.config_directory), spec]
        res = run_on_pty(argv, self.command_timeout)
        if not res.ok:
            raise PostfixError(f"'{' '.join(argv)}' failed (exit {res.returncode})", res.output)
        return res

    def require_running(self, queue_directory: str) -> None:
        """Is the master process alive (``$queue_directory/pid/master.pid``)? Cheaper than
        ``postfix status`` (another process) and the same test."""
        pid_file = Path(queue_directory or "/var/spool/postfix") / "pid" / "master.pid"
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError) as exc:
            raise PostfixError(f"Postfix ({self.config_directory}) is not running "
                               f"({pid_file}: {getattr(exc, 'strerror', None) or exc})") from exc


def postfix_for(config: Config) -> Postfix:
    """The primary instance the configuration names (``postfix.*``)."""
    return Postfix(config.postfix.config_directory, config.postfix.reload_command,
                   config.postfix.probe_host, config.postfix.command_timeout)


def host_name(config: Config) -> str:
    """The name this mail server goes by, for alerts: Postfix's ``myhostname`` (what peers
    see in its greeting), else the machine's own name. Never a resolver lookup, which
    could stall an alert when DNS is what broke."""
    with contextlib.suppress(PostfixError):
        name = postfix_for(config).parameters("myhostname").get("myhostname", "")
        if name:
            return name
    return socket.gethostname()


def protect_db(path: Path, mode: int, gid: int | None) -> None:
    """``postmap -F`` copies the key files (base64) into the table, and the table gets the
    source file's mode (often 0644): make it as private as a key (``fchmod`` on an
    ``O_NOFOLLOW`` descriptor). smtpd opens the table before it drops privileges."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if gid is not None:
            os.fchown(fd, -1, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


TLS_LEVEL_PARAMS = ("smtpd_tls_security_level", "smtpd_use_tls", "smtpd_enforce_tls",
                    "postscreen_tls_security_level")


def tls_level(service: Service, params: Mapping[str, str]) -> str:
    """A service's effective STARTTLS level: ``none``, ``may`` or ``encrypt``.

    The service's ``-o`` wins over main.cf; postscreen has its own parameter (which
    defaults to smtpd's); the legacy ``smtpd_use_tls``/``smtpd_enforce_tls`` count only
    when no level is set. ``params`` must hold :data:`TLS_LEVEL_PARAMS`.
    """
    def value(name: str) -> str:
        return service.overrides[name] if name in service.overrides else params.get(name, "")

    level = value("smtpd_tls_security_level")
    if service.command == "postscreen":
        level = value("postscreen_tls_security_level") or level
    if level:
        return level
    if value("smtpd_enforce_tls") == "yes":
        return "encrypt"
    return "may" if value("smtpd_use_tls") == "yes" else "none"


def _split_assignment(line: str) -> tuple[str, str]:
    name, _, value = line.partition(" =")
    return name.strip(), value.strip()


def _split_service_key(key: str) -> tuple[str, str, str]:
    """``[::1]:25/inet/command`` -> (``[::1]:25``, ``inet``, ``command``)."""
    rest, _, last = key.rpartition("/")
    name, _, svc_type = rest.rpartition("/")
    return name, svc_type, last


def split_service_name(name: str, default_host: str) -> tuple[str, int]:
    """``[::1]:25`` / ``127.0.0.1:smtp`` / ``submission`` -> (host, port)."""
    host, port_text = default_host, name
    if name.startswith("["):
        host, _, rest = name[1:].partition("]")
        port_text = rest.lstrip(":")
    elif ":" in name:
        host, _, port_text = name.rpartition(":")
    if port_text.isdigit():
        return host, int(port_text)
    if port_text in WELL_KNOWN_PORTS:
        return host, WELL_KNOWN_PORTS[port_text]
    with contextlib.suppress(OSError):
        return host, socket.getservbyname(port_text, "tcp")
    raise PostfixError(f"master.cf service {name!r}: unknown port name {port_text!r}")
