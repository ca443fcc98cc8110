"""Benchmark the probe against its peers on the private Postfix, in one run.

    sudo .venv/bin/python bench/probe_bench.py            # N=100 probes per tool
    sudo .venv/bin/python bench/probe_bench.py -n 30 --json

Brings up the test stack (pebble, certbot, a private Postfix on loopback ports),
installs the peer tools it lacks (Debian ``monitoring-plugins-contrib`` for
check_ssl_cert and ``bind9-host``, which check_ssl_cert needs), then probes the
STARTTLS port N times with each tool, one after the other, and prints the median per
probe. ``openssl s_client``, ``posttls-finger``, ``check_ssl_cert`` and the
``renew-check probe`` CLI run as one process per probe, as an admin or Nagios runs them;
our probe and the bare ``smtplib`` floor run in-process, as the deploy hook and the
daemon run them. The ``renew-check probe`` CLI and the bare Python start run from a
temporary non-editable install (what an admin runs, see ``bench/installed.py``), and the
CLI once more from the development venv for comparison (``--dev-venv``: only that one).
check_ssl_cert takes ~2 s a check, so it runs at most 10 times.
Then 200 targets at once through ``probe_many`` (all on one host, so the per-host bound
is the limit: shown with the default 4 and with 64).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import smtplib
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.installed import installed_venv
from hook.certs import load_trust
from hook.tls import Target, judge, probe, probe_deep, probe_many
from tests.harness.stack import DOMAIN, LO, Stack, running_stack

CLI_TARGET_MS = 60.0
"""One ``renew-check probe`` process (one handshake, --no-deep), median."""
CHECK_SSL_CERT = Path("/usr/lib/nagios/plugins/check_ssl_cert")
VENV_BIN = Path(sys.executable).parent
CLI_ROW = "renew-check probe (CLI, 1 process per probe)"
PYTHON_ROW = "python start, nothing imported (floor of any CLI)"
DEV_ROW = "renew-check probe (CLI, development venv: editable)"


def ensure_peer_tools() -> None:
    """Install check_ssl_cert (+ bind9-host) with apt if they are missing."""
    missing = [pkg for pkg, path in (("monitoring-plugins-contrib", CHECK_SSL_CERT),
                                      ("bind9-host", Path("/usr/bin/host")))
               if not path.exists()]
    if not missing:
        return
    print(f"bench: apt-get install {' '.join(missing)}", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600"]
    subprocess.run([*apt, "update", "-qq"], check=True, env=env)
    subprocess.run([*apt, "install", "-y", "-qq", "--no-install-recommends", *missing],
                   check=True, env=env, stdout=subprocess.DEVNULL)


def timed(n: int, fn: Callable[[], object]) -> list[float]:
    fn()  # warm up (contexts, page cache)
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def run(argv: list[str], env: dict[str, str] | None = None, expect: str = "") -> Callable[[], None]:
    def call() -> None:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=60, env=env, check=False)
        if expect and expect not in proc.stdout + proc.stderr:
            raise RuntimeError(f"{argv[0]}: expected {expect!r} in its output, got:\n"
                               f"{proc.stdout[-800:]}\n{proc.stderr[-800:]}")
    return call


def bench(stack: Stack, n: int, venv_bin: Path) -> dict[str, object]:
    port = stack.postfix.smtp_port
    target = Target(LO, port, servername=DOMAIN)
    trust = load_trust(stack.pebble.root, system=False)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE

    def ours() -> None:
        if not probe(target, timeout=5).ok:
            raise RuntimeError("probe failed")

    def ours_judged() -> None:
        judge(probe(target, timeout=5), trust=trust, names=[DOMAIN])

    def deep() -> None:
        probe_deep(target, timeout=5)

    def floor() -> None:
        with smtplib.SMTP(LO, port, timeout=5) as s:
            s.starttls(context=ctx)
            s.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]

    probe_args = ["--config", str(stack.config_file), "probe", f"{LO}:{port}", "--no-deep",
                  "--servername", DOMAIN]
    rows: list[tuple[str, list[float]]] = [
        ("certwatch probe (in-process, 1 handshake)", timed(n, ours)),
        ("certwatch probe + judge (chain, names, dates)", timed(n, ours_judged)),
        ("bare smtplib STARTTLS handshake (floor)", timed(n, floor)),
        ("certwatch deep checks (3 extra handshakes)", timed(n, deep)),
        ("openssl s_client -starttls smtp", timed(n, run(
            ["openssl", "s_client", "-starttls", "smtp", "-connect", f"{LO}:{port}",
             "-servername", DOMAIN, "-CAfile", str(stack.pebble.root)], expect="BEGIN CERT"))),
        ("posttls-finger", timed(n, run(
            ["posttls-finger", "-c", "-l", "may", f"[{LO}]:{port}"],
            env={**os.environ, "MAIL_CONFIG": str(stack.postfix.config_dir)},
            expect="TLS connection established"))),
        (CLI_ROW, timed(max(40, n // 2), run(
            [str(venv_bin / "renew-check"), *probe_args], expect="OK"))),
        (PYTHON_ROW, timed(max(40, n // 2), run([str(venv_bin / "python"), "-c", "pass"]))),
    ]
    if venv_bin != VENV_BIN:
        rows.append((DEV_ROW, timed(max(40, n // 2), run(
            [str(VENV_BIN / "renew-check"), *probe_args], expect="OK"))))
    if CHECK_SSL_CERT.exists():
        rows.append(("check_ssl_cert -P smtp", timed(min(n, 10), run(
            [str(CHECK_SSL_CERT), "-H", LO, "-p", str(port), "-P", "smtp", "-m", DOMAIN,
             "--rootcert-file", str(stack.pebble.root), "--ignore-sct", "--ignore-ocsp"],
            expect="SSL_CERT OK"))))
    medians = {name: statistics.median(times) for name, times in rows}
    counts = {name: len(times) for name, times in rows}

    many = {}
    pf = stack.postfix
    targets = [Target(LO, p, implicit_tls=(p == pf.smtps_port)) for p in pf.ports] * 67
    targets = targets[:200]
    for per_host in (4, 64):
        start = time.perf_counter()
        results = probe_many(targets, timeout=10, per_host=per_host, workers=64)
        took = time.perf_counter() - start
        many[per_host] = {"seconds": round(took, 3), "ok": sum(r.ok for r in results)}
    return {"n": n, "venv": "", "medians_ms": {k: round(v * 1000, 2) for k, v in medians.items()},
            "runs": counts, "concurrent_200": many}


def report(data: dict[str, object]) -> str:
    med: dict[str, float] = data["medians_ms"]  # type: ignore[assignment]
    runs: dict[str, int] = data["runs"]  # type: ignore[assignment]
    ours = med["certwatch probe (in-process, 1 handshake)"]
    lines = ["| tool | runs | median per probe | vs. certwatch probe |", "| --- | ---: | ---: | ---: |"]
    for name, ms in med.items():
        ratio = f"{ms / ours:.1f}x" if "in-process, 1 handshake" not in name else "1.0x"
        lines.append(f"| {name} | {runs[name]} | {ms:.1f} ms | {ratio} |")
    many: dict[int, dict[str, float]] = data["concurrent_200"]  # type: ignore[assignment]
    for per_host, r in many.items():
        lines.append(f"| 200 targets concurrently, per-host bound {per_host} | 1 | "
                     f"{r['seconds'] * 1000:.0f} ms total ({r['ok']:.0f}/200 ok) | |")
    floor = med["bare smtplib STARTTLS handshake (floor)"]
    cli = med[CLI_ROW]
    lines.append("")
    lines.append(f"target: one renew-check probe process {cli:.1f} ms (<= {CLI_TARGET_MS:.0f} ms); "
                 f"openssl s_client {med['openssl s_client -starttls smtp']:.1f} ms, "
                 f"posttls-finger {med['posttls-finger']:.1f} ms, python start "
                 f"{med[PYTHON_ROW]:.1f} ms ({data['venv']})")
    lines.append(f"targets: s_client {med['openssl s_client -starttls smtp'] / ours:.1f}x (>= 3), "
                 f"posttls-finger {med['posttls-finger'] / ours:.1f}x (>= 3), "
                 + (f"check_ssl_cert {med['check_ssl_cert -P smtp'] / ours:.0f}x (>= 10), "
                    if "check_ssl_cert -P smtp" in med else "")
                 + f"certwatch / smtplib floor {ours / floor:.2f} (<= 1.5)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=100, help="probes per tool (default 100)")
    p.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    p.add_argument("--no-install", action="store_true", help="do not apt-get install peers")
    p.add_argument("--dev-venv", action="store_true",
                   help="time the CLI from this (editable) venv instead of a fresh install")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench: run as root (the private Postfix needs it)", file=sys.stderr)
        return 2
    if not args.no_install:
        ensure_peer_tools()
    if not shutil.which("posttls-finger"):
        print("bench: posttls-finger missing (Debian postfix)", file=sys.stderr)
        return 2
    with installed_venv(use_dev=args.dev_venv) as (venv_bin, label), running_stack() as stack:
        data = bench(stack, args.n, venv_bin)
        data["venv"] = label
    print(json.dumps(data, indent=2) if args.json else report(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
