"""Opt-in import of a chain's intermediate CA certificates into the OS trust anchors.

Debian: one ``.crt`` per certificate in ``/usr/local/share/ca-certificates`` and
``update-ca-certificates`` (with ``--fresh`` after a removal: without it Debian's tool
keeps trusting a removed certificate). RHEL: ``/etc/pki/ca-trust/source/anchors`` and
``update-ca-trust extract``. RHEL's tool is not packaged for Debian, so that path is
tested against a recording stand-in (``tests/certs/test_trust.py``), never the real tool.

One file per fingerprint (``postfix-certwatch-<sha256>.crt``), never the leaf; which
lineage wants which fingerprint is kept in ``<state_dir>/trust-anchors.json``, so a
fingerprint is removed only when no lineage wants it any more. Before any change the
managed files, the manifest and the generated bundle are backed up in memory; if the
update command fails they are put back and the command is run again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hook import files
from hook.certs.bundle import fingerprint
from hook.certs.validate import is_self_signed
from hook.config import TrustConfig
from hook.errors import ConfigError
from hook.files import atomic_write

PREFIX = "postfix-certwatch-"
MANIFEST = "trust-anchors.json"
DEFAULTS = {
    "debian": (Path("/usr/local/share/ca-certificates"), ("update-ca-certificates",)),
    "rhel": (Path("/etc/pki/ca-trust/source/anchors"), ("update-ca-trust", "extract")),
}


@dataclass(frozen=True)
class AnchorPlan:
    """What an import would do (``--dry-run`` prints it)."""

    flavor: str
    anchors_dir: Path
    command: tuple[str, ...]
    add: tuple[tuple[str, bytes], ...]
    """(file name, PEM) to write."""
    remove: tuple[str, ...]
    wanted: tuple[str, ...]
    """Fingerprints this lineage wants (the manifest entry)."""

    @property
    def changes(self) -> bool:
        return bool(self.add or self.remove)

    def describe(self) -> str:
        if not self.changes:
            return f"trust anchors in {self.anchors_dir} already current ({len(self.wanted)} CA)"
        return (f"trust anchors in {self.anchors_dir}: add {len(self.add)}, remove "
                f"{len(self.remove)}, then {' '.join(self.command)}")


@dataclass(frozen=True)
class AnchorResult:
    ok: bool
    message: str


def detect(config: TrustConfig) -> str:
    """``debian`` or ``rhel`` from the configuration, else from what the system has."""
    if config.flavor in DEFAULTS:
        return config.flavor
    if config.flavor != "auto":
        raise ConfigError(f"trust.flavor: expected auto, debian or rhel, got {config.flavor!r}")
    if shutil.which("update-ca-certificates") or Path("/etc/debian_version").exists():
        return "debian"
    return "rhel"


def ca_certificates(chain: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """The chain's intermediates: CA certificates after the leaf, self-signed roots excluded."""
    out = []
    for cert in chain[1:]:
        try:
            bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            continue
        if bc.ca and not is_self_signed(cert):
            out.append(cert)
    return out


def _manifest(state_dir: Path) -> dict[str, list[str]]:
    try:
        data = json.loads(files.read_bounded(state_dir / MANIFEST, files.RECORD_MAX))
    except (OSError, ValueError):
        return {}
    return {str(k): [str(x) for x in v] for k, v in data.items() if isinstance(v, list)}


def plan(config: TrustConfig, state_dir: Path, lineage: str,
         chain: Sequence[x509.Certificate]) -> AnchorPlan:
    flavor = detect(config)
    default_dir, default_cmd = DEFAULTS[flavor]
    anchors_dir = config.anchors_dir or default_dir
    command = config.update_command or default_cmd
    certs = {fingerprint(c): c for c in ca_certificates(chain)}
    manifest = _manifest(state_dir)
    manifest[lineage] = sorted(certs)
    still_wanted = {fp for fps in manifest.values() for fp in fps}
    present = {p.name for p in anchors_dir.glob(f"{PREFIX}*.crt")} if anchors_dir.is_dir() else set()
    add = tuple((f"{PREFIX}{fp}.crt", c.public_bytes(serialization.Encoding.PEM))
                for fp, c in sorted(certs.items()) if f"{PREFIX}{fp}.crt" not in present)
    remove = tuple(sorted(n for n in present if n[len(PREFIX):-4] not in still_wanted))
    return AnchorPlan(flavor, anchors_dir, tuple(command), add, remove, tuple(sorted(certs)))


def _bundle_output(plan: AnchorPlan) -> Path | None:
    """The file Debian's tool regenerates (backed up with the anchors)."""
    if plan.flavor != "debian":
        return None
    etc = Path("/etc/ssl/certs")
    cmd = list(plan.command)
    if "--etccertsdir" in cmd and cmd.index("--etccertsdir") + 1 < len(cmd):
        etc = Path(cmd[cmd.index("--etccertsdir") + 1])
    return etc / "ca-certificates.crt"


def _run(command: Sequence[str]) -> tuple[bool, str]:
    try:
        proc = subprocess.run(list(command), capture_output=True, text=True, timeout=120,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{command[0]}: {exc}"
    out = (proc.stderr or proc.stdout).strip()
    return proc.returncode == 0, f"exit {proc.returncode}" + (f": {out[-500:]}" if out else "")


def apply(plan: AnchorPlan, state_dir: Path, lineage: str) -> AnchorResult:
    """Write/remove anchor files and run the update command; restore everything on failure."""
    manifest = _manifest(state_dir)
    old_manifest = dict(manifest)
    manifest[lineage] = list(plan.wanted)
    if not plan.changes:
        if old_manifest.get(lineage) != manifest[lineage]:
            _write_manifest(state_dir, manifest)
        return AnchorResult(True, plan.describe())
    plan.anchors_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    output = _bundle_output(plan)
    backup = _backup(plan, output)
    for name, pem in plan.add:
        atomic_write(plan.anchors_dir / name, pem, mode=0o644)
    for name in plan.remove:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(plan.anchors_dir / name)
    command = list(plan.command)
    if plan.flavor == "debian" and plan.remove and "--fresh" not in command:
        command.append("--fresh")
    ok, detail = _run(command)
    if ok:
        _write_manifest(state_dir, manifest)
        still = _still_trusted(output, [backup[plan.anchors_dir / n] for n in plan.remove])
        if still:
            return AnchorResult(True, f"{plan.describe()}: done, but {output} still holds {still} "
                                "removed certificate(s) (Debian's tool keeps the old bundle when "
                                "no certificate at all is left)")
        return AnchorResult(True, f"{plan.describe()}: done")
    return _restore(plan, backup, output, command, detail)


def _backup(plan: AnchorPlan, output: Path | None) -> dict[Path, bytes | None]:
    """The anchor files the plan touches and the OS bundle, as they are (None: absent)."""
    backup: dict[Path, bytes | None] = {}
    for name in [n for n, _ in plan.add] + list(plan.remove):
        path = plan.anchors_dir / name
        backup[path] = path.read_bytes() if path.exists() else None
    if output is not None:
        backup[output] = output.read_bytes() if output.exists() else None
    return backup


def _restore(plan: AnchorPlan, backup: dict[Path, bytes | None], output: Path | None,
             command: list[str], detail: str) -> AnchorResult:
    """The update command failed: put the anchor files back, re-run it, and put the OS
    bundle back too if that fails again."""
    for path, data in backup.items():
        if path == output:
            continue
        if data is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        else:
            atomic_write(path, data, mode=0o644)
    again_ok, again = _run([*plan.command, *(["--fresh"] if plan.flavor == "debian" else [])])
    if not again_ok and output is not None:
        data = backup[output]
        if data is not None:
            atomic_write(output, data, mode=0o644)
    return AnchorResult(False, f"{' '.join(command)} failed ({detail}); anchor files restored"
                        + ("" if again_ok else f", re-running it failed too ({again})"))


def _still_trusted(output: Path | None, removed: list[bytes | None]) -> int:
    if output is None or not removed:
        return 0
    try:
        bundle = b"".join(output.read_bytes().split())
    except OSError:
        return 0
    bodies = [b"".join(pem.split(b"-----")[2].split()) for pem in removed if pem]
    return sum(1 for body in bodies if body and body in bundle)


def _write_manifest(state_dir: Path, manifest: dict[str, list[str]]) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(state_dir / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode(),
                 mode=0o644)
