"""The sandbox demo (``scripts/sandbox.sh``): the main job, start to end, on loopback.

1. pebble starts; certbot gets a certificate; a private Postfix serves it in place.
2. ``renew-check adopt`` switches Postfix to the bundle our hook owns.
3. The hook is installed as certbot does it (a symlink in ``renewal-hooks/deploy/``).
4. ``certbot renew --force-renewal`` renews and runs the hook.
5. The fingerprints Postfix served before and after, on every TLS port, are printed.
6. A botched renewal (a private key that does not match the new certificate, written
   into the lineage the way certbot writes a renewal) is refused by the hook: Postfix
   keeps serving the good certificate. Then ``renew-check`` shows the state of it all.

``--keep`` leaves the stack running and prints how to reach it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from daemon.renew_check import cli as check
from hook.certs.bundle import fingerprint, parse_chain
from hook.tls.starttls import Target, probe
from tests.harness.badcerts import ec_key, key_pem, renew_with, restore, snapshot
from tests.harness.stack import LO, VENV_BIN, Stack, new_base, running_stack


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
              f"TLS port ({time.monotonic() - t0:.1f} s so far)")
        ok &= botched_renewal(stack, new_disk)
        print("\n$ renew-check --no-deep   (the manual check, Nagios exit codes)")
        rc = subprocess.run([str(VENV_BIN / "renew-check"), "--config", str(stack.config_file),
                             "--no-deep"], check=False).returncode
        print(f"(exit {rc})")
        print(f"\n{'PASS' if ok else 'FAIL'}: {time.monotonic() - t0:.1f} s in all")
        if args.keep:
            pf = stack.postfix
            pebble_pid = stack.pebble.proc.pid if stack.pebble.proc else "?"
            print(f"\nstack kept under {stack.base} (Postfix and pebble still running):\n"
                  f"  Postfix {pf.config_dir}: smtp {LO}:{pf.smtp_port}, submission "
                  f"{LO}:{pf.submission_port}, smtps {LO}:{pf.smtps_port}\n"
                  f"  .venv/bin/renew-check --config {stack.config_file} --dry-run\n"
                  f"  .venv/bin/renew-check --config {stack.config_file} probe "
                  f"{LO}:{pf.smtp_port} {LO}:{pf.smtps_port}\n"
                  f"  stop: postfix -c {pf.config_dir} stop; kill {pebble_pid}; "
                  f"rm -rf {stack.base}")
            stack.pebble.proc = None  # keep it running past the context
            stack.kept = True  # and Postfix too (the cleanup looks this up at exit)
        return 0 if ok else 1


def botched_renewal(stack: Stack, good_sha: str) -> bool:
    """Write a renewal whose key does not match its certificate; the hook must refuse it."""
    fullchain = (stack.lineage / "fullchain.pem").read_bytes()
    good = snapshot(stack.lineage)
    version = renew_with(stack.lineage, fullchain=fullchain, privkey=key_pem(ec_key()))
    print(f"\nbotched renewal written as version {version} of {stack.lineage} "
          "(a fresh private key that does not match the certificate)")
    print(f"$ postfix-deploy-hook --lineage {stack.lineage}")
    proc = subprocess.run([str(VENV_BIN / "postfix-deploy-hook"), "--lineage", str(stack.lineage)],
                          env={**stack.env(), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                          capture_output=True, text=True, check=False)
    print(proc.stderr.strip())
    print(f"(exit {proc.returncode})")
    now = served(stack)
    ok = proc.returncode == 3 and all(v == good_sha for v in now.values())
    print(f"{'OK ' if ok else 'BAD'} still served on every TLS port: {good_sha}")
    restore(stack.lineage, good)  # what an admin does next: put the good version back
    print(f"botched version {version} removed: {stack.lineage} is back at the served version")
    return ok


if __name__ == "__main__":
    sys.exit(main())
