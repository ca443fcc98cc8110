"""``renew-check``: the manual check, for admins and for Nagios/Icinga.

Sub-commands::

    renew-check [--dry-run] [--lineage PATH]   check (or dry-run deploy) Postfix's lineages
    renew-check probe HOST:PORT... [--starttls|--implicit] [--servername NAME]
    renew-check adopt LINEAGE                  make Postfix read a bundle the hook owns
    renew-check adopt --undo                   put the main.cf from before adopt back

Exit codes follow the Nagios plugin convention: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from enum import IntEnum
from typing import Any


class Nagios(IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="renew-check", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Exit codes: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.")
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument("--dry-run", action="store_true",
                   help="run the whole deploy pipeline for each lineage, changing nothing")
    p.add_argument("--lineage", action="append", default=[],
                   help="only this lineage directory (repeatable)")
    sub = p.add_subparsers(dest="command")
    pr = sub.add_parser("probe", help="probe SMTP endpoints")
    pr.add_argument("targets", nargs="+", metavar="HOST:PORT")
    mode = pr.add_mutually_exclusive_group()
    mode.add_argument("--starttls", action="store_true", help="SMTP + STARTTLS (default)")
    mode.add_argument("--implicit", action="store_true", help="TLS from the first byte (465)")
    pr.add_argument("--servername", help="SNI name to send")
    pr.add_argument("--timeout", type=float, default=None, help="seconds per probe")
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
        return _lineages(args, cfg)
    except Error as exc:
        print(f"UNKNOWN: {exc}", file=sys.stderr)
        return Nagios.UNKNOWN


def _emit(args: argparse.Namespace, doc: dict[str, Any], lines: list[str]) -> None:
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print("\n".join(lines))


def _split_target(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        from hook.errors import ConfigError  # noqa: PLC0415
        raise ConfigError(f"target {text!r}: expected HOST:PORT (IPv6 as [::1]:25)")
    return host.strip("[]"), int(port)


def _probe(args: argparse.Namespace, cfg: Any) -> int:
    from hook.bundle import fingerprint  # noqa: PLC0415
    from hook.probe import Target, probe  # noqa: PLC0415

    results = []
    worst = Nagios.OK
    lines = []
    for text in args.targets:
        host, port = _split_target(text)
        implicit = args.implicit or (port == 465 and not args.starttls)
        res = probe(Target(host, port, implicit, args.servername),
                    timeout=args.timeout or cfg.probe.timeout)
        if res.handshake and res.handshake.chain:
            sha = fingerprint(res.handshake.leaf)
            lines.append(f"OK {res.target.label} {res.handshake.protocol} {res.handshake.cipher} "
                         f"leaf sha256 {sha}")
            results.append({"target": res.target.label, "status": "ok", "leaf_sha256": sha,
                            "protocol": res.handshake.protocol, "cipher": res.handshake.cipher,
                            "seconds": round(res.seconds, 4)})
        else:
            worst = Nagios.CRITICAL
            code = res.failure.value if res.failure else "unknown"
            lines.append(f"CRITICAL {res.target.label} {code}: {res.detail}")
            results.append({"target": res.target.label, "status": "critical", "problems":
                            [{"code": code, "detail": res.detail}],
                            "seconds": round(res.seconds, 4)})
    _emit(args, {"status": worst.name.lower(), "targets": results}, lines)
    return worst


def _lineages(args: argparse.Namespace, cfg: Any) -> int:
    from hook import deploy, lineage  # noqa: PLC0415

    paths = args.lineage or sorted(
        str(p) for p in (cfg.certbot.config_dir / "live").glob("*") if p.is_dir())
    worst = Nagios.OK
    docs = []
    lines = []
    for path in paths:
        lin = lineage.resolve(path, cfg.certbot.config_dir)
        report = deploy.run(cfg, lin, dry_run=True)
        status = {
            deploy.Outcome.WOULD_DEPLOY: Nagios.OK,
            deploy.Outcome.SKIPPED: Nagios.OK,
        }.get(report.outcome, Nagios.CRITICAL)
        worst = max(worst, status)
        docs.append({"lineage": report.lineage, "status": status.name.lower(),
                     "outcome": report.outcome.value, "message": report.message,
                     "steps": list(report.steps), "new_sha256": report.new_sha256,
                     "old_sha256": report.old_sha256})
        lines.append(f"{status.name} {report.lineage}: {report.message}")
        if args.dry_run:
            lines.extend(f"  would: {s}" for s in report.steps)
    if not paths:
        lines.append(f"UNKNOWN: no lineages under {cfg.certbot.config_dir / 'live'}")
        worst = Nagios.UNKNOWN
    _emit(args, {"status": worst.name.lower(), "lineages": docs}, lines)
    return worst


def _adopt(args: argparse.Namespace, cfg: Any) -> int:
    from hook import adopt, lineage  # noqa: PLC0415

    if args.undo:
        restored = adopt.undo(cfg)
        print(f"OK: restored {restored} and reloaded Postfix")
        return Nagios.OK
    if not args.lineage:
        print("UNKNOWN: adopt needs a lineage directory (or --undo)", file=sys.stderr)
        return Nagios.UNKNOWN
    res = adopt.adopt(cfg, lineage.resolve(args.lineage, cfg.certbot.config_dir))
    _emit(args, {"status": "ok", "bundle": str(res.bundle), "backup": str(res.backup),
                 "leaf_sha256": res.leaf_sha256, "services": list(res.services)},
          [f"OK: Postfix now reads {res.bundle} (main.cf backup: {res.backup}); "
           f"serving {res.leaf_sha256[:16]} on {', '.join(res.services)}"])
    return Nagios.OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
