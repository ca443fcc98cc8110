"""Metrics: what an expired or unreachable certificate leaves in the exposition, that
promtool accepts the text, and the shipped alerting rules pass ``promtool test rules``."""

from __future__ import annotations

import subprocess
import urllib.request
from importlib import resources
from pathlib import Path

import pytest

from daemon.renew_daemon import metrics, state
from daemon.renew_daemon.state import Check, Kind

NOW = 2_000_000_000.0


def sample_state() -> state.State:
    st = state.State()
    checks = [
        # expired on disk: keeps its dates, lifetime left 0
        Check(Kind.EXPIRY, "old.example.org", status="critical", codes=("expired",),
              lineage="old.example.org", last_run=NOW, last_ok=NOW, sha256="aa" * 32,
              not_before=NOW - 90 * 86400, not_after=NOW - 86400),
        # unreachable now, served a certificate an hour ago
        Check(Kind.PROBE, '127.0.0.1:25/starttls', status="critical", codes=("unreachable",),
              lineage="mx.example.org", last_run=NOW, last_ok=NOW - 3600, sha256="bb" * 32,
              not_before=NOW - 10 * 86400, not_after=NOW + 80 * 86400),
    ]
    for c in checks:
        st.checks[c.key] = c
    st.deploys["mx.example.org"] = state.DeployInfo(time=NOW - 60, outcome="rolled_back",
                                                   last_success=NOW - 60 * 86400)
    refused = Check(Kind.DEPLOY, "mx.example.org", status="warning", codes=("deploy_rolled_back",),
                    lineage="mx.example.org", last_run=NOW)
    st.checks[refused.key] = refused
    return st


def test_expired_and_unreachable_do_not_vanish() -> None:
    """The expired lineage and the unreachable service keep notAfter and lifetime series;
    the probe reports failure with its last success time; the failed deploy shows."""
    text = metrics.render(sample_state(), NOW, NOW)
    disk = '{source="disk",service="",lineage="old.example.org"}'
    served = '{source="served",service="127.0.0.1:25/starttls",lineage="mx.example.org"}'
    assert f"postfix_certwatch_cert_not_after_timestamp_seconds{disk} {int(NOW - 86400)}" in text
    assert f"postfix_certwatch_cert_lifetime_left_ratio{disk} 0\n" in text
    assert f"postfix_certwatch_cert_not_after_timestamp_seconds{served} {int(NOW + 80 * 86400)}" in text
    assert ('postfix_certwatch_probe_success{service="127.0.0.1:25/starttls",'
            'lineage="mx.example.org"} 0') in text
    assert ('postfix_certwatch_probe_last_success_timestamp_seconds{service="127.0.0.1:25/starttls"} '
            f"{int(NOW - 3600)}") in text
    assert 'postfix_certwatch_problem{check="probe",subject="127.0.0.1:25/starttls",' \
           'lineage="mx.example.org",code="unreachable"} 1' in text
    assert 'postfix_certwatch_deploy_failed{lineage="mx.example.org"} 1' in text
    assert f"postfix_certwatch_last_check_timestamp_seconds {int(NOW)}" in text


def test_label_values_are_escaped() -> None:
    """Quotes, backslashes and newlines in label values cannot break the format."""
    st = state.State()
    c = Check(Kind.PROBE, 'a"b\\c\nd', status="ok", last_run=1.0, last_ok=1.0)
    st.checks[c.key] = c
    assert 'subject="a\\"b\\\\c\\nd"' in metrics.render(st, 1.0, 1.0)


def test_promtool_accepts_the_exposition(tmp_path: Path) -> None:
    """``promtool check metrics`` lints the text clean; the textfile is replaced
    atomically with mode 0644 (node_exporter runs as another user)."""
    text = metrics.render(sample_state(), NOW, NOW)
    target = tmp_path / "postfix_certwatch.prom"
    metrics.write_textfile(target, text)
    assert target.read_text() == text and oct(target.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    proc = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                          capture_output=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_metrics_endpoint_serves_the_same_text() -> None:
    """The optional /metrics endpoint serves the latest rendered text; other paths 404."""
    exp = metrics.Exporter("127.0.0.1:0")
    try:
        exp.text = metrics.render(sample_state(), NOW, NOW)
        with urllib.request.urlopen(f"http://127.0.0.1:{exp.port}/metrics", timeout=5) as r:
            assert r.read().decode() == exp.text
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{exp.port}/", timeout=5)
    finally:
        exp.close()


def test_shipped_alerting_rules_pass_promtool(tmp_path: Path) -> None:
    """The rules shipped as package data (expiring, expired, stale, probe failing, deploy
    failed as a warning and, once the served certificate expires soon, critical; daemon
    stale) are valid and pass their unit tests."""
    folder = resources.files("daemon.renew_daemon") / "prometheus"
    for name in ("postfix-certwatch.rules.yml", "postfix-certwatch.rules.test.yml"):
        (tmp_path / name).write_text((folder / name).read_text())
    check = subprocess.run(["promtool", "check", "rules", "postfix-certwatch.rules.yml"],
                           cwd=tmp_path, capture_output=True, text=True, check=False)
    assert check.returncode == 0 and "7 rules found" in check.stdout, check.stdout + check.stderr
    test = subprocess.run(["promtool", "test", "rules", "postfix-certwatch.rules.test.yml"],
                          cwd=tmp_path, capture_output=True, text=True, check=False)
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr
