"""``renew-check`` end to end on the real stack: the no-argument survey, ``probe``,
``--dry-run`` through the deploy pipeline, the JSON schema, text output and exit codes."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.renew_check import cli as check
from daemon.renew_check import render
from daemon.renew_check.audit import PostfixTLS
from daemon.renew_check.survey import survey, targets_for
from hook import config as config_mod
from hook.certs.bundle import fingerprint, parse_chain
from hook.postfix.instance import Service
from hook.verdict import Code
from tests.harness.fakesmtp import Behaviour, fake_smtp
from tests.harness.minica import MiniCA
from tests.harness.stack import DOMAIN, LO, Pebble, Stack, running_stack

HARDENED = {"smtpd_tls_exclude_ciphers": "aNULL", "smtpd_tls_mandatory_exclude_ciphers": "aNULL",
            "smtpd_tls_protocols": ">=TLSv1.2", "smtpd_tls_mandatory_protocols": ">=TLSv1.2",
            "smtp_tls_security_level": "may"}
CODES = {c.value for c in Code}


@pytest.fixture(scope="module")
def rc_stack(pebble: Pebble) -> Iterator[Stack]:
    """One stack for the read-only tests of this module."""
    with running_stack(pebble) as s:
        yield s


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    rc = check.main(["--json", *argv])
    return rc, json.loads(capsys.readouterr().out)


def assert_schema(doc: dict[str, Any]) -> None:
    assert doc["schema"] == "postfix-certwatch/renew-check/1"
    assert set(doc) == {"schema", "command", "status", "exit_code", "checked_at", "summary",
                        "certificates", "services", "audit", "lineages", "peers"}
    problems = [*doc["audit"], *(p for c in doc["certificates"] for p in c["problems"]),
                *(p for s in doc["services"] for p in s["problems"])]
    for p in problems:
        assert set(p) == {"code", "status", "detail", "fix"}
        assert p["code"] in CODES


def test_survey_of_stock_postfix(rc_stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    """No arguments: the one lineage Postfix reads, its three TLS services (roles mx,
    submission, submissions) probed and matching the disk, the deep findings (critical on
    submission: exit 2) and the client-side audit (with the lineage read in place: adopt
    it), in the documented JSON schema."""
    rc, doc = run_json(capsys, "--config", str(rc_stack.config_file))
    assert_schema(doc)
    assert (rc, doc["status"], doc["exit_code"], doc["command"]) == (2, "critical", 2, "check")
    [cert] = doc["certificates"]
    assert cert["name"] == DOMAIN and cert["lineage"] == str(rc_stack.lineage)
    assert cert["status"] == "ok" and cert["lifetime_left"] > 0.99
    assert cert["used_by"][0].startswith("main.cf: smtpd_tls_chain_files")
    roles = [s["role"] for s in doc["services"]]
    assert roles == ["mx", "submission", "submissions"]
    for s in doc["services"]:
        assert s["leaf_sha256"] == cert["leaf_sha256"] == s["expected_sha256"][0]
        assert set(s["deep"]["accepted"]) == {"anonymous", "TLSv1", "TLSv1.1"}
    assert [s["status"] for s in doc["services"]] == ["warning", "critical", "critical"]
    assert "client_tls_level" in {p["code"] for p in doc["audit"]}
    [in_place] = [p for p in doc["audit"] if p["code"] == "lineage_in_place"]
    assert in_place["status"] == "warning"
    assert in_place["fix"].startswith(f"renew-check adopt {rc_stack.lineage}")


def test_plain_text_is_nagios_style_and_tty_gets_a_table(rc_stack: Stack) -> None:
    """Plain text starts with 'STATUS: summary | perfdata'; on a terminal it is a table
    with a header and colours; both show the fix lines."""
    cfg = config_mod.load(str(rc_stack.config_file), {})
    result = survey(cfg, deep=False)
    plain = render.survey_text(result, tty=False)
    first = plain.splitlines()[0]
    assert first.startswith(f"{result.status.name}: 1 certificate(s), 3 TLS service(s)")
    assert f"'{DOMAIN} days_left'=" in first
    assert "\x1b[" not in plain
    table = render.survey_text(result, tty=True)
    assert "STATUS" in table.splitlines()[2] and "\x1b[" in table
    assert "fix: postconf -e 'smtp_tls_security_level = may'" in table


@pytest.fixture
def hardened(stack: Stack, capsys: pytest.CaptureFixture[str]) -> Stack:
    """Every printed fix applied, ``renew-check adopt`` (no lineage read in place) included."""
    stack.postfix.set_main(**HARDENED)
    assert check.main(["--config", str(stack.config_file), "adopt", str(stack.lineage)]) == 0
    capsys.readouterr()
    time.sleep(0.3)  # idle old smtpd processes may take one more connection
    return stack


def test_hardened_postfix_is_ok(hardened: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    """With the printed fixes applied, the survey is OK (exit 0) and the plain output's
    first line says so."""
    rc = check.main(["--config", str(hardened.config_file)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.startswith("OK: 1 certificate(s), 3 TLS service(s): no problems")


def test_bundle_older_than_lineage_is_stale(hardened: Stack,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """After ``adopt``, a certbot renewal without the hook leaves the bundle Postfix reads
    older than the lineage: the certificate is ``stale`` on disk (exit 2), and the fix
    names the deploy hook."""
    cfg = str(hardened.config_file)
    assert check.main(["--config", cfg, "adopt", str(hardened.lineage)]) == 0
    hardened.certbot.renew()
    capsys.readouterr()
    rc, doc = run_json(capsys, "--config", cfg, "--no-deep")
    assert rc == 2
    [cert] = doc["certificates"]
    assert cert["name"] == DOMAIN and [p["code"] for p in cert["problems"]] == ["stale"]
    assert "postfix-deploy-hook" in cert["problems"][0]["fix"]


def test_dry_run_goes_through_the_deploy_pipeline(rc_stack: Stack,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """``--dry-run`` renders the deploy pipeline's own report (would_deploy and its steps)
    and changes nothing in main.cf."""
    main_cf = (rc_stack.postfix.config_dir / "main.cf").read_bytes()
    rc, doc = run_json(capsys, "--config", str(rc_stack.config_file), "--dry-run")
    assert_schema(doc)
    assert rc == 0 and doc["command"] == "dry-run"
    [lin] = doc["lineages"]
    assert lin["outcome"] == "would_deploy" and any("reload" in s for s in lin["steps"])
    assert (rc_stack.postfix.config_dir / "main.cf").read_bytes() == main_cf


def test_probe_subcommand_checks_name_trust_and_expected_cert(
        rc_stack: Stack, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """``probe``: with the right CA and name it is only the deep findings; a wrong
    ``--servername`` is name_mismatch; ``--expect-cert`` of another cert is stale."""
    cfg = str(rc_stack.config_file)
    target = f"{LO}:{rc_stack.postfix.submission_port}"
    rc, doc = run_json(capsys, "--config", cfg, "probe", target, "--no-deep",
                       "--servername", DOMAIN, "--cafile", str(rc_stack.pebble.root))
    assert_schema(doc)
    assert rc == 0 and doc["services"][0]["problems"] == []
    rc, doc = run_json(capsys, "--config", cfg, "probe", target, "--no-deep",
                       "--servername", "other.example.test")
    assert rc == 2 and [p["code"] for p in doc["services"][0]["problems"]] == ["name_mismatch"]
    other = tmp_path / "other.pem"
    other.write_bytes(MiniCA().issue([DOMAIN]).cert_pem())
    rc, doc = run_json(capsys, "--config", cfg, "probe", target, "--no-deep",
                       "--expect-cert", str(other))
    assert rc == 2 and [p["code"] for p in doc["services"][0]["problems"]] == ["stale"]
    served = fingerprint(parse_chain((rc_stack.lineage / "cert.pem").read_bytes(), "c")[0])
    assert doc["services"][0]["leaf_sha256"] == served


def test_probe_exit_codes_follow_nagios(rc_stack: Stack,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """421 is WARNING (1), 454 CRITICAL (2), a bad target or config UNKNOWN (3)."""
    cfg = str(rc_stack.config_file)
    with fake_smtp(Behaviour.BUSY_421) as srv:
        rc, doc = run_json(capsys, "--config", cfg, "probe", f"{srv.host}:{srv.port}", "--no-deep")
    assert rc == 1 and doc["services"][0]["problems"][0]["code"] == "busy"
    with fake_smtp(Behaviour.REFUSE_454, host="::1") as srv:
        rc, doc = run_json(capsys, "--config", cfg, "probe", f"[::1]:{srv.port}", "--no-deep")
    assert rc == 2 and doc["services"][0]["problems"][0]["code"] == "starttls_refused"
    assert check.main(["--config", cfg, "probe", "no-port:x"]) == 3
    assert check.main(["--config", "/nonexistent/certwatch.toml"]) == 3


def test_help_starts_fast() -> None:
    """``renew-check --help`` starts in well under 0.25 s (heavy modules load lazily):
    the median of five runs of the installed entry point."""
    exe = Path(sys.executable).parent / "renew-check"
    times = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([str(exe), "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    assert statistics.median(times) < 0.25, times
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import daemon.renew_check.cli"],
                         capture_output=True, text=True, check=True).stderr
    assert "cryptography" not in out


def test_targets_cover_both_address_families() -> None:
    """A service on every interface of a dual-stack Postfix is probed over IPv4 and
    IPv6 (``::1``); an explicit address or a configured probe host is probed alone."""
    smtp = Service("smtp", "127.0.0.1", 25, "smtpd")
    dual = PostfixTLS({"inet_protocols": "all", "inet_interfaces": "all"})
    assert [t.host for t in targets_for(smtp, dual, "")] == ["127.0.0.1", "::1"]
    assert [t.host for t in targets_for(smtp, dual, "192.0.2.1")] == ["127.0.0.1"]
    v4 = PostfixTLS({"inet_protocols": "ipv4", "inet_interfaces": "all"})
    assert [t.host for t in targets_for(smtp, v4, "")] == ["127.0.0.1"]
    pinned = Service("127.0.0.1:smtp", "127.0.0.1", 25, "smtpd")
    assert [t.host for t in targets_for(pinned, dual, "")] == ["127.0.0.1"]


@pytest.mark.parametrize(("text", "parsed"), [
    ("mx.example.org:587", ("mx.example.org", 587)), ("mx.example.org", ("mx.example.org", 25)),
    ("[::1]:465", ("::1", 465)), ("[::1]", ("::1", 25)), ("::1", ("::1", 25)),
])
def test_target_syntax(text: str, parsed: tuple[str, int]) -> None:
    """``probe`` targets: host:port, host (25), [IPv6]:port, bare IPv6 (25)."""
    assert check.split_target(text) == parsed


def test_monitoring_user_gets_unknown_not_critical(rc_stack: Stack) -> None:
    """Run as an unprivileged user (as Nagios does): certbot's 0700 live/ cannot be read,
    which is UNKNOWN with a hint (never a false CRITICAL); the probes still run, and the
    key file is still told apart from the certificate by its name."""
    exe = Path(sys.executable).parent / "renew-check"
    proc = subprocess.run(["runuser", "-u", "nobody", "--", str(exe), "--config",
                           str(rc_stack.config_file), "--json", "--no-deep"],
                          capture_output=True, text=True, check=False, timeout=60)
    doc = json.loads(proc.stdout)
    [cert] = doc["certificates"]
    assert cert["status"] == "unknown", cert
    assert cert["problems"][0]["code"] == "unreadable" and "root" in cert["problems"][0]["fix"]
    assert [s["status"] for s in doc["services"]] == ["ok"] * 3
    assert proc.returncode == doc["exit_code"] != 2


def test_lineage_filter(rc_stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    """``--lineage`` keeps that lineage's certificate and services; a lineage Postfix does
    not use gives UNKNOWN (3) saying so, not a silent OK."""
    cfg = str(rc_stack.config_file)
    rc, doc = run_json(capsys, "--config", cfg, "--no-deep", "--lineage", str(rc_stack.lineage))
    assert [c["name"] for c in doc["certificates"]] == [DOMAIN] and len(doc["services"]) == 3
    rc, doc = run_json(capsys, "--config", cfg, "--no-deep", "--lineage", "/nowhere/live/other")
    assert doc["certificates"] == [] and rc == 3
    assert any("uses no server certificate from lineage other" in p["detail"] for p in doc["audit"])
