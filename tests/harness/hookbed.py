"""A staged test bed for deploy-hook tests: the real stack after ``renew-check adopt``,
a CA file trusting pebble and a :class:`~tests.harness.badcerts.TestCA`, alert mail to a
file, and helpers to run the installed hook the way certbot does and probe every port."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from daemon.renew_check import cli as check
from hook.certs.bundle import fingerprint
from hook.tls.starttls import Target, probe
from tests.harness import badcerts as bc
from tests.harness.stack import LO, VENV_BIN, Pebble, Stack, running_stack

HOOK = str(VENV_BIN / "postfix-deploy-hook")
KEY_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")


def key_body(pem: bytes) -> str:
    """A line of the key's base64: it must never appear in any output."""
    return pem.decode().splitlines()[1]


@dataclass
class Bed:
    stack: Stack
    ca: bc.TestCA
    key: bytes
    """The current (served) private key."""
    fullchain: bytes
    served: str
    bundle: Path
    mailbox: Path
    lineage_override: Path | None = None
    """A case may run the hook on another path (e.g. a lineage outside live/)."""

    def files(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.bundle.parent.glob(f"{self.bundle.name}*"))}

    def good_leaf(self, key: PrivateKeyTypes | None = None) -> tuple[bytes, bytes]:
        """A correct renewal from the test CA: (fullchain, privkey)."""
        k = key or bc.ec_key()
        return self.ca.fullchain(self.ca.leaf(k)), bc.key_pem(k)


def run_hook(stack: Stack, lineage: Path | str | None = None, *args: str,
             config: Path | None = None, by_certbot: bool = True
             ) -> subprocess.CompletedProcess[str]:
    """Run the installed hook as certbot does (``RENEWED_LINEAGE``), or with ``--lineage``."""
    path = str(lineage or stack.lineage)
    env = {**os.environ, "POSTFIX_CERTWATCH_CONFIG": str(config or stack.config_file),
           "RENEWED_DOMAINS": "mail.example.test"}
    argv = [HOOK, *args]
    if by_certbot:
        env["RENEWED_LINEAGE"] = path
    else:
        argv += ["--lineage", path]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)


def log_line(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The one canonical JSON log line the hook prints on stdout."""
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, result.stdout
    return dict(json.loads(lines[0]))


def served_all(stack: Stack) -> list[str]:
    pf = stack.postfix
    out = []
    for port, implicit in ((pf.smtp_port, False), (pf.submission_port, False), (pf.smtps_port, True)):
        res = probe(Target(LO, port, implicit_tls=implicit), timeout=5)
        assert res.handshake is not None, res.detail
        out.append(fingerprint(res.handshake.leaf))
    return out



@contextlib.contextmanager
def staged_bed(pebble: Pebble, **config: dict[str, object]) -> Iterator[Bed]:
    """A staged stack whose CA file trusts pebble and a test CA; alerts go to a file."""
    with running_stack(pebble) as stack:
        ca = bc.TestCA()
        cafile = stack.base / "cafile.pem"
        cafile.write_bytes(stack.pebble.root.read_bytes() + bc.cert_pem(ca.root))
        mailbox = stack.base / "alerts.mbox"
        recorder = stack.base / "sendmail"
        recorder.write_text(f"#!/bin/sh\necho \"ARGS: $*\" >> {mailbox}\ncat >> {mailbox}\n")
        recorder.chmod(0o755)
        sections: dict[str, dict[str, object]] = {
            "probe": {"cafile": str(cafile)}, "deploy": {"proof_timeout": 8},
            "alert": {"mail_to": ["postmaster@example.test"], "sendmail_command": [str(recorder)]}}
        for name, values in config.items():
            sections.setdefault(name, {}).update(values)
        stack.write_config(None, **sections)
        assert check.main(["--config", str(stack.config_file), "adopt", str(stack.lineage)]) == 0
        bundle = stack.bundle_dir / "mail.example.test.pem"
        served = served_all(stack)[0]
        yield Bed(stack, ca, (stack.lineage / "privkey.pem").read_bytes(),
                  (stack.lineage / "fullchain.pem").read_bytes(), served, bundle, mailbox)
