"""``renew-check``: the manual check, for admins and for Nagios/Icinga.

Commands::

    renew-check [--lineage PATH]... [--no-dns]  check every certificate, TLS service and DNS record
    renew-check --dry-run [--lineage PATH]   run the deploy pipeline for each lineage, changing nothing
    renew-check probe TARGET... [--starttls|--implicit] [--servername NAME]
                                [--cafile PATH] [--expect-cert PATH]
    renew-check adopt LINEAGE                make Postfix read a bundle the hook owns
    renew-check adopt --undo                 put the main.cf from before adopt back
    renew-check peers [REPORT...] [--no-dns] what peers saw: the log's last 24 h, TLSRPT

TARGET is HOST:PORT, [IPv6]:PORT or HOST (port 25); port 465 means implicit TLS.
Output: --json prints one document (schema postfix-certwatch/renew-check/1, see
docs/renew-check.md); otherwise a table on a terminal, plain text (Nagios style) elsewhere.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from daemon.renew_check.nagios import PluginArgumentParser, threshold
from hook.exits import RenewCheckExit

if TYPE_CHECKING:
    from hook.config import Config
    from hook.tls import Thresholds

__all__ = ["build_parser", "main", "split_target"]


def _add_thresholds(p: argparse.ArgumentParser, default: Any) -> None:
    p.add_argument("-w", "--warning", type=threshold, default=default, metavar="DAYS|PCT%",
                   help="warn with fewer days left than this (as check_ssl_cert), or less than "
                   "this share of the certificate's lifetime (25%%); default: [probe] of the "
                   "config, a quarter of the lifetime")
    p.add_argument("-c", "--critical", type=threshold, default=default, metavar="DAYS|PCT%",
                   help="critical with fewer days left (or share of the lifetime, 10%%)")


def _checked(check: Any) -> Any:
    """An argparse ``type=`` from one of :mod:`hook.endpoint`'s checks: a refusal is a
    usage error naming the option and the value, never a traceback."""
    def convert(text: str) -> Any:
        from hook.errors import ConfigError  # noqa: PLC0415

        try:
            return check(text)
        except (ConfigError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = getattr(check, "__name__", "value")
    return convert


def _timeout(text: str) -> float:
    from hook.endpoint import check_timeout  # noqa: PLC0415

    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
    return check_timeout(value, "--timeout")


def _servername(text: str) -> str:
    from hook.endpoint import check_servername  # noqa: PLC0415

    return check_servername(text)


def _globals(p: argparse.ArgumentParser, *, sub: bool) -> None:
    """The options that apply to every command; a subcommand accepts them too (after its
    name), without overriding what was given before it (``default=SUPPRESS``)."""
    quiet: dict[str, Any] = {"default": argparse.SUPPRESS} if sub else {}
    p.add_argument("--config", help="TOML configuration file", **quiet)
    p.add_argument("--json", action="store_true", help="one JSON document on stdout", **quiet)
    if not sub:
        p.add_argument("--dry-run", action="store_true",
                       help="run the whole deploy pipeline for each lineage, changing nothing")
        p.add_argument("--lineage", action="append", default=[],
                       help="only this lineage directory (repeatable)")
        p.add_argument("--no-deep", dest="deep", action="store_false", default=None,
                       help="skip the extra handshakes (anonymous cipher, TLS 1.0/1.1)")
        p.add_argument("--no-dns", dest="dns", action="store_false",
                       help="skip the DNS checks (DANE TLSA, MX coverage, MTA-STS)")


def build_parser() -> argparse.ArgumentParser:
    overview = __doc__.split("\n\n", 1)[1].replace("``", "").replace("::", ":")
    p = PluginArgumentParser(
        prog="renew-check", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check every certificate and TLS service Postfix uses (a Nagios plugin).",
        epilog=f"{overview}\nExit codes (Nagios): "
               + ", ".join(f"{c.value} {c.name}" for c in RenewCheckExit)
               + " (3 also for every usage or configuration error).")
    _globals(p, sub=False)
    _add_thresholds(p, None)
    sub = p.add_subparsers(dest="command")
    pr = sub.add_parser("probe", help="probe SMTP endpoints",
                        description="Probe SMTP endpoints (STARTTLS, or implicit TLS on 465).")
    _globals(pr, sub=True)
    pr.add_argument("targets", nargs="+", metavar="TARGET", help="HOST:PORT, [IPv6]:PORT or HOST")
    mode = pr.add_mutually_exclusive_group()
    mode.add_argument("--starttls", action="store_true", help="SMTP + STARTTLS (default)")
    mode.add_argument("--implicit", action="store_true",
                      help="TLS from the first byte (default for port 465)")
    pr.add_argument("--servername", type=_checked(_servername),
                    help="SNI name to send and the name the certificate must cover")
    pr.add_argument("--cafile", help="trust anchors (PEM) in addition to the system store")
    pr.add_argument("--expect-cert", metavar="PATH",
                    help="PEM certificate (or full chain) the server must serve: else 'stale'")
    pr.add_argument("--timeout", type=_checked(_timeout), default=None,
                    help="seconds per target, deep checks included (above 0, at most 300)")
    depth = pr.add_mutually_exclusive_group()
    depth.add_argument("--deep", dest="probe_deep", action="store_true",
                       help="also try an anonymous cipher and TLS 1.0/1.1 (3 extra handshakes; "
                       "default: probe.deep in the config, true)")
    depth.add_argument("--no-deep", dest="probe_no_deep", action="store_true",
                       help="one handshake per target only")
    _add_thresholds(pr, argparse.SUPPRESS)  # given after "probe": same meaning
    pe = sub.add_parser("peers", help="what peers saw: TLS log lines (24 h) and TLSRPT reports",
                        description="Postfix's TLS log lines of the last 24 h, the _smtp._tls "
                        "record of each domain Postfix receives mail for, and TLSRPT reports "
                        "([peers] tlsrpt_mailbox, and REPORT files: .json, .json.gz or a mail).")
    _globals(pe, sub=True)
    pe.add_argument("reports", nargs="*", metavar="REPORT", help="TLSRPT report files")
    pe.add_argument("--no-dns", dest="peers_dns", action="store_false",
                    help="skip the _smtp._tls lookups")
    ad = sub.add_parser("adopt", help="switch Postfix to a bundle owned by the deploy hook")
    _globals(ad, sub=True)
    ad.add_argument("lineage", nargs="?", help="lineage directory under live/")
    ad.add_argument("--undo", action="store_true", help="restore main.cf from before adopt")
    ad.add_argument("--replace", action="store_true",
                    help="the lineage is not the one Postfix reads: make main.cf's server "
                    "certificate this lineage's bundle (instead of refusing)")
    return p


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    from hook import config as config_mod  # noqa: PLC0415 - keep --help fast
    from hook.errors import Error  # noqa: PLC0415

    try:
        cfg = config_mod.load(args.config, env)
        commands = {"probe": _probe, "adopt": _adopt, "peers": _peers}
        run = commands.get(args.command) or (_dry_run if args.dry_run else _check)
        return run(args, cfg)
    except Error as exc:
        _unknown(args, str(exc))
        return RenewCheckExit.UNKNOWN
    except Exception as exc:  # a bug must not look like CRITICAL (2) or WARNING (1) to Nagios
        import traceback  # noqa: PLC0415 - only for a bug

        print(traceback.format_exc(), file=sys.stderr)
        _unknown(args, f"internal error: {type(exc).__name__}: {exc}")
        return RenewCheckExit.UNKNOWN


def _unknown(args: argparse.Namespace, message: str) -> None:
    """Nagios reads the first line of stdout: the reason goes there (and to stderr)."""
    if args.json:
        import json  # noqa: PLC0415

        print(f"UNKNOWN: {message}", file=sys.stderr)
        from daemon.renew_check import render  # noqa: PLC0415
        from hook.verdict import Status  # noqa: PLC0415

        command = args.command or ("dry-run" if args.dry_run else "check")
        print(json.dumps(render.document(command, Status.UNKNOWN, message), indent=2))
    else:
        print(f"UNKNOWN: {message.splitlines()[0] if message else 'error'}")


def _print(args: argparse.Namespace, doc: dict[str, Any], text: str) -> None:
    if args.json:
        import json  # noqa: PLC0415 - only for --json

        text = json.dumps(doc, indent=2)
    print(text)


def _tty() -> bool:
    return sys.stdout.isatty()


def split_target(text: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port``, ``host`` (25) or a bare IPv6 address (25); see
    :func:`hook.endpoint.parse_target` for what is refused."""
    from hook.endpoint import parse_target  # noqa: PLC0415

    return parse_target(text)


RUN_DEADLINE = 50.0
"""Seconds a whole ``renew-check`` may take: under the 60 s Nagios kills a check at."""


def thresholds_for(args: argparse.Namespace, cfg: Config) -> Thresholds:
    """``[probe]``'s expiry thresholds with ``-w``/``-c`` applied (days or a share)."""
    from dataclasses import replace  # noqa: PLC0415

    from hook.errors import ConfigError  # noqa: PLC0415
    from hook.tls import thresholds_of  # noqa: PLC0415

    t = thresholds_of(cfg.probe)
    warn, crit = args.warning, args.critical
    if warn is not None:
        t = replace(t, warning_at_days=warn.days) if warn.days is not None else \
            replace(t, warning_fraction=warn.fraction)
    if crit is not None:
        t = replace(t, critical_at_days=crit.days) if crit.days is not None else \
            replace(t, critical_fraction=crit.fraction)
    if warn is not None and crit is not None and (
            (warn.days is not None and crit.days is not None and crit.days > warn.days) or
            (warn.fraction is not None and crit.fraction is not None
             and crit.fraction > warn.fraction)):
        raise ConfigError("--critical must not be above --warning (alerts come at fewer "
                          "days left: e.g. -w 20 -c 10)")
    return t


def _check(args: argparse.Namespace, cfg: Any) -> int:
    import threading  # noqa: PLC0415

    from daemon.renew_check import peers, render, survey  # noqa: PLC0415
    from hook.postfix import postfix_for  # noqa: PLC0415
    from hook.verdict import worst  # noqa: PLC0415

    limits = thresholds_for(args, cfg)
    stages: list[str] = []
    box: list[tuple[survey.Survey, peers.PeersView] | BaseException] = []

    def work() -> None:
        try:
            found = survey.survey(cfg, lineages=args.lineage, deep=args.deep, dns=args.dns,
                                  thresholds=limits, progress=stages.append)
            stages.append("reading what peers saw (the mail log, TLSRPT reports)")
            box.append((found, peers.seen_by_peers(
                cfg, postfix_for(cfg), dns=args.dns and survey.dns_enabled(cfg))))
        except BaseException as exc:  # re-raised below, in the main thread
            box.append(exc)

    worker = threading.Thread(target=work, name="survey", daemon=True)
    worker.start()
    worker.join(RUN_DEADLINE)
    if not box:
        done = ", ".join(stages[:-1]) or "nothing"
        _unknown(args, f"renew-check did not finish within {RUN_DEADLINE:g} s (its overall "
                 f"deadline, under Nagios' 60 s): still {stages[-1] if stages else 'starting'}; "
                 f"finished: {done}. Try --no-deep or --no-dns, or lower probe.timeout")
        # The stage's pool threads (not daemon threads) would be joined at exit, keeping
        # the process alive past Nagios' 60 s after it said UNKNOWN: leave at once.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(3)
    got = box[0]
    if isinstance(got, BaseException):
        raise got
    result, seen = got
    status = worst([result.status, seen.status])
    doc = render.survey_json(result)
    doc.update(status=status.value, exit_code=status.exit_code, peers=render.peers_json(seen))
    text = render.survey_text(result, tty=_tty(), thresholds=limits)
    head, _, rest = text.partition("\n")
    if status is not result.status:  # the first line is what Nagios shows: it must agree
        head = status.name + head[len(result.status.name):]
    summary, bar, perf = head.partition(" |")
    peers_perf = render.peers_perfdata(seen)
    bar = bar or (" |" if peers_perf else "")  # no certificate's perfdata: the peers' still is
    head = f"{summary}; {render.peers_summary(seen)}{bar}{perf}{peers_perf}"
    _print(args, doc, "\n".join([head, rest, *render.peers_lines(seen)]).replace("\n\n\n", "\n\n"))
    return status.exit_code


def _peers(args: argparse.Namespace, cfg: Any) -> int:
    from pathlib import Path  # noqa: PLC0415

    from daemon.renew_check import peers, render, survey  # noqa: PLC0415
    from hook.postfix import postfix_for  # noqa: PLC0415

    seen = peers.seen_by_peers(cfg, postfix_for(cfg), report_files=[Path(r) for r in args.reports],
                               dns=args.peers_dns and args.dns and survey.dns_enabled(cfg))
    doc = render.document("peers", seen.status, render.peers_summary(seen),
                          peers=render.peers_json(seen))
    _print(args, doc, render.peers_text(seen))
    return seen.status.exit_code


def _probe(args: argparse.Namespace, cfg: Any) -> int:
    from pathlib import Path  # noqa: PLC0415

    from daemon.renew_check import render  # noqa: PLC0415
    from hook import files  # noqa: PLC0415
    from hook.certs import fingerprint, load_trust, parse_chain  # noqa: PLC0415
    from hook.errors import ConfigError  # noqa: PLC0415
    from hook.tls import (  # noqa: PLC0415
        Target,
        Verdict,
        judge,
        map_bounded,
        per_address,
        probe_bounded,
        role_for,
    )
    from hook.verdict import worst  # noqa: PLC0415

    limits = thresholds_for(args, cfg)
    trust = load_trust(Path(args.cafile) if args.cafile else cfg.probe.cafile)
    expected = None
    if args.expect_cert:
        path = Path(args.expect_cert)
        try:
            data = files.read_bounded(path, files.PEM_MAX)
        except OSError as exc:
            from hook.errors import BundleError  # noqa: PLC0415
            raise BundleError(str(path), f"cannot read: {exc.strerror}") from exc
        expected = fingerprint(parse_chain(data, str(path))[0])
    # A target that does not parse is that target's UNKNOWN; the others are still probed.
    bad: dict[int, Verdict] = {}
    targets: list[Target] = []
    for text in args.targets:
        try:
            host, port = split_target(text)
        except ConfigError as exc:
            bad[len(targets) + len(bad)] = _bad_target(text, str(exc))
            continue
        implicit = args.implicit or (port == 465 and not args.starttls)
        targets.extend(per_address(Target(host, port, implicit, args.servername)))
    timeout = args.timeout if args.timeout is not None else cfg.probe.timeout
    deep = args.probe_deep or (cfg.probe.deep and args.deep is not False
                                and not args.probe_no_deep)

    def one(t: Target) -> Any:
        return probe_bounded(t, timeout=timeout, deep=deep)

    results = map_bounded(one, targets, host=lambda t: t.host, per_host=cfg.probe.per_host,
                          workers=cfg.probe.workers)
    judged = iter([judge(res, trust=trust, names=[t.sni] if t.sni else [],
                         expected_sha256=expected, thresholds=limits, deep=dr,
                         role=role_for(t))
                   for t, (res, dr) in zip(targets, results, strict=True)])
    verdicts = [bad[i] if i in bad else next(judged) for i in range(len(targets) + len(bad))]
    status = worst([v.status for v in verdicts])
    _print(args, render.probe_json(verdicts, status),
           render.probe_text(verdicts, status, tty=_tty(), thresholds=limits))
    return status.exit_code


def _bad_target(text: str, message: str) -> Any:
    """The verdict for a target that did not parse: UNKNOWN, saying why."""
    from hook.endpoint import shown  # noqa: PLC0415
    from hook.tls import Target, Verdict  # noqa: PLC0415
    from hook.verdict import Code, Problem, Status  # noqa: PLC0415

    problem = Problem(Code.BAD_INPUT, Status.UNKNOWN, message,
                      "write it as HOST:PORT, [IPv6]:PORT or HOST (port 25)")
    return Verdict(Target(shown(text, 40), 0), Status.UNKNOWN, (problem,), None, None, None,
                   "", "", 0.0)


def _dry_run(args: argparse.Namespace, cfg: Any) -> int:
    from daemon.renew_check import render  # noqa: PLC0415
    from hook import pipeline  # noqa: PLC0415
    from hook.certs import resolve  # noqa: PLC0415
    from hook.verdict import Status, worst  # noqa: PLC0415

    paths = args.lineage or sorted(
        str(p) for p in (cfg.certbot.config_dir / "live").glob("*") if p.is_dir())
    items = []
    for path in paths:
        lin = resolve(path, cfg.certbot.config_dir)
        report = pipeline.run(cfg, lin, dry_run=True)  # the one pipeline, nothing changed
        status = Status.OK if report.outcome in (pipeline.Outcome.WOULD_DEPLOY,
                                                 pipeline.Outcome.SKIPPED) else Status.CRITICAL
        items.append((report, status))
    overall = worst([s for _, s in items]) if items else Status.UNKNOWN
    summary = (f"dry run for {len(items)} lineage(s)" if items else
               f"no lineages under {cfg.certbot.config_dir / 'live'}")
    _print(args, render.document("dry-run", overall, summary,
                                 lineages=[render.report_json(r, s) for r, s in items]),
           render.dry_run_text(items, overall, tty=_tty()) if items else f"UNKNOWN: {summary}")
    return overall.exit_code


def _adopt(args: argparse.Namespace, cfg: Any) -> int:
    from daemon.renew_check import adopt  # noqa: PLC0415
    from hook.certs import resolve  # noqa: PLC0415

    if args.undo:
        restored = adopt.undo(cfg)
        print(f"OK: restored {restored} and reloaded Postfix")
        return RenewCheckExit.OK
    if not args.lineage:
        print("UNKNOWN: adopt needs a lineage directory (or --undo)")
        return RenewCheckExit.UNKNOWN
    res = adopt.adopt(cfg, resolve(args.lineage, cfg.certbot.config_dir),
                      replace=args.replace)
    doc = {"status": "ok", "bundle": str(res.bundle), "backup": str(res.backup),
           "leaf_sha256": res.leaf_sha256, "services": list(res.services)}
    _print(args, doc, f"OK: Postfix now reads {res.bundle} (main.cf backup: {res.backup}); "
           f"serving {res.leaf_sha256[:16]} on {', '.join(res.services)}")
    return RenewCheckExit.OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
