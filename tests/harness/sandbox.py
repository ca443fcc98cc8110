"""The sandbox demo (``scripts/sandbox.sh``): the main job, start to end, on loopback.

1. pebble starts; certbot gets a certificate; a private Postfix serves it in place.
2. ``renew-check adopt`` switches Postfix to the bundle our hook owns.
3. The hook is installed as certbot does it (a symlink in ``renewal-hooks/deploy/``).
4. ``certbot renew --force-renewal`` renews and runs the hook.
5. The fingerprints Postfix served before and after, on every TLS port, are printed.

``--keep`` leaves the stack running and prints how to reach it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from daemon import check
from hook.bundle import fingerprint, parse_chain
from hook.probe import Target, probe
from tests.harness.stack import LO, Stack, new_base, running_stack


def served(stack: Stack) -> dict[str, str]:
    pf = stack.postfix
    out = {}
    for name, port, implicit in (("smtp (STARTTLS)", pf.smtp_port, False),
                                 ("submission (STARTTLS)", pf.submission_port, False),
                                 ("smtps (implicit TLS)", pf.smtps_port, True)):
        res = probe(Target(LO, port, implicit), timeout=5)
        out[f"{name} {LO}:{port}"] = (fingerprint(res.handshake.leaf) if res.handshake
                                      else f"FAILED {res.failure}: {res.detail}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sandbox", description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", action="store_true", help="leave the stack running")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    base = new_base("certwatch-sandbox-") if args.keep else None
    with running_stack(base=base) as stack:
        print(f"stack up in {time.monotonic() - t0:.1f} s under {stack.base}")
        rc = check.main(["--config", str(stack.config_file), "adopt", str(stack.lineage)])
        if rc != 0:
            return rc
        before = served(stack)
        old_disk = fingerprint(parse_chain((stack.lineage / "cert.pem").read_bytes(), "")[0])
        hook = stack.install_hook()
        print(f"deploy hook installed: {hook} -> {hook.readlink()}")
        t1 = time.monotonic()
        result = stack.certbot.renew(env=stack.env())
        print(f"certbot renew --force-renewal: exit {result.returncode} "
              f"in {time.monotonic() - t1:.1f} s")
        after = served(stack)
        new_disk = fingerprint(parse_chain((stack.lineage / "cert.pem").read_bytes(), "")[0])
        records = sorted((stack.state_dir / "deploys").glob("*.json"))
        record = json.loads(records[-1].read_text()) if records else {}
        print(f"\nhook outcome: {record.get('outcome', 'no deploy record!')}: "
              f"{record.get('message', '')}")
        print(f"\ncert.pem on disk: old {old_disk}\n                  new {new_disk}\n")
        ok = True
        for svc in before:
            mark = "OK " if after[svc] == new_disk and before[svc] == old_disk else "BAD"
            ok &= mark == "OK "
            print(f"{mark} {svc}\n      served before: {before[svc]}\n"
                  f"      served after:  {after[svc]}")
        print(f"\n{'PASS' if ok else 'FAIL'}: Postfix serves the renewed certificate on every "
              f"TLS port ({time.monotonic() - t0:.1f} s in all)")
        if args.keep:
            print(f"\nstack kept: config {stack.config_file}; try\n"
                  f"  .venv/bin/renew-check --config {stack.config_file} --dry-run\n"
                  f"  stop: postfix -c {stack.postfix.config_dir} stop; "
                  f"kill {stack.pebble.proc.pid if stack.pebble.proc else '?'}")
            stack.pebble.proc = None  # keep it running past the context
            stack.postfix.stop = lambda: None  # type: ignore[method-assign]
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
