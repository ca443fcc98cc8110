"""Metrics: what an expired or unreachable certificate leaves in the exposition (read
back with prometheus_client's parsers), that promtool accepts the text, and the shipped
alerting rules pass ``promtool test rules``."""

from __future__ import annotations

import os
import re
import subprocess
import urllib.request
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families

from daemon.renew_daemon import metrics, state
from daemon.renew_daemon.state import Check, Kind
from hook.errors import ConfigError

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


# prometheus_client's OpenMetrics parser carries no annotations
parse_openmetrics: Callable[[str], Iterable[Metric]] = openmetrics_parser.text_string_to_metric_families
Series = dict[tuple[str, frozenset[tuple[str, str]]], float]

# The names, types and help texts dashboards and alerting rules rely on (as before the
# move to prometheus_client): a rename is a breaking change and must fail here.
NAMES = [
    "cert_not_after_timestamp_seconds", "cert_not_before_timestamp_seconds",
    "cert_lifetime_left_ratio", "check_status", "problem", "probe_success",
    "probe_last_run_timestamp_seconds", "probe_last_success_timestamp_seconds",
    "deploy_last_timestamp_seconds", "deploy_last_success_timestamp_seconds",
    "deploy_failed", "last_check_timestamp_seconds",
]


def parse(text: str) -> tuple[dict[str, Metric], Series]:
    """Read an exposition with prometheus_client's own text-format parser."""
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    series = {(s.name, frozenset(s.labels.items())): s.value
              for f in fams.values() for s in f.samples}
    return fams, series


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return f"postfix_certwatch_{name}", frozenset(labels.items())


def full_state() -> state.State:
    """sample_state plus one of every other kind of series (disk check without problems)."""
    st = sample_state()
    fresh = Check(Kind.EXPIRY, "new.example.org", status="ok", lineage="new.example.org",
                  last_run=NOW, last_ok=NOW, not_before=NOW - 86400, not_after=NOW + 89 * 86400)
    st.checks[fresh.key] = fresh
    return st


def test_expired_and_unreachable_do_not_vanish() -> None:
    """The expired lineage and the unreachable service keep notAfter and lifetime series;
    the probe reports failure with its last success time; the failed deploy shows."""
    _, series = parse(metrics.render(sample_state(), NOW, NOW))
    disk = {"source": "disk", "service": "", "lineage": "old.example.org"}
    served = {"source": "served", "service": "127.0.0.1:25/starttls", "lineage": "mx.example.org"}
    assert series[key("cert_not_after_timestamp_seconds", **disk)] == NOW - 86400
    assert series[key("cert_lifetime_left_ratio", **disk)] == 0
    assert series[key("cert_not_after_timestamp_seconds", **served)] == NOW + 80 * 86400
    assert series[key("probe_success", service="127.0.0.1:25/starttls",
                      lineage="mx.example.org")] == 0
    assert series[key("probe_last_success_timestamp_seconds",
                      service="127.0.0.1:25/starttls")] == NOW - 3600
    assert series[key("problem", check="probe", subject="127.0.0.1:25/starttls",
                      lineage="mx.example.org", code="unreachable")] == 1
    assert series[key("deploy_failed", lineage="mx.example.org")] == 1
    assert series[key("last_check_timestamp_seconds")] == NOW


def test_names_types_and_help_are_kept() -> None:
    """Every family is a gauge with the documented name and help text; the module
    docstring's table lists exactly these names."""
    fams, _ = parse(metrics.render(full_state(), NOW, NOW))
    assert sorted(fams) == sorted(f"postfix_certwatch_{n}" for n in NAMES)
    for name in NAMES:
        fam = fams[f"postfix_certwatch_{name}"]
        assert (fam.type, fam.documentation) == ("gauge", metrics.HELP[name])
        assert f"``postfix_certwatch_{name}``" in (metrics.__doc__ or "")


def test_label_values_are_escaped() -> None:
    """Quotes, backslashes and newlines in label values survive the round trip through
    prometheus_client's parser unchanged."""
    st = state.State()
    nasty = 'a"b\\c\nd'
    c = Check(Kind.PROBE, nasty, status="ok", last_run=1.0, last_ok=1.0)
    st.checks[c.key] = c
    _, series = parse(metrics.render(st, 1.0, 1.0))
    assert series[key("probe_last_run_timestamp_seconds", service=nasty)] == 1.0


def test_promtool_accepts_the_exposition(tmp_path: Path) -> None:
    """``promtool check metrics`` lints the text clean; the textfile is replaced
    atomically with mode 0644 (node_exporter runs as another user) even under the
    unit's UMask=0077."""
    text = metrics.render(full_state(), NOW, NOW)
    target = tmp_path / "postfix_certwatch.prom"
    old = os.umask(0o077)
    try:
        metrics.write_textfile(target, text)
    finally:
        os.umask(old)
    assert target.read_text() == text and oct(target.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    proc = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                          capture_output=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _get(url: str, accept: str | None = None) -> tuple[str, str]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})  # noqa: S310
    with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 - http://127.0.0.1 only
        return r.headers["Content-Type"], r.read().decode()


def test_metrics_endpoint_serves_the_latest_snapshot() -> None:
    """``metrics.listen`` is prometheus_client's server: the text format by default (the
    same text as the textfile), OpenMetrics when asked; both parse to the same series, and
    an update replaces the whole snapshot."""
    expo = metrics.Exposition()
    exp = metrics.Exporter("127.0.0.1:0", expo)
    url = f"http://127.0.0.1:{exp.port}/metrics"
    try:
        assert _get(url)[1] == ""
        expo.update(metrics.families(full_state(), NOW, NOW))
        ctype, text = _get(url)
        assert ctype.startswith("text/plain; version=0.0.4") and text == expo.text()
        ctype, om = _get(url, "application/openmetrics-text; version=1.0.0")
        assert ctype.startswith("application/openmetrics-text") and om.endswith("# EOF\n")
        om_series = {(s.name, frozenset(s.labels.items())): s.value
                     for f in parse_openmetrics(om)
                     for s in f.samples}
        assert om_series == parse(text)[1]
        expo.update(metrics.families(state.State(), NOW, 0.0))
        assert _get(url)[1] == ""
    finally:
        exp.close()


def test_metrics_listen_that_cannot_bind_is_a_config_error() -> None:
    """A port already taken is a ConfigError naming the setting (exit 78 in the daemon)."""
    expo = metrics.Exposition()
    first = metrics.Exporter("127.0.0.1:0", expo)
    try:
        with pytest.raises(ConfigError, match=r"metrics\.listen"):
            metrics.Exporter(f"127.0.0.1:{first.port}", expo)
    finally:
        first.close()


def test_shipped_alerting_rules_pass_promtool(tmp_path: Path) -> None:
    """The rules shipped as package data (expiring, expired, stale, probe failing, deploy
    failed as a warning and, once the served certificate expires soon, critical instead;
    daemon stale) are valid and pass their unit tests; every alert is defined once, so
    one condition never fires at two severities together."""
    folder = resources.files("daemon.renew_daemon") / "prometheus"
    for name in ("postfix-certwatch.rules.yml", "postfix-certwatch.rules.test.yml"):
        (tmp_path / name).write_text((folder / name).read_text())
    alerts = re.findall(r"^\s*- alert: (\S+)", (folder / "postfix-certwatch.rules.yml").read_text(),
                        re.MULTILINE)
    assert len(alerts) == len(set(alerts)) == 6, alerts
    check = subprocess.run(["promtool", "check", "rules", "postfix-certwatch.rules.yml"],
                           cwd=tmp_path, capture_output=True, text=True, check=False)
    assert check.returncode == 0 and "6 rules found" in check.stdout, check.stdout + check.stderr
    test = subprocess.run(["promtool", "test", "rules", "postfix-certwatch.rules.test.yml"],
                          cwd=tmp_path, capture_output=True, text=True, check=False)
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr
