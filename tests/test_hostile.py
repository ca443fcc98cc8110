"""Hostile input and careless admins, on the real stack (pebble + certbot + a private
Postfix after ``renew-check adopt``): nothing hangs, nothing tracebacks, nothing says OK
that is not.

Every case runs the installed entry points (``postfix-deploy-hook``, ``renew-check``,
``renew-daemon``) as separate processes and asserts: the exit code; one line that names
the input and the cause; no Python traceback anywhere; a bounded time; and that neither
the files Postfix reads nor what it serves changed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hook.certs.bundle import parse_chain
from tests.harness import badcerts as bc
from tests.harness.hookbed import Bed, served_all, staged_bed
from tests.harness.stack import LO, VENV_BIN, Pebble, port_open, wait_until, write_backdated

HOOK = str(VENV_BIN / "postfix-deploy-hook")
CHECK = str(VENV_BIN / "renew-check")
DAEMON = str(VENV_BIN / "renew-daemon")
FC, PK, CERT, CHAIN = "fullchain.pem", "privkey.pem", "cert.pem", "chain.pem"


@dataclass(frozen=True)
class Ran:
    rc: int
    out: str
    err: str
    seconds: float

    @property
    def text(self) -> str:
        return self.out + self.err

    def line_with(self, *needles: str) -> str:
        """The one output line that holds every needle (the clear line naming the input)."""
        hits = [ln for ln in self.text.splitlines() if all(n in ln for n in needles)]
        assert hits, f"no line with {needles!r} in:\n{self.text}"
        return hits[0]


def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 60,
        prefix: tuple[str, ...] = ()) -> Ran:
    start = time.monotonic()
    proc = subprocess.run([*prefix, *argv], env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL)
    ran = Ran(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)
    assert "Traceback" not in ran.text, ran.text
    return ran


@pytest.fixture(scope="module")
def bed(pebble: Pebble) -> Iterator[Bed]:
    with staged_bed(pebble) as b:
        yield b


def postfix_view(bed: Bed) -> dict[str, bytes]:
    """What Postfix reads: the staged bundle(s), main.cf and master.cf, byte for byte
    (not ``NAME.prev``: a rolled-back deploy leaves the previous version there, unread)."""
    cf = bed.stack.postfix.config_dir
    staged = {k: v for k, v in bed.files().items() if not k.endswith(".prev")}
    return {**staged, "main.cf": (cf / "main.cf").read_bytes(),
            "master.cf": (cf / "master.cf").read_bytes()}


@pytest.fixture
def hb(bed: Bed) -> Iterator[Bed]:
    """Each case: the lineage, main.cf and Postfix put back afterwards; before that, the
    case must have left what Postfix reads and serves as it was."""
    snap = bc.snapshot(bed.stack.lineage)
    main_cf = bed.stack.postfix.config_dir / "main.cf"
    main_text = main_cf.read_text()
    before = postfix_view(bed)
    yield bed
    bc.restore(bed.stack.lineage, snap)
    write_backdated(main_cf, main_text)  # a case may break main.cf on purpose
    assert postfix_view(bed) == before, "what Postfix reads changed"
    pf = bed.stack.postfix
    if pf.master_pid() is None:
        pf.postfix("start")
        for port in pf.ports:
            wait_until(f"postfix on {port}", lambda p=port: port_open(p), 15)  # type: ignore[misc]
    assert served_all(bed.stack) == [bed.served] * 3, "what Postfix serves changed"


def hook(bed: Bed, *args: str, config: Path | None = None, timeout: float = 60,
         prefix: tuple[str, ...] = ()) -> Ran:
    env = {"POSTFIX_CERTWATCH_CONFIG": str(config or bed.stack.config_file),
           "RENEWED_LINEAGE": str(bed.stack.lineage), "RENEWED_DOMAINS": "mail.example.test"}
    return run([HOOK, *args], env, timeout, prefix)


def check(bed: Bed, *args: str, timeout: float = 60) -> Ran:
    return run([CHECK, "--config", str(bed.stack.config_file), *args], timeout=timeout)


def renew(bed: Bed, *, fullchain: bytes | None = None, privkey: bytes | None = None,
          cert: bytes | None = None,
          edit: Callable[[bytes], bytes] | None = None) -> tuple[bytes, bytes]:
    """A good renewal from the test CA, with any of its files replaced (``edit``: the
    good fullchain changed); returns the good pair."""
    chain, key = bed.good_leaf()
    full = chain if fullchain is None else fullchain
    bc.renew_with(bed.stack.lineage, fullchain=edit(full) if edit else full,
                  privkey=key if privkey is None else privkey, cert=cert)
    return chain, key


def archive_file(bed: Bed, kind: str) -> Path:
    return Path(os.path.realpath(bed.stack.lineage / f"{kind}.pem"))


# ------------------------------------------------------------------ special files
def fifo(path: Path) -> Path:
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path


def unix_socket(path: Path) -> Path:
    path.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
    return path


def char_device(path: Path) -> Path:
    path.unlink(missing_ok=True)
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # what /dev/zero is
    return path


def huge(path: Path, size: int = 20 * 1024 * 1024) -> Path:
    path.write_bytes(b"# " + b"x" * size + b"\n")
    return path


SPECIAL: dict[str, tuple[Callable[[Path], Path], str]] = {
    "fifo": (fifo, "named pipe"), "socket": (unix_socket, "socket"),
    "zero-device": (char_device, "character device"), "directory": (lambda p: p, "directory"),
    "oversized": (huge, "more than"),
}


def special(bed: Bed, kind: str, name: str) -> tuple[Path, str]:
    make, said = SPECIAL[kind]
    path = bed.stack.base / f"hostile-{kind}-{name}"
    if kind == "directory":
        path.mkdir(exist_ok=True)
        return path, said
    return make(path), said


# =============================================================== 1. bounded reads
@pytest.mark.parametrize("kind", list(SPECIAL))
@pytest.mark.parametrize("command", ["hook", "renew-check", "renew-daemon"])
def test_config_that_is_not_a_regular_file(hb: Bed, command: str, kind: str) -> None:
    """--config a FIFO, socket, /dev/zero-like device, directory or 20 MiB file: a
    configuration error naming the path and what it is, at once, for all three commands
    (the FIFO used to hang them, /dev/zero grew memory by 300 MB/s)."""
    path, said = special(hb, kind, "config")
    argv = {"hook": [HOOK, "--config", str(path), "--lineage", str(hb.stack.lineage)],
            "renew-check": [CHECK, "--config", str(path), "--no-deep"],
            "renew-daemon": [DAEMON, "--config", str(path)]}[command]
    ran = run(argv, timeout=20)
    assert ran.rc == {"hook": 2, "renew-check": 3, "renew-daemon": 78}[command], ran.text
    ran.line_with(str(path), said)
    assert ran.seconds < 10


@pytest.mark.parametrize("kind", ["fifo", "zero-device", "directory", "oversized"])
def test_cafile_and_expect_cert_that_are_not_regular_files(hb: Bed, kind: str) -> None:
    """renew-check probe --cafile / --expect-cert on a special or huge file: UNKNOWN
    naming the path, never a hang."""
    path, said = special(hb, kind, "pem")
    target = f"{LO}:{hb.stack.postfix.smtp_port}"
    for option in ("--cafile", "--expect-cert"):
        ran = check(hb, "probe", target, "--no-deep", option, str(path), timeout=20)
        assert ran.rc == 3, ran.text
        ran.line_with("UNKNOWN", str(path), said)
        assert ran.seconds < 10


@pytest.mark.parametrize(("file", "kind"), [(PK, "fifo"), (FC, "fifo"), (CERT, "fifo"),
                                             (PK, "zero-device"), (FC, "zero-device")])
def test_lineage_file_that_is_not_a_regular_file(hb: Bed, file: str, kind: str) -> None:
    """A lineage file that is a named pipe (used to block the hook, and so certbot, for
    ever) or a device: refused (3) at once, naming the file; nothing written."""
    renew(hb)
    target = archive_file(hb, file.removesuffix(".pem"))
    SPECIAL[kind][0](target)
    ran = hook(hb, timeout=30)
    assert ran.rc == 3, ran.text
    ran.line_with(file, SPECIAL[kind][1])
    assert ran.seconds < 15


def test_oversized_fullchain_with_junk_after_the_pem(hb: Bed) -> None:
    """fullchain.pem with 16 MiB of junk after the PEM blocks: refused (3), naming the
    file and its size, not read into memory."""
    renew(hb, edit=lambda chain: chain + b"\0" * (16 * 1024 * 1024))
    ran = hook(hb, timeout=30)
    assert ran.rc == 3, ran.text
    ran.line_with(FC, "more than the 256 KiB")


# ================================================================ 3. consistency
def _other_leaf(bed: Bed) -> bytes:
    return bc.cert_pem(parse_chain(bed.good_leaf()[0], "x")[0])


def _key_in_fullchain(b: Bed) -> None:
    chain, key = b.good_leaf()
    renew(b, fullchain=chain + key, privkey=key)


def _cert_in_privkey(b: Bed) -> None:
    chain, key = b.good_leaf()
    renew(b, fullchain=chain, privkey=key + chain)


def _junk_between(b: Bed) -> None:
    end = b"-----END CERTIFICATE-----\n"
    renew(b, edit=lambda chain: chain.replace(end, end + b"hello\n", 1))


CONSISTENCY: dict[str, tuple[Callable[[Bed], object], str, str]] = {
    "cert-not-first-of-fullchain": (lambda b: renew(b, cert=_other_leaf(b)), CERT,
                                    "is not the first certificate of fullchain.pem"),
    "cert-holds-two": (lambda b: renew(b, cert=b.good_leaf()[0]), CERT, "holds 2 certificates"),
    "junk-after-pem": (lambda b: renew(b, edit=lambda c: c + b"trailing junk\n"),
                       FC, "non-PEM data after the PEM blocks"),
    "junk-between-pem": (_junk_between, FC, "non-PEM data between PEM blocks"),
    "key-in-fullchain": (_key_in_fullchain, FC, "holds a private key"),
    "cert-in-privkey": (_cert_in_privkey, PK, "certbot writes one private key and nothing else"),
    # 252 KiB of BEGIN lines without an END: 17 s in a back-referencing regex, before
    "begin-flood": (lambda b: renew(b, cert=b"-----BEGIN A-----\n" * 14000), CERT,
                    "non-PEM data"),
}


@pytest.mark.parametrize("case", list(CONSISTENCY))
def test_inconsistent_lineage_is_refused_before_any_write(hb: Bed, case: str) -> None:
    """What certbot never writes is refused (3) before anything is written, naming the
    file and the cause; a fullchain.pem that also holds the key used to be installed,
    fail the proof and be rolled back 20 s later (4)."""
    make, file, said = CONSISTENCY[case]
    make(hb)
    ran = hook(hb, timeout=30)
    assert ran.rc == 3, ran.text
    ran.line_with(file, said)
    assert "BEGIN" not in ran.text  # never the key (nor any PEM) in the output
    assert ran.seconds < 10


def test_chain_pem_not_the_rest_of_fullchain(hb: Bed) -> None:
    """chain.pem holding another issuer than fullchain.pem's: refused (3)."""
    renew(hb)
    archive_file(hb, "chain").write_bytes(bc.cert_pem(hb.ca.root))
    ran = hook(hb, timeout=30)
    assert ran.rc == 3, ran.text
    ran.line_with(CHAIN, "not the rest of fullchain.pem")


# ====================================================== 4. the hook's environment
def test_state_dir_that_is_a_file(hb: Bed) -> None:
    """deploy.state_dir a regular file: exit 2 (configuration/environment), naming it,
    with no traceback (it used to be exit 1 with the stack inside the JSON record)."""
    blocker = hb.stack.base / "state-is-a-file"
    blocker.write_text("not a directory\n")
    cfg = hb.stack.write_config(hb.stack.base / "state-file.toml",
                                deploy={"state_dir": str(blocker)},
                                probe={"cafile": str(hb.stack.base / "cafile.pem")})
    renew(hb)
    ran = hook(hb, config=cfg, timeout=30)
    assert ran.rc == 2, ran.text
    ran.line_with("deploy.state_dir", str(blocker))


def test_state_dir_immutable(hb: Bed) -> None:
    """An immutable (chattr +i) state dir: exit 2 naming it and the cause."""
    state = hb.stack.base / "state-immutable"
    state.mkdir(exist_ok=True)
    if subprocess.run(["chattr", "+i", str(state)], capture_output=True, check=False).returncode:
        pytest.skip("chattr +i is not supported here")
    try:
        cfg = hb.stack.write_config(hb.stack.base / "state-immutable.toml",
                                    deploy={"state_dir": str(state)},
                                    probe={"cafile": str(hb.stack.base / "cafile.pem")})
        renew(hb)
        ran = hook(hb, config=cfg, timeout=30)
    finally:
        subprocess.run(["chattr", "-i", str(state)], check=False)
    assert ran.rc == 2, ran.text
    ran.line_with("deploy.state_dir", str(state), "not permitted")


def test_state_dir_on_a_read_only_mount(hb: Bed) -> None:
    """A state dir on a read-only mount (a private mount namespace): exit 2 naming it."""
    state = hb.stack.base / "state-ro"
    state.mkdir(exist_ok=True)
    cfg = hb.stack.write_config(hb.stack.base / "state-ro.toml", deploy={"state_dir": str(state)},
                                probe={"cafile": str(hb.stack.base / "cafile.pem")})
    renew(hb)
    script = f"mount --bind {state} {state} && mount -o remount,bind,ro {state} && exec \"$@\""
    ran = hook(hb, config=cfg, timeout=30, prefix=("unshare", "-m", "sh", "-c", script, "sh"))
    assert ran.rc == 2, ran.text
    ran.line_with("deploy.state_dir", str(state), "Read-only file system")


def test_refusal_caused_by_postfix_blames_postfix(hb: Bed) -> None:
    """'postfix check' failing refuses (3) and says the lineage is not at fault (it used
    to say "fix the lineage")."""
    main_cf = hb.stack.postfix.config_dir / "main.cf"
    write_backdated(main_cf, main_cf.read_text() + "mail_owner = certwatch-no-such-user\n")
    renew(hb)
    ran = hook(hb, timeout=60)
    assert ran.rc == 3, ran.text
    ran.line_with("the lineage is not at fault, Postfix is")
    assert "fix the lineage" not in ran.err


def test_dry_run_creates_no_queue_directory(hb: Bed) -> None:
    """--dry-run writes nothing: not even the queue directory 'postfix check' creates."""
    missing = hb.stack.postfix.spool / "saved"
    with contextlib.suppress(FileNotFoundError):
        missing.rmdir()
    renew(hb)
    ran = hook(hb, "--dry-run", "--lineage", str(hb.stack.lineage), timeout=60)
    assert ran.rc == 0, ran.text
    ran.line_with("did not run 'postfix check'")
    assert not missing.exists(), "the dry run created a queue directory"


# ================================================================= 2. deadline
def test_deadline_while_waiting_for_the_lock(hb: Bed) -> None:
    """Another run holds the lock: past deploy.hook_deadline the hook exits 8 at once,
    nothing changed (certbot can go on), instead of waiting 600 s."""
    cfg = hb.stack.write_config(hb.stack.base / "deadline.toml",
                                deploy={"hook_deadline": 2},
                                probe={"cafile": str(hb.stack.base / "cafile.pem")})
    renew(hb)
    hb.stack.state_dir.mkdir(exist_ok=True)
    fd = os.open(hb.stack.state_dir / "deploy.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        ran = hook(hb, config=cfg, timeout=30)
    finally:
        os.close(fd)
    assert ran.rc == 8, ran.text
    ran.line_with("deploy.hook_deadline", "nothing was changed")
    assert 2 <= ran.seconds < 8


def first_reload_then(hb: Bed, name: str, *, first: str, then: str) -> Path:
    """A config with ``deploy.hook_deadline = 4`` whose reload command runs ``first`` the
    first time (the deploy's reload) and ``then`` before a real reload after that (the
    rollback's)."""
    marker = hb.stack.base / f"{name}-reloaded-once"
    marker.unlink(missing_ok=True)
    cfdir = hb.stack.postfix.config_dir
    reload = ["sh", "-c", f"if [ -e {marker} ]; then {then}exec postfix -c {cfdir} reload; "
                          f"else touch {marker}; {first}; fi"]
    return hb.stack.write_config(hb.stack.base / f"{name}.toml",
                                 deploy={"hook_deadline": 4, "proof_timeout": 8},
                                 postfix={"reload_command": reload},
                                 probe={"cafile": str(hb.stack.base / "cafile.pem")})


def test_deadline_after_the_write_rolls_back(hb: Bed) -> None:
    """A reload that hangs past deploy.hook_deadline: the hook stops it, rolls back
    (the previous bundle served again, proven), and exits 8."""
    cfg = first_reload_then(hb, "deadline2", first="exec sleep 60", then="")
    renew(hb)
    ran = hook(hb, config=cfg, timeout=60)
    assert ran.rc == 8, ran.text
    ran.line_with("deploy.hook_deadline", "rolled back")
    assert ran.seconds < 4 + 30


def test_deadline_during_the_rollback_lets_it_finish(hb: Bed) -> None:
    """The reload fails at once, and the rollback's reload is still running when
    deploy.hook_deadline passes: the rollback is not cut half way (it used to end as
    rollback_failed, with no reload and no proof); it finishes, proves the previous
    bundle, and the hook exits 8."""
    cfg = first_reload_then(hb, "deadline3", first="exit 1", then="sleep 6; ")
    old = served_all(hb.stack)
    renew(hb)
    ran = hook(hb, config=cfg, timeout=60)
    assert ran.rc == 8, ran.text
    assert "rollback failed" not in ran.text, ran.text
    ran.line_with("rolled back", "is served again")
    assert '"outcome": "rolled_back"' in ran.out, ran.out
    assert served_all(hb.stack) == old
    assert ran.seconds < 4 + 30


def test_deadline_the_record_and_alert_get_their_own_time() -> None:
    """The deadline passed during a (shielded) rollback that used most of its grace: the
    record and the alert still get their own time once the outcome is known, instead of
    the process exiting half way through them with no record and no alert."""
    code = ("import time\n"
            "from hook.deploy_hook.deadline import deadline\n"
            "with deadline(0.2, exit_code=8, grace=1.0, alert_grace=3.0) as watch:\n"
            "    with watch.shielded():\n"
            "        time.sleep(0.9)\n"  # the rollback: past the deadline, within its grace
            "    watch.settle()\n"
            "    time.sleep(1.0)\n"  # the record and the alert: past the rollback's grace
            "    print('recorded and alerted', watch.passed)\n")
    ran = run([sys.executable, "-c", code], timeout=30)
    assert ran.rc == 0 and "recorded and alerted True" in ran.out, ran.text

# ======================================================== 4/5/7. renew-check probe
def _big_host() -> str:
    return "ab." * 1700 + "example"


BAD_TARGETS = {
    "empty-label": ("a..b:25", "empty label"),
    "label-64": ("a" * 64 + ".example:25", "at most 63"),
    "host-5000": (_big_host(), "at most 253"),
    "space": ("mail test:25", "space"),
    "unicode-digit-port": ("127.0.0.1:²", "ASCII digits"),
    "bracket-unclosed-port": ("[::1:40400", "'[' without ']'"),
    "bracket-unclosed": ("[::1", "'[' without ']'"),
    "not-v6-in-brackets": ("[mail]:25", "not an IPv6 address"),
    "port-zero": ("127.0.0.1:0", "1-65535"),
    "port-too-big": ("127.0.0.1:65536", "1-65535"),
    "port-5000-digits": ("127.0.0.1:" + "9" * 5000, "1-65535"),
    "v6-with-port-no-brackets": ("::1:25:x", "not an IPv6 address"),
}


@pytest.mark.parametrize("case", list(BAD_TARGETS))
def test_bad_target_is_its_own_unknown_and_the_others_are_probed(hb: Bed, case: str) -> None:
    """A malformed target is that target's UNKNOWN (bad_input, naming it); the good one
    next to it is still probed and reported."""
    text, said = BAD_TARGETS[case]
    good = f"{LO}:{hb.stack.postfix.smtp_port}"
    ran = check(hb, "probe", good, text, "--no-deep", timeout=30)
    assert ran.rc == 3, ran.text
    line = ran.line_with("bad_input", said)
    assert repr(text)[:30] in line
    ran.line_with(good, "TLSv1")
    assert ran.seconds < 10


@pytest.mark.parametrize(("option", "value", "said"), [
    ("--timeout", "nan", "above 0"), ("--timeout", "inf", "above 0"),
    ("--timeout", "-1", "above 0"), ("--timeout", "0", "above 0"),
    ("--timeout", "1e300", "at most 300"), ("--timeout", "soon", "not a number"),
    ("--servername", "mail test", "space"), ("--servername", "a..b", "empty label"),
    ("--servername", "127.0.0.1", "an address cannot be sent as SNI"),
])
def test_bad_probe_option_is_a_usage_error(hb: Bed, option: str, value: str, said: str) -> None:
    """--timeout nan/inf/-1/0/1e300 (a false CRITICAL or the default, before) and a bad
    --servername: a usage error (2 here; the monitoring branch makes it 3) naming it."""
    ran = check(hb, "probe", f"{LO}:{hb.stack.postfix.smtp_port}", option, value, timeout=20)
    assert ran.rc in (2, 3), ran.text
    ran.line_with(option, said)


@pytest.mark.parametrize(("key", "value"), [
    ("timeout", "nan"), ("timeout", "inf"), ("timeout", "1e300"), ("timeout", "-1.0"),
])
def test_bad_probe_timeout_in_the_config(hb: Bed, key: str, value: str) -> None:
    """probe.timeout = nan / inf / 1e300 / -1 (tracebacks, before): a config error naming
    the file and the key, for renew-check (3) and the hook (2)."""
    cfg = hb.stack.base / f"bad-{value}.toml"
    cfg.write_text(hb.stack.config_file.read_text().replace(
        "[probe]\n", f"[probe]\n{key} = {value}\n", 1))
    ran = run([CHECK, "--config", str(cfg), "probe", f"{LO}:{hb.stack.postfix.smtp_port}"])
    assert ran.rc == 3, ran.text
    ran.line_with(str(cfg), f"probe.{key}")
    ran = hook(hb, config=cfg)
    assert ran.rc == 2, ran.text
    ran.line_with(str(cfg), f"probe.{key}")


def test_starttls_probe_of_an_implicit_tls_port_says_try_implicit(hb: Bed) -> None:
    """STARTTLS asked of the implicit-TLS port: wrong_tls_mode with "try --implicit"
    within about a second, not the full timeout with "filtered?"."""
    ran = check(hb, "probe", f"{LO}:{hb.stack.postfix.smtps_port}", "--starttls",
                "--timeout", "20", timeout=30)
    assert ran.rc == 2, ran.text
    ran.line_with("wrong_tls_mode", "try --implicit")
    assert ran.seconds < 5


def test_implicit_probe_of_a_starttls_port_says_try_starttls(hb: Bed) -> None:
    ran = check(hb, "probe", f"{LO}:{hb.stack.postfix.smtp_port}", "--implicit",
                "--timeout", "20", timeout=30)
    assert ran.rc == 2, ran.text
    ran.line_with("wrong_tls_mode", "try --starttls")
    assert ran.seconds < 5


def test_name_that_does_not_resolve_gets_a_dns_fix(hb: Bed, tmp_path: Path) -> None:
    """A .invalid name, with the resolver pointed at a loopback port where nothing
    listens (a private mount namespace): dns_lookup_failed and a DNS fix, not "is
    Postfix running"."""
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    script = "mount --bind \"$0\" /etc/resolv.conf && exec \"$@\""
    ran = run([CHECK, "--config", str(hb.stack.config_file), "probe", "nowhere.invalid:25",
               "--no-deep"], prefix=("unshare", "-m", "sh", "-c", script, str(conf)), timeout=30)
    assert ran.rc == 2, ran.text
    ran.line_with("dns_lookup_failed", "nowhere.invalid")
    ran.line_with("dig")
    assert "is Postfix running" not in ran.text


def test_deep_checks_stay_within_the_timeout(hb: Bed) -> None:
    """With deep checks a target's result takes at most its timeout + 1 s (it could take
    4x before): the slow greeting fake spends the budget, the rest is "not tried"."""
    from tests.harness.fakesmtp import Behaviour, fake_smtp  # noqa: PLC0415

    with fake_smtp(Behaviour.SLOW_MULTILINE) as srv:
        ran = check(hb, "--json", "probe", f"{srv.host}:{srv.port}", "--deep", "--timeout", "2",
                    "--cafile", str(hb.stack.base / "cafile.pem"), timeout=30)
    import json  # noqa: PLC0415

    [svc] = json.loads(ran.out)["services"]
    assert svc["seconds"] <= 2 + 1, svc
    assert ran.seconds < 2 + 1 + 3  # + process start-up
    assert "not tried" in ran.out


def test_global_options_after_the_subcommand(hb: Bed) -> None:
    """`probe HOST:PORT --json` and `adopt L --config F` are accepted (options used to
    work only before the subcommand)."""
    ran = run([CHECK, "probe", f"{LO}:{hb.stack.postfix.smtp_port}", "--no-deep", "--json",
               "--config", str(hb.stack.config_file)])
    assert ran.rc == 0 and ran.out.lstrip().startswith("{"), ran.text
    other = hb.stack.base / "no-lineage-here"
    ran = run([CHECK, "adopt", str(other), "--config", str(hb.stack.config_file)])
    assert ran.rc == 3, ran.text
    ran.line_with(str(other), "not a lineage directory")


def test_renew_check_overall_deadline_names_what_did_not_finish(hb: Bed) -> None:
    """A resolver that never answers (a silent UDP socket on loopback) would hold the DNS
    checks for their timeouts: past the overall deadline renew-check says UNKNOWN and
    which stage did not finish (shortened from 50 s to 2 s here), and the process ends
    then, not when the stage's threads give up (20 s DNS timeouts here; Nagios kills a
    check still running at 60 s and says CRITICAL)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((LO, 0))
        cfg = hb.stack.write_config(hb.stack.base / "silent-dns.toml",
                                    dns={"resolver": LO, "resolver_port": silent.getsockname()[1],
                                         "timeout": 20, "dane": "refuse", "mta_sts": False},
                                    probe={"cafile": str(hb.stack.base / "cafile.pem")})
        code = ("import sys\n"
                "from daemon.renew_check import cli\n"
                "cli.RUN_DEADLINE = 2.0\n"
                f"sys.exit(cli.main(['--config', {str(cfg)!r}, '--no-deep']))\n")
        ran = run([sys.executable, "-c", code], timeout=60)
    assert ran.rc == 3, ran.text
    assert "did not finish within 2 s" in ran.out and "still checking 1 certificate(s)" in ran.out, ran.out
    assert ran.out.startswith("UNKNOWN: "), ran.out
    assert ran.seconds < 5, f"the process outlived its UNKNOWN line: {ran.seconds:.1f} s"


def _postfix_pids(master: int) -> list[int]:
    """The master and its children (smtpd processes hold the listening sockets too)."""
    kids = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if int(stat_file.read_text().rpartition(")")[2].split()[1]) == master:
                kids.append(int(stat_file.parent.name))
    return [master, *kids]


def test_renew_check_overall_deadline_does_not_wait_for_the_probes(hb: Bed) -> None:
    """Postfix accepts connections but never answers (every process stopped): the probes
    of the three services run in a pool for probe.timeout (20 s here). Past the overall
    deadline (shortened to 2 s) renew-check says UNKNOWN and exits then, instead of
    lingering until the pool's threads give up."""
    cfg = hb.stack.write_config(hb.stack.base / "stopped-postfix.toml",
                                probe={"cafile": str(hb.stack.base / "cafile.pem"), "timeout": 20},
                                dns={"dane": "off", "mta_sts": False})
    code = ("import sys\n"
            "from daemon.renew_check import cli\n"
            "cli.RUN_DEADLINE = 2.0\n"
            f"sys.exit(cli.main(['--config', {str(cfg)!r}, '--no-deep', '--no-dns']))\n")
    master = hb.stack.postfix.master_pid()
    assert master is not None
    stopped = _postfix_pids(master)
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        ran = run([sys.executable, "-c", code], timeout=60)
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    assert ran.rc == 3, ran.text
    assert ran.out.startswith("UNKNOWN: ") and "did not finish within 2 s" in ran.out, ran.out
    assert ran.seconds < 6, f"the process outlived its UNKNOWN line: {ran.seconds:.1f} s"

# ==================================================================== 6. adopt
def test_adopt_of_a_lineage_postfix_does_not_read_refuses(hb: Bed) -> None:
    """adopt of another lineage (Postfix reads mail.example.test's bundle): refused
    (UNKNOWN), saying what Postfix reads today and the command that switches; main.cf
    unchanged (it used to say OK with no service)."""
    other = hb.stack.certbot.issue(name="other.example.test")
    ran = check(hb, "adopt", str(other), timeout=60)
    assert ran.rc == 3, ran.text
    line = ran.line_with("refusing to adopt", str(other))
    assert "smtpd_tls_chain_files" in line and "--replace" in line
    assert "OK" not in ran.out


# ============================================================ 9. the daemon's config
@pytest.mark.parametrize(("section", "key", "value", "said"), [
    ("probe", "timeout", "nan", "probe.timeout"),
    ("dns", "timeout", "inf", "dns.timeout"),
    ("postfix", "probe_host", '"mail test"', "postfix.probe_host"),
    ("daemon", "probe_interval", "-inf", "daemon.probe_interval"),
])
def test_daemon_refuses_a_bad_config_at_once(hb: Bed, section: str, key: str, value: str,
                                             said: str) -> None:
    """renew-daemon with a non-finite or malformed value: exit 78 (EX_CONFIG, no restart)
    with one line naming file and key."""
    cfg = hb.stack.base / f"daemon-{section}-{key}.toml"
    cfg.write_text(f"[{section}]\n{key} = {value}\n")
    ran = run([DAEMON, "--config", str(cfg)], timeout=20)
    assert ran.rc == 78, ran.text
    ran.line_with(str(cfg), said)


def test_sandbox_keep_leaves_a_good_running_stack() -> None:
    """scripts/sandbox.sh --keep: Postfix still runs afterwards, the botched renewal is
    gone, and the suggested 'renew-check --dry-run' is OK."""
    proc = subprocess.run([sys.executable, "-m", "tests.harness.sandbox", "--keep"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    base = Path(next(ln for ln in proc.stdout.splitlines() if ln.startswith("stack kept under"))
                .split()[3])
    pid = int(next(ln for ln in proc.stdout.splitlines() if "stop: postfix" in ln)
              .split("kill ")[1].split(";")[0])
    try:
        assert (base / "postfix" / "spool" / "pid" / "master.pid").exists()
        ran = run([CHECK, "--config", str(base / "certwatch.toml"), "--dry-run"])
        assert ran.rc == 0, ran.text
        assert "refused: refused:" not in proc.stdout
    finally:
        subprocess.run(["postfix", "-c", str(base / "postfix" / "etc"), "stop"],
                       capture_output=True, check=False)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 15)
        time.sleep(2)
        subprocess.run(["rm", "-rf", str(base)], check=False)
