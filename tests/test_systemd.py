"""The systemd units as installed: ``systemd-analyze verify`` is clean and
``systemd-analyze security --offline=true`` rates the daemon's service at most 1.5."""

from __future__ import annotations

import configparser
import re
import subprocess
from pathlib import Path

import pytest

from daemon.main import EXIT_CONFIG
from tests.test_install_script import install

MAX_EXPOSURE = 1.5
UNITS = ("postfix-certwatch.service", "postfix-certwatch-renew.service",
         "postfix-certwatch-renew.timer")


@pytest.fixture(scope="module")
def units(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    install(root)
    return root / "etc/systemd/system"


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True,
                          check=False, timeout=60)


def test_units_verify_clean(units: Path) -> None:
    """``systemd-analyze verify`` accepts all three units without a warning (unknown
    keys or missing executables would be reported on stderr)."""
    proc = analyze("verify", *(str(units / u) for u in UNITS))
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr


def test_daemon_service_exposure_at_most_1_5(units: Path) -> None:
    """The hardened service's offline exposure score is <= 1.5 (asserted both from the
    printed score and with --threshold)."""
    proc = analyze("security", "--offline=true", str(units / "postfix-certwatch.service"))
    match = re.search(r"Overall exposure level for postfix-certwatch.service: (\d+\.\d)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, proc.stdout
    gate = analyze("security", "--offline=true", f"--threshold={int(MAX_EXPOSURE * 10)}",
                   str(units / "postfix-certwatch.service"))
    assert gate.returncode == 0, gate.stdout


def test_service_contract_matches_the_daemon(units: Path) -> None:
    """Type=notify with a watchdog, restart on failure except on the daemon's config-error
    exit code, a state directory, reload by SIGHUP, and no view of the key bundles."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((units / "postfix-certwatch.service").read_text())
    svc = parser["Service"]
    assert svc["Type"] == "notify" and int(svc["WatchdogSec"]) > 0
    assert svc["Restart"] == "on-failure"
    assert svc["RestartPreventExitStatus"] == str(EXIT_CONFIG)
    assert svc["StateDirectory"] == "postfix-certwatch"
    assert "kill -HUP $MAINPID" in svc["ExecReload"]
    assert svc["CapabilityBoundingSet"] == "" and svc["NoNewPrivileges"] == "yes"
    assert "/etc/postfix-certwatch/bundles" in svc["InaccessiblePaths"]
