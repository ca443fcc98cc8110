"""``renew-daemon``: watch Postfix's certificates all year (walking skeleton).

Today: one job probes every TLS service Postfix runs, logs one canonical event per
probe, and tells systemd ``READY=1`` after the first full check and ``WATCHDOG=1`` on
a heartbeat. SIGTERM stops it within seconds.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Mapping
from types import FrameType
from typing import Any

EXIT_CONFIG = 78  # EX_CONFIG: listed in the unit's RestartPreventExitStatus=


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="renew-daemon", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--interval", type=float, default=3600.0, help="seconds between probes")
    return p


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    from hook import config as config_mod  # noqa: PLC0415
    from hook import log as log_mod  # noqa: PLC0415
    from hook.errors import ConfigError  # noqa: PLC0415

    log_mod.configure(sys.stdout)
    log = log_mod.get("renew-daemon")
    try:
        cfg = config_mod.load(args.config, env)
    except ConfigError as exc:
        log.error("config", error=str(exc))
        return EXIT_CONFIG
    return _run(cfg, args.interval, log)


def _check_all(cfg: Any, log: Any) -> int:
    from hook import deploy, prove  # noqa: PLC0415
    from hook.probe import probe  # noqa: PLC0415

    postfix = deploy.postfix_for(cfg)
    bad = 0
    for svc in postfix.services():
        res = probe(prove.target_for(svc), timeout=cfg.probe.timeout)
        sha = prove.served_sha256(res)
        bad += sha is None
        log.info("probe", service=svc.label, ok=res.ok, leaf_sha256=sha,
                 failure=res.failure.value if res.failure else None, detail=res.detail,
                 seconds=round(res.seconds, 4))
    return bad


def _run(cfg: Any, interval: float, log: Any) -> int:
    import sdnotify  # noqa: PLC0415
    from apscheduler.schedulers.background import BackgroundScheduler  # noqa: PLC0415

    notify = sdnotify.SystemdNotifier()
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    bad = _check_all(cfg, log)
    notify.notify(f"READY=1\nSTATUS=first check done, {bad} failing service(s)")
    sched = BackgroundScheduler(timezone="UTC")
    sched.add_job(_check_all, "interval", seconds=interval, args=(cfg, log), jitter=interval / 10)
    usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
    beat = usec / 2e6 if usec else 10.0
    sched.add_job(lambda: notify.notify("WATCHDOG=1") if sched.running else None,
                  "interval", seconds=beat)
    sched.start()
    stop.wait()
    notify.notify("STOPPING=1")
    sched.shutdown(wait=False)
    log.info("stopped")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
