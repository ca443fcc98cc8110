"""Soak benchmark: the real ``renew-daemon`` runs N probe cycles against the private
Postfix (3 TLS services each) while its RSS is sampled from /proc.

    .venv/bin/python -m bench.soak [--cycles 1000] [--json]

Each cycle is a full one: discovery via postconf, then a STARTTLS/TLS probe and a
verdict for every service, state saved, metrics file written. Reports the steady RSS
(median after a warm-up of 10% of the cycles) and the drift (median of the last 10%
minus median of the 10% after warm-up). Targets: steady <= 40 MB, drift <= 0.5 MB.
Loopback only; stops by itself. Not a test: run it by hand.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from tests.harness.daemon import running_daemon
from tests.harness.stack import running_stack

STEADY_MB = 40.0
DRIFT_MB = 0.5


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--cycles", type=int, default=1000)
    p.add_argument("--interval", type=float, default=0.05, help="seconds between cycles")
    p.add_argument("--json", action="store_true")
    p.add_argument("--peers-interval", type=float, default=0.0,
                   help="follow Postfix's log every N seconds ([peers] interval; 0: the default)")
    args = p.parse_args(argv)
    samples: list[tuple[int, int]] = []  # (cycles done, RSS KiB)
    started = time.monotonic()
    with running_stack() as stack:
        prom = stack.base / "postfix_certwatch.prom"
        daemon: dict[str, object] = {"probe_interval": args.interval, "expiry_interval": 3600,
                                     "watch_interval": 1, "jitter": 0.01}
        metrics: dict[str, object] = {"textfile": str(prom)}
        cfg = stack.write_config(daemon=daemon, metrics=metrics, peers={
            "interval": args.peers_interval}) if args.peers_interval else stack.write_config(
            daemon=daemon, metrics=metrics)
        with running_daemon(cfg) as d:
            d.wait_event("ready", timeout=60)
            deadline = time.monotonic() + args.cycles * (args.interval + 1.0) + 60
            done = 0
            while done < args.cycles:
                if time.monotonic() > deadline:
                    raise SystemExit(f"soak: only {done} cycles before the deadline\n{d.tail()}")
                done = sum(1 for e in d.named("check") if e.get("trigger") == "schedule")
                samples.append((done, d.rss_kib()))
                time.sleep(0.2)
            checks = [e for e in d.named("check") if e.get("trigger") == "schedule"]
            probes = [e for e in d.named("probe") if e.get("trigger") == "schedule"]
            failed = [e for e in probes if e.get("status") != "ok"]
            rc = d.stop()
            if rc != 0:
                raise SystemExit(f"soak: renew-daemon exited {rc} on SIGTERM\n{d.tail()}")
    n = args.cycles
    warm = [kib for c, kib in samples if n * 0.1 <= c < n * 0.2]
    last = [kib for c, kib in samples if c >= n * 0.9]
    steady = [kib for c, kib in samples if c >= n * 0.1]
    result = {
        "cycles": len(checks), "probes": len(probes), "failed_probes": len(failed),
        "samples": len(samples), "seconds": round(time.monotonic() - started, 1),
        "cycle_ms_median": round(statistics.median(e["seconds"] for e in checks) * 1000, 1),
        "probe_ms_median": round(statistics.median(e["seconds"] for e in probes) * 1000, 2),
        "rss_start_mb": round(samples[0][1] / 1024, 1),
        "rss_steady_mb": round(statistics.median(steady) / 1024, 1),
        "rss_max_mb": round(max(kib for _, kib in samples) / 1024, 1),
        "rss_drift_mb": round((statistics.median(last) - statistics.median(warm)) / 1024, 2),
        "peer_events": sum(e.get("events", 0) for e in d.named("peers")),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k:18} {v}")
    ok = (result["rss_steady_mb"] <= STEADY_MB and result["rss_drift_mb"] <= DRIFT_MB
          and not failed)
    print(f"targets: steady {result['rss_steady_mb']} MB (<= {STEADY_MB} MB), drift "
          f"{result['rss_drift_mb']} MB (<= {DRIFT_MB} MB over {n} cycles), failed probes "
          f"{len(failed)} (0)")
    print("soak:", "PASS" if ok else "FAIL", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
