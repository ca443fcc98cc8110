"""``renew-daemon``: watch every certificate Postfix uses, all year.

Probes every TLS service of Postfix on a schedule and right after each renewal (a new
deploy record, or a changed ``cert.pem``), checks expiry, alerts on changes of state by
mail and/or webhook, writes Prometheus metrics, and speaks systemd's notify protocol
(``Type=notify``: ``READY=1`` after the first full check, ``WATCHDOG=1``, ``STATUS=``).

Signals: SIGTERM/SIGINT stop it (exit 0); SIGHUP reloads the configuration, and a bad
new configuration is refused (logged) while the old one stays in force.

Exit codes: :class:`hook.exits.RenewDaemonExit` (78, EX_CONFIG, a configuration error,
is in the unit's ``RestartPreventExitStatus=``: restarting would not help).
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import sys
from collections.abc import Mapping
from types import FrameType
from typing import Any

from hook.exits import RenewDaemonExit


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="renew-daemon", description=__doc__.split("\n\n")[0],
                                epilog="Exit codes: " + "; ".join(
                                    f"{c.value} {c.meaning}" for c in RenewDaemonExit) + ".")
    p.add_argument("--config", help="TOML configuration (default: $POSTFIX_CERTWATCH_CONFIG or "
                   "/etc/postfix-certwatch/config.toml)")
    return p


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    from hook import config as config_mod  # noqa: PLC0415 - keep --help fast
    from hook import log as log_mod  # noqa: PLC0415
    from hook.errors import ConfigError, Error  # noqa: PLC0415

    log_mod.configure(sys.stdout)
    log = log_mod.get("renew-daemon")
    _route_stdlib_logging(log)
    try:
        cfg = config_mod.load(args.config, env)
        from daemon.renew_daemon.watch import prepare  # noqa: PLC0415

        prepare(cfg)
    except Error as exc:
        log.error("config", error=str(exc))
        return RenewDaemonExit.CONFIG
    try:
        return _run(cfg, args.config, env, log)
    except ConfigError as exc:  # e.g. metrics.listen cannot be bound
        log.error("config", error=str(exc))
        return RenewDaemonExit.CONFIG
    except Exception:
        log.exception("internal_error")
        return RenewDaemonExit.INTERNAL


def _route_stdlib_logging(log: Any) -> None:
    """Libraries (APScheduler) log through :mod:`logging`: send their warnings and errors
    to the same JSON stream instead of a plain text line on stderr."""
    import logging  # noqa: PLC0415

    class ToStructlog(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            method = getattr(log, record.levelname.lower(), log.warning)
            method("library", logger=record.name, message=record.getMessage())

    root = logging.getLogger()
    root.handlers[:] = [ToStructlog()]
    root.setLevel(logging.WARNING)


def _run(cfg: Any, config_path: str | None, env: Mapping[str, str], log: Any) -> int:
    from daemon.renew_daemon.notify import Notifier, watchdog_interval  # noqa: PLC0415
    from daemon.renew_daemon.watch import Watcher  # noqa: PLC0415
    from hook import config as config_mod  # noqa: PLC0415
    from hook.errors import Error  # noqa: PLC0415

    events: queue.SimpleQueue[int] = queue.SimpleQueue()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        events.put(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    notifier = Notifier(env)
    watchdog = watchdog_interval(env)
    watcher = Watcher(cfg, log, notifier)
    log.info("start", config=str(cfg.source) if cfg.source else None, pid=os.getpid(),
             notify_socket=bool(notifier.enabled), watchdog_interval=watchdog,
             probe_interval=cfg.daemon.probe_interval, state_dir=str(cfg.deploy.state_dir))
    watcher.start(watchdog)
    while True:
        try:
            signum = events.get(timeout=1.0)
        except queue.Empty:
            continue
        if signum == signal.SIGHUP:
            notifier.reloading()
            try:
                new = config_mod.load(config_path, env)
                watcher.reload(new)
            except Error as exc:
                log.error("reload", ok=False, error=str(exc), note="keeping the running configuration")
            else:
                log.info("reload", ok=True, config=str(new.source) if new.source else None)
            notifier.ready(watcher.summary)
            continue
        log.info("stopping", signal=signal.Signals(signum).name)
        watcher.stop()
        log.info("stopped")
        return RenewDaemonExit.OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
