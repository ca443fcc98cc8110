"""``postfix-deploy-hook``: the certbot deploy hook.

certbot runs it after each renewal with ``RENEWED_LINEAGE`` and ``RENEWED_DOMAINS`` set;
by hand: ``postfix-deploy-hook --lineage /etc/letsencrypt/live/NAME [--dry-run]``.

Exit codes: :class:`hook.exits.DeployHookExit`. A lineage Postfix does not use exits 0
under certbot (it calls every deploy hook for every lineage) and 6 with ``--lineage``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from hook import config as config_mod
from hook import log as log_mod
from hook.deploy_hook.deadline import ALERT_GRACE, DeadlinePassed, Watch, deadline, grace_for
from hook.errors import ConfigError, Error, LineageError
from hook.exits import DeployHookExit

if TYPE_CHECKING:
    from hook.certs import Lineage
    from hook.pipeline import Report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="postfix-deploy-hook",
        description="Validate a renewed certbot lineage, install it for Postfix atomically, "
                    "reload Postfix and prove the new certificate is served; roll back on failure.",
        epilog="Exit codes: " + "; ".join(f"{c.value} {c.meaning}" for c in DeployHookExit) + ".")
    p.add_argument("--config", help="TOML configuration (default: $POSTFIX_CERTWATCH_CONFIG "
                   f"or {config_mod.DEFAULT_PATH})")
    p.add_argument("--lineage", help="lineage directory (default: $RENEWED_LINEAGE)")
    p.add_argument("--dry-run", action="store_true",
                   help="run every check, change nothing, say what would be done")
    return p


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    # stdout: certbot logs a hook's stdout at info level and its stderr as an error, so
    # the canonical line goes to stdout and a failure adds one plain line on stderr.
    log_mod.configure(sys.stdout)
    log = log_mod.get("postfix-deploy-hook")
    loaded: list[config_mod.Config] = []
    watches: list[Watch] = []
    try:
        return _main(args, env, log, loaded, watches)
    except DeadlinePassed as exc:  # before anything was written (else: a rolled-back report)
        log.error("deploy", outcome="deadline", error=str(exc),
                  alerts=_alert_internal(loaded, args, env, str(exc)))
        wrote = any(w.wrote for w in watches)
        print(f"postfix-deploy-hook: {exc}; " + ("files may have changed: check 'renew-check' "
              "and the Postfix log" if wrote else "nothing was changed"), file=sys.stderr)
        return DeployHookExit.DEADLINE
    except (ConfigError, LineageError) as exc:
        log.error("deploy", outcome="usage_error", error=str(exc))
        print(f"postfix-deploy-hook: {exc}", file=sys.stderr)
        return DeployHookExit.USAGE
    except Error as exc:
        log.error("deploy", outcome="error", error=str(exc),
                  alerts=_alert_internal(loaded, args, env, str(exc)))
        print(f"postfix-deploy-hook: {exc}", file=sys.stderr)
        return DeployHookExit.INTERNAL
    except Exception as exc:  # a bug: the traceback goes to stderr, never into the record
        alerts = _alert_internal(loaded, args, env, f"{type(exc).__name__}: {exc}")
        log.error("deploy", outcome="internal_error", error=f"{type(exc).__name__}: {exc}",
                  alerts=alerts)
        traceback.print_exc(file=sys.stderr)
        print(f"postfix-deploy-hook: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return DeployHookExit.INTERNAL


ACTIONS = {
    "refused": "nothing was changed; fix what the message names (the lineage, or Postfix) "
               "and run 'postfix-deploy-hook --lineage {live}' again",
    "rolled_back": "the previous certificate was restored and is served; find out why the new "
                   "one was not (message above), then run 'postfix-deploy-hook --lineage {live}'",
    "refused_in_place": "ACT NOW: Postfix reads certbot's files in place, so every new smtpd "
                        "process loads the refused files; do what the message says, then run "
                        "'renew-check adopt {live}'",
    "rollback_failed": "ACT NOW: Postfix may serve a broken or no certificate; check "
                       "'renew-check' and the Postfix log",
    "error": "the hook stopped with an internal error (message above); check 'renew-check' "
             "and the Postfix log, then run 'postfix-deploy-hook --lineage {live}'",
}


def _main(args: argparse.Namespace, env: Mapping[str, str], log: object,
          loaded: list[config_mod.Config], watches: list[Watch]) -> int:
    from hook.certs import resolve  # noqa: PLC0415 - keep --help fast

    cfg = config_mod.load(args.config, env)
    loaded.append(cfg)  # for the alert if anything below fails unexpectedly
    by_certbot = args.lineage is None
    path = args.lineage or env.get("RENEWED_LINEAGE")
    if not path:
        raise LineageError("no lineage: set RENEWED_LINEAGE (certbot does) or pass --lineage")
    lin = resolve(path, cfg.certbot.config_dir)
    grace = grace_for(cfg.postfix.command_timeout, cfg.deploy.proof_timeout)
    alert_grace = ALERT_GRACE + cfg.postfix.command_timeout  # + postconf for the host name
    with deadline(cfg.deploy.hook_deadline, exit_code=DeployHookExit.DEADLINE, grace=grace,
                  alert_grace=alert_grace) as watch:
        watches.append(watch)
        code = _run(args, cfg, lin, env, log, by_certbot, watch)
        return DeployHookExit.DEADLINE if watch.passed else code


def _run(args: argparse.Namespace, cfg: config_mod.Config, lin: Lineage, env: Mapping[str, str],
         log: object, by_certbot: bool, watch: Watch) -> int:
    from hook import pipeline  # noqa: PLC0415 - keep --help fast

    start = time.monotonic()
    if args.dry_run:
        report = pipeline.run(cfg, lin, dry_run=True)
        watch.settle()
    else:
        with contextlib.ExitStack() as held:
            with _state_dir_usable(cfg.deploy.state_dir):  # exit 2 before anything changes
                held.enter_context(pipeline.locked(cfg.deploy.state_dir))
            report = pipeline.run(cfg, lin, guard=watch)
            watch.settle()
            if report.outcome is not pipeline.Outcome.SKIPPED:
                try:
                    pipeline.write_record(cfg.deploy.state_dir, report)
                except OSError as exc:  # the outcome stands; say the record is missing
                    report = _with_warning(report, f"{cfg.deploy.state_dir}: the deploy record "
                                           f"could not be written: {exc.strerror or exc}")
                    print(f"postfix-deploy-hook: {report.warnings[-1]}", file=sys.stderr)
    bad = report.outcome in (pipeline.Outcome.REFUSED, pipeline.Outcome.REFUSED_IN_PLACE,
                             pipeline.Outcome.ROLLED_BACK, pipeline.Outcome.ROLLBACK_FAILED)
    alerts: list[str] = []
    if bad and not args.dry_run:
        alerts = _alert(cfg, report, str(lin.live))
    event = {
        "lineage": report.lineage, "outcome": report.outcome.value, "mode": report.mode,
        "old_sha256": report.old_sha256, "new_sha256": report.new_sha256,
        "services": list(report.services), "domains": env.get("RENEWED_DOMAINS", ""),
        "dry_run": report.dry_run, "seconds": round(time.monotonic() - start, 3),
        "timings": dict(report.timings), "message": report.message,
        "warnings": list(report.warnings), "problems": [str(p) for p in report.problems],
        "notes": list(report.notes), "alerts": alerts,
    }
    getattr(log, "error" if bad else "warning" if report.warnings else "info")("deploy", **event)
    _tell(report, bad=bad, dry_run=args.dry_run)
    return {
        pipeline.Outcome.DEPLOYED: DeployHookExit.OK,
        pipeline.Outcome.WOULD_DEPLOY: DeployHookExit.OK,
        pipeline.Outcome.SKIPPED: DeployHookExit.OK if by_certbot else DeployHookExit.NOTHING_TO_DO,
        pipeline.Outcome.REFUSED: DeployHookExit.REFUSED,
        pipeline.Outcome.REFUSED_IN_PLACE: DeployHookExit.REFUSED_IN_PLACE,
        pipeline.Outcome.ROLLED_BACK: DeployHookExit.ROLLED_BACK,
        pipeline.Outcome.ROLLBACK_FAILED: DeployHookExit.ROLLBACK_FAILED,
    }[report.outcome]


def _tell(report: Report, *, bad: bool, dry_run: bool) -> None:
    """What the admin reads: why it went wrong (stderr), and a dry run's plan (stdout)."""
    if bad:
        prefix = "" if report.message.startswith(report.outcome.value) else f"{report.outcome.value}: "
        print(f"postfix-deploy-hook: {prefix}{report.message}", file=sys.stderr)
        for problem in report.problems[1:]:
            print(f"postfix-deploy-hook:   also: {problem}", file=sys.stderr)
        for line in publish_lines(report):
            print(f"postfix-deploy-hook:   publish: {line}", file=sys.stderr)
    # Warnings go only into the canonical line (stdout): certbot reports any stderr output
    # as "ran with error output", and a key change is certbot's default behaviour.
    if dry_run:
        for warning in report.warnings:
            print(f"warning: {warning}")
        for step in report.steps:
            print(f"would: {step}")
        for problem in report.problems:
            print(f"problem: {problem}")
        for note in report.notes:
            print(f"note: {note}")
        for line in publish_lines(report):
            print(f"publish: {line}")
        print(report.message)


@contextlib.contextmanager
def _state_dir_usable(state_dir: Path) -> Iterator[None]:
    """``deploy.state_dir`` a file, on a read-only mount, immutable, full: a configuration
    or environment error (exit 2) naming the path and the cause, not an internal error."""
    try:
        yield
    except OSError as exc:
        where = exc.filename or state_dir
        raise ConfigError(f"deploy.state_dir {state_dir}: cannot use {where}: "
                          f"{exc.strerror or exc} (a directory the hook can write, for the "
                          "lock and the deploy records)") from exc


def _with_warning(report: Report, warning: str) -> Report:
    import dataclasses  # noqa: PLC0415

    return dataclasses.replace(report, warnings=(*report.warnings, warning))


def publish_lines(report: Report) -> list[str]:
    """The TLSA RR lines the DANE gate asks for (zone-file syntax, one per line)."""
    return list(report.publish)


def _alert(cfg: config_mod.Config, report: Report, live: str) -> list[str]:
    """Mail (and/or webhook) the failure; never raises, returns what happened per channel."""
    from hook import alert as alert_mod  # noqa: PLC0415
    outcome = report.outcome.value
    summary = {"refused": f"renewed certificate for {report.lineage} refused",
               "refused_in_place": f"renewed certificate for {report.lineage} refused, but "
                                   "Postfix reads it in place: ACT NOW",
               "rolled_back": f"deploy of {report.lineage} rolled back",
               "rollback_failed": f"deploy of {report.lineage} FAILED, rollback failed"}[outcome]
    detail = "\n".join([report.message, *(f"problem: {p}" for p in report.problems[1:]),
                        *(f"warning: {w}" for w in report.warnings),
                        *(f"publish: {line}" for line in publish_lines(report)),
                        f"old leaf sha256: {report.old_sha256}",
                        f"new leaf sha256: {report.new_sha256}"])
    from hook.postfix import host_name  # noqa: PLC0415

    deliveries = alert_mod.send(alert_mod.Alert(summary=summary, problem=outcome,
                                                action=ACTIONS[outcome].format(live=live),
                                                lineage=report.lineage, detail=detail,
                                                host=host_name(cfg)),
                                cfg.alert)
    return [f"{d.channel}: {'ok' if d.ok else 'FAILED'} {d.detail}" for d in deliveries]


def _alert_internal(loaded: list[config_mod.Config], args: argparse.Namespace,
                    env: Mapping[str, str], error: str) -> list[str]:
    """Mail (and/or webhook) an internal error; never raises. Without a configuration
    (it failed to load) there is nowhere to send it: stderr and the log line only."""
    if not loaded:
        return []
    try:
        from hook import alert as alert_mod  # noqa: PLC0415

        live = str(args.lineage or env.get("RENEWED_LINEAGE", "") or "?")
        name = os.path.basename(os.path.normpath(live))
        from hook.postfix import host_name  # noqa: PLC0415

        deliveries = alert_mod.send(alert_mod.Alert(
            summary=f"deploy hook for {name} stopped with an internal error",
            problem="error", action=ACTIONS["error"].format(live=live), lineage=name,
            detail=error, host=host_name(loaded[0])), loaded[0].alert)
    except Exception as exc:  # an alert must never hide the original error
        return [f"alert: FAILED {type(exc).__name__}: {exc}"]
    return [f"{d.channel}: {'ok' if d.ok else 'FAILED'} {d.detail}" for d in deliveries]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
