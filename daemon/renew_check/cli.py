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
Output: --json prints one document (schema postfix-certwatch/renew-check/1, see the
README); otherwise a table on a terminal, plain text (Nagios style) elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Mapping
from enum import IntEnum
from typing import Any


class Nagios(IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


def build_parser() -> argparse.ArgumentParser:
    overview = __doc__.split("\n\n", 1)[1].replace("``", "").replace("::", ":")
    p = argparse.ArgumentParser(
        prog="renew-check", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check every certificate and TLS service Postfix uses (a Nagios plugin).",
        epilog=f"{overview}\nExit codes (Nagios): 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.")
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument("--dry-run", action="store_true",
                   help="run the whole deploy pipeline for each lineage, changing nothing")
    p.add_argument("--lineage", action="append", default=[],
                   help="only this lineage directory (repeatable)")
    p.add_argument("--no-deep", dest="deep", action="store_false", default=None,
                   help="skip the extra handshakes (anonymous cipher, TLS 1.0/1.1)")
    p.add_argument("--no-dns", dest="dns", action="store_false",
                   help="skip the DNS checks (DANE TLSA, MX coverage, MTA-STS)")
    sub = p.add_subparsers(dest="command")
    pr = sub.add_parser("probe", help="probe SMTP endpoints",
                        description="Probe SMTP endpoints (STARTTLS, or implicit TLS on 465).")
    pr.add_argument("targets", nargs="+", metavar="TARGET", help="HOST:PORT, [IPv6]:PORT or HOST")
    mode = pr.add_mutually_exclusive_group()
    mode.add_argument("--starttls", action="store_true", help="SMTP + STARTTLS (default)")
    mode.add_argument("--implicit", action="store_true",
                      help="TLS from the first byte (default for port 465)")
    pr.add_argument("--servername", help="SNI name to send and the name the certificate must cover")
    pr.add_argument("--cafile", help="trust anchors (PEM) in addition to the system store")
    pr.add_argument("--expect-cert", metavar="PATH",
                    help="PEM certificate (or full chain) the server must serve: else 'stale'")
    pr.add_argument("--timeout", type=float, default=None, help="seconds per connection")
    depth = pr.add_mutually_exclusive_group()
    depth.add_argument("--deep", dest="probe_deep", action="store_true",
                       help="also try an anonymous cipher and TLS 1.0/1.1 (3 extra handshakes; "
                       "default: probe.deep in the config, true)")
    depth.add_argument("--no-deep", dest="probe_no_deep", action="store_true",
                       help="one handshake per target only")
    pe = sub.add_parser("peers", help="what peers saw: TLS log lines (24 h) and TLSRPT reports",
                        description="Postfix's TLS log lines of the last 24 h, the _smtp._tls "
                        "record of each domain Postfix receives mail for, and TLSRPT reports "
                        "([peers] tlsrpt_mailbox, and REPORT files: .json, .json.gz or a mail).")
    pe.add_argument("reports", nargs="*", metavar="REPORT", help="TLSRPT report files")
    pe.add_argument("--no-dns", dest="peers_dns", action="store_false",
                    help="skip the _smtp._tls lookups")
    ad = sub.add_parser("adopt", help="switch Postfix to a bundle owned by the deploy hook")
    ad.add_argument("lineage", nargs="?", help="lineage directory under live/")
    ad.add_argument("--undo", action="store_true", help="restore main.cf from before adopt")
    return p


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    from hook import config as config_mod  # noqa: PLC0415 - keep --help fast
    from hook.errors import Error  # noqa: PLC0415

    try:
        cfg = config_mod.load(args.config, env)
        if args.command == "probe":
            return _probe(args, cfg)
        if args.command == "adopt":
            return _adopt(args, cfg)
        if args.command == "peers":
            return _peers(args, cfg)
        if args.dry_run:
            return _dry_run(args, cfg)
        return _check(args, cfg)
    except Error as exc:
        _unknown(args, str(exc))
        return Nagios.UNKNOWN
    except Exception as exc:  # a bug must not look like CRITICAL (2) or WARNING (1) to Nagios
        print(traceback.format_exc(), file=sys.stderr)
        _unknown(args, f"internal error: {type(exc).__name__}: {exc}")
        return Nagios.UNKNOWN


def _unknown(args: argparse.Namespace, message: str) -> None:
    """Nagios reads the first line of stdout: the reason goes there (and to stderr)."""
    if args.json:
        print(f"UNKNOWN: {message}", file=sys.stderr)
        from daemon.renew_check import render  # noqa: PLC0415
        from hook.verdict import Status  # noqa: PLC0415

        command = args.command or ("dry-run" if args.dry_run else "check")
        print(json.dumps(render.document(command, Status.UNKNOWN, message), indent=2))
    else:
        print(f"UNKNOWN: {message.splitlines()[0] if message else 'error'}")


def _print(args: argparse.Namespace, doc: dict[str, Any], text: str) -> None:
    print(json.dumps(doc, indent=2) if args.json else text)


def _tty() -> bool:
    return sys.stdout.isatty()


def split_target(text: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port``, ``host`` (25) or a bare IPv6 address (25)."""
    from hook.errors import ConfigError  # noqa: PLC0415

    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else "25" if not rest else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, "25"
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"target {text!r}: expected HOST:PORT (IPv6 as [::1]:25)")
    return host, int(port)


def _check(args: argparse.Namespace, cfg: Any) -> int:
    from daemon.renew_check import peers, render, survey  # noqa: PLC0415
    from hook.pipeline.deploy import postfix_for  # noqa: PLC0415
    from hook.verdict import worst  # noqa: PLC0415

    result = survey.survey(cfg, lineages=args.lineage, deep=args.deep, dns=args.dns)
    seen = peers.seen_by_peers(cfg, postfix_for(cfg), dns=args.dns and survey.dns_enabled(cfg))
    status = worst([result.status, seen.status])
    doc = render.survey_json(result)
    doc.update(status=status.value, exit_code=status.exit_code, peers=render.peers_json(seen))
    text = render.survey_text(result, tty=_tty(), thresholds=survey.thresholds_of(cfg))
    head, _, rest = text.partition("\n")
    if status is not result.status:  # the first line is what Nagios shows: it must agree
        head = status.name + head[len(result.status.name):]
    summary, bar, perf = head.partition(" |")
    head = f"{summary}; {render.peers_summary(seen)}{bar}{perf}{render.peers_perfdata(seen)}"
    _print(args, doc, "\n".join([head, rest, *render.peers_lines(seen)]).replace("\n\n\n", "\n\n"))
    return status.exit_code


def _peers(args: argparse.Namespace, cfg: Any) -> int:
    from pathlib import Path  # noqa: PLC0415

    from daemon.renew_check import peers, render, survey  # noqa: PLC0415
    from hook.pipeline.deploy import postfix_for  # noqa: PLC0415

    seen = peers.seen_by_peers(cfg, postfix_for(cfg), report_files=[Path(r) for r in args.reports],
                               dns=args.peers_dns and args.dns and survey.dns_enabled(cfg))
    doc = render.document("peers", seen.status, render.peers_summary(seen),
                          peers=render.peers_json(seen))
    _print(args, doc, render.peers_text(seen))
    return seen.status.exit_code


def _probe(args: argparse.Namespace, cfg: Any) -> int:
    from pathlib import Path  # noqa: PLC0415

    from daemon.renew_check import render  # noqa: PLC0415
    from hook.certs import bundle  # noqa: PLC0415
    from hook.certs.validate import load_trust  # noqa: PLC0415
    from hook.tls.judgement import judge, role_for, thresholds_of  # noqa: PLC0415
    from hook.tls.starttls import (  # noqa: PLC0415
        Target,
        map_bounded,
        per_address,
        probe,
        probe_deep,
        worth_going_deep,
    )
    from hook.verdict import worst  # noqa: PLC0415

    trust = load_trust(Path(args.cafile) if args.cafile else cfg.probe.cafile)
    expected = None
    if args.expect_cert:
        path = Path(args.expect_cert)
        try:
            data = path.read_bytes()
        except OSError as exc:
            from hook.errors import BundleError  # noqa: PLC0415
            raise BundleError(str(path), f"cannot read: {exc.strerror}") from exc
        expected = bundle.fingerprint(bundle.parse_chain(data, str(path))[0])
    targets = []
    for text in args.targets:
        host, port = split_target(text)
        implicit = args.implicit or (port == 465 and not args.starttls)
        targets.extend(per_address(Target(host, port, implicit, args.servername)))
    timeout = args.timeout or cfg.probe.timeout
    deep = args.probe_deep or (cfg.probe.deep and args.deep is not False
                                and not args.probe_no_deep)

    def one(t: Target) -> Any:
        res = probe(t, timeout=timeout)
        return res, (probe_deep(t, timeout=timeout) if deep and worth_going_deep(res) else None)

    results = map_bounded(one, targets, host=lambda t: t.host, per_host=cfg.probe.per_host,
                          workers=cfg.probe.workers)
    verdicts = [judge(res, trust=trust, names=[t.sni] if t.sni else [], expected_sha256=expected,
                      thresholds=thresholds_of(cfg.probe), deep=dr, role=role_for(t))
                for t, (res, dr) in zip(targets, results, strict=True)]
    status = worst([v.status for v in verdicts])
    _print(args, render.probe_json(verdicts, status),
           render.probe_text(verdicts, status, tty=_tty()))
    return status.exit_code


def _dry_run(args: argparse.Namespace, cfg: Any) -> int:
    from daemon.renew_check import render  # noqa: PLC0415
    from hook.certs import lineage  # noqa: PLC0415
    from hook.pipeline import deploy  # noqa: PLC0415
    from hook.verdict import Status, worst  # noqa: PLC0415

    paths = args.lineage or sorted(
        str(p) for p in (cfg.certbot.config_dir / "live").glob("*") if p.is_dir())
    items = []
    for path in paths:
        lin = lineage.resolve(path, cfg.certbot.config_dir)
        report = deploy.run(cfg, lin, dry_run=True)  # the one pipeline, nothing changed
        status = Status.OK if report.outcome in (deploy.Outcome.WOULD_DEPLOY,
                                                 deploy.Outcome.SKIPPED) else Status.CRITICAL
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
    from hook.certs import lineage  # noqa: PLC0415

    if args.undo:
        restored = adopt.undo(cfg)
        print(f"OK: restored {restored} and reloaded Postfix")
        return Nagios.OK
    if not args.lineage:
        print("UNKNOWN: adopt needs a lineage directory (or --undo)", file=sys.stderr)
        return Nagios.UNKNOWN
    res = adopt.adopt(cfg, lineage.resolve(args.lineage, cfg.certbot.config_dir))
    doc = {"status": "ok", "bundle": str(res.bundle), "backup": str(res.backup),
           "leaf_sha256": res.leaf_sha256, "services": list(res.services)}
    _print(args, doc, f"OK: Postfix now reads {res.bundle} (main.cf backup: {res.backup}); "
           f"serving {res.leaf_sha256[:16]} on {', '.join(res.services)}")
    return Nagios.OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
