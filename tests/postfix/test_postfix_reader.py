"""Reading master.cf through the real ``postconf``: overrides exactly as Postfix sees them."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from hook.certs.lineage import Lineage
from hook.errors import PostfixError
from hook.postfix import tls_files as discover
from hook.postfix.instance import Postfix, run_on_pty

MASTER_CF = """\
127.0.0.1:2525 inet n - n - - smtpd
  -o { smtpd_tls_chain_files = /etc/a.pem, /etc/b.pem }
  -o smtpd_tls_security_level=$sub_level
submission inet n - n - - smtpd -o smtpd_tls_wrappermode=yes -o syslog_name=postfix/submission
[::1]:smtp inet n - n - - smtpd
smtp      inet  n       -       y       -       1       postscreen
smtpd     pass  -       -       y       -       -       smtpd
  -o smtpd_tls_chain_files=/etc/c.pem
pickup    unix  n       -       n       60      1       pickup
"""


def make_config(tmp_path: Path) -> Postfix:
    (tmp_path / "main.cf").write_text(
        f"sub_level = encrypt\nqueue_directory = {tmp_path}/q\ninet_interfaces = 127.0.0.1\n")
    (tmp_path / "master.cf").write_text(MASTER_CF)
    old = time.time() - 5  # postconf stalls ~2 s on a main.cf younger than that
    for name in ("main.cf", "master.cf"):
        os.utime(tmp_path / name, (old, old))
    return Postfix(tmp_path)


def test_brace_and_dollar_overrides_are_read_as_postfix_reads_them(tmp_path: Path) -> None:
    """``-o { name = a, b }`` keeps its spaces and ``$name`` is expanded (postconf -Px)."""
    services = {s.name: s for s in make_config(tmp_path).services()}
    own = services["127.0.0.1:2525"].overrides
    assert own["smtpd_tls_chain_files"] == "/etc/a.pem, /etc/b.pem"
    assert own["smtpd_tls_security_level"] == "encrypt"
    assert (services["127.0.0.1:2525"].host, services["127.0.0.1:2525"].port) == ("127.0.0.1", 2525)


def test_service_names_ports_and_implicit_tls(tmp_path: Path) -> None:
    """Named ports resolve, IPv6 literals keep their host, wrappermode marks implicit TLS."""
    services = {s.name: s for s in make_config(tmp_path).services()}
    assert set(services) == {"127.0.0.1:2525", "submission", "[::1]:smtp", "smtp"}
    assert (services["submission"].port, services["submission"].implicit_tls) == (587, True)
    assert (services["[::1]:smtp"].host, services["[::1]:smtp"].port) == ("::1", 25)


def test_syslog_names_of_main_cf_and_master_cf(tmp_path: Path) -> None:
    """main.cf's syslog_name and each service's ``-o syslog_name=`` (each once):
    the journal knows a submission smtpd only as ``postfix/submission/smtpd``."""
    assert make_config(tmp_path).syslog_names() == ("postfix", "postfix/submission")


def test_postscreen_takes_the_certificate_of_the_smtpd_pass_service(tmp_path: Path) -> None:
    """Clients that pass postscreen talk to ``smtpd pass``: its ``-o`` decides the cert."""
    services = {s.name: s for s in make_config(tmp_path).services()}
    assert services["smtp"].command == "postscreen"
    assert services["smtp"].overrides["smtpd_tls_chain_files"] == "/etc/c.pem"


def test_chain_files_take_precedence_over_legacy_cert_files(tmp_path: Path) -> None:
    """Postfix ignores smtpd_tls_cert_file/key_file once smtpd_tls_chain_files is set: a
    lineage named only there is not used, and a service overriding only the legacy
    files still serves main.cf's chain files."""
    le = tmp_path / "le"
    bundles = tmp_path / "bundles"
    (tmp_path / "main.cf").write_text(
        f"queue_directory = {tmp_path}/q\ninet_interfaces = 127.0.0.1\n"
        f"smtpd_tls_security_level = may\n"
        f"smtpd_tls_chain_files = {bundles}/main.pem\n"
        f"smtpd_tls_cert_file = {le}/live/other/fullchain.pem\n"
        f"smtpd_tls_key_file = {le}/live/other/privkey.pem\n")
    (tmp_path / "master.cf").write_text(
        "127.0.0.1:2525 inet n - n - - smtpd\n"
        f"127.0.0.1:2587 inet n - n - - smtpd -o smtpd_tls_cert_file={le}/live/other/cert.pem\n")
    old = time.time() - 5
    for name in ("main.cf", "master.cf"):
        os.utime(tmp_path / name, (old, old))
    postfix = Postfix(tmp_path)
    other = discover.usage(postfix, Lineage(le, "other"), bundles)
    assert other.mode is discover.Mode.UNUSED, other.references
    main = discover.usage(postfix, Lineage(le, "main"), bundles)
    assert main.mode is discover.Mode.STAGED
    assert {s.port for s in main.services} == {2525, 2587}


def test_a_command_that_closes_its_terminal_and_hangs_is_a_postfix_error() -> None:
    """A reload command that detaches from the pseudo-terminal and never exits (a real
    ``sleep``) ends in :class:`PostfixError` after the timeout, not in a stray
    ``subprocess.TimeoutExpired``; the process is killed."""
    start = time.monotonic()
    with pytest.raises(PostfixError, match=r"did not finish within 0\.5 s") as caught:
        run_on_pty(["sh", "-c", "exec >/dev/null 2>&1; sleep 30"], timeout=0.5)
    assert time.monotonic() - start < 5
    assert isinstance(caught.value.__cause__, subprocess.TimeoutExpired)
