"""The systemd units as installed: ``systemd-analyze verify`` is clean and
``systemd-analyze security --offline=true`` rates the daemon's service at most 1.5, also
with the address drop-in install.sh writes."""

from __future__ import annotations

import configparser
import os
import re
import subprocess
from pathlib import Path

import pytest

from hook.exits import RenewDaemonExit
from tests.test_install_script import install

MAX_EXPOSURE = 1.5
MAX_EXPOSURE_WITH_ADDRESSES = 1.6
"""With install.sh's address drop-in: a non-localhost ``IPAddressAllow=`` is one more
exposure item, on top of ``AF_NETLINK``, which Postfix's sendmail needs (getifaddrs in
mail_params_init) for the daemon's alert mail to go out at all."""
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
    assert svc["RestartPreventExitStatus"] == str(int(RenewDaemonExit.CONFIG))
    assert svc["StateDirectory"] == "postfix-certwatch"
    assert "kill -HUP $MAINPID" in svc["ExecReload"]
    assert svc["CapabilityBoundingSet"] == "" and svc["NoNewPrivileges"] == "yes"
    assert "/etc/postfix-certwatch/bundles" in svc["InaccessiblePaths"]


def test_address_drop_in_opens_postfix_addresses_and_keeps_the_score(tmp_path: Path) -> None:
    """install.sh allows the daemon the non-loopback addresses Postfix listens on
    (inet_interfaces and ``host:port`` services in master.cf: it probes them), the
    resolvers in resolv.conf and ``--allow`` peers, in a drop-in; with it the service
    rates at most 1.6 (:data:`MAX_EXPOSURE_WITH_ADDRESSES`)."""
    local = subprocess.run(["hostname", "-I"], capture_output=True, text=True,
                           check=False).stdout.split()
    here = [a for a in local if "." in a][:1]  # postconf insists on a local address
    pf = tmp_path / "postfix"
    pf.mkdir()
    (pf / "main.cf").write_text(f"inet_interfaces = {', '.join(['127.0.0.1', *here])}\n")
    (pf / "master.cf").write_text("smtp inet n - y - - smtpd\n"
                                  "198.51.100.7:smtps inet n - y - - smtpd\n"
                                  "[2001:db8::25]:submission inet n - y - - smtpd\n"
                                  "127.0.0.1:2525 inet n - y - - smtpd\n"
                                  "pickup unix n - y 60 1 pickup\n")
    for f in pf.iterdir():  # postconf sleeps if main.cf is younger than 2 s
        os.utime(f, (f.stat().st_mtime - 10,) * 2)
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/resolv.conf").write_text("nameserver 127.0.0.53\nnameserver 192.0.2.53\n")
    install(root, "--postfix-config", str(pf), "--allow", "203.0.113.9/32")
    dropin = root / "etc/systemd/system/postfix-certwatch.service.d/10-addresses.conf"
    allowed = re.findall(r"^IPAddressAllow=(\S+)$", dropin.read_text(), re.M)
    assert sorted(allowed) == sorted(["198.51.100.7", "2001:db8::25", *here, "192.0.2.53",
                                      "203.0.113.9/32"])
    proc = analyze("security", "--offline=true", f"--root={root}",
                   f"--threshold={int(MAX_EXPOSURE_WITH_ADDRESSES * 10)}", "postfix-certwatch.service")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "allow list with non-localhost entries" in proc.stdout
    match = re.search(r"Overall exposure level for postfix-certwatch.service: (\d+\.\d)", proc.stdout)
    assert match and float(match.group(1)) <= MAX_EXPOSURE_WITH_ADDRESSES, proc.stdout
