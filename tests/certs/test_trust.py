"""OS trust anchors: the real ``update-ca-certificates`` on sandbox directories, and
RHEL's ``update-ca-trust`` as a recording stand-in (it cannot be installed on Debian)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from hook.certs import trust
from hook.certs.bundle import fingerprint
from hook.config import TrustConfig
from tests.harness import badcerts as bc


@dataclass(frozen=True)
class Sandbox:
    root: Path
    local: Path
    output: Path
    state: Path
    command: tuple[str, ...]

    def config(self, **kw: object) -> TrustConfig:
        return TrustConfig(import_anchors=True, flavor="debian", anchors_dir=self.local,
                           update_command=self.command, **kw)  # type: ignore[arg-type]

    def bundle(self) -> bytes:
        return self.output.read_bytes()


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    """update-ca-certificates confined to temp dirs (flags from STACK-NOTES): one system
    root enabled, an empty hooks dir (else the real Java keystore hook runs)."""
    certs, local, etc, hooks = (tmp_path / d for d in ("certs", "local", "etc", "hooks"))
    for d in (certs / "mozilla", local, etc, hooks):
        d.mkdir(parents=True)
    system = sorted(Path("/usr/share/ca-certificates/mozilla").glob("*.crt"))[0]
    shutil.copy(system, certs / "mozilla" / system.name)
    conf = tmp_path / "ca-certificates.conf"
    conf.write_text(f"mozilla/{system.name}\n")
    cmd = ("update-ca-certificates", "--certsconf", str(conf), "--certsdir", str(certs),
           "--localcertsdir", str(local), "--etccertsdir", str(etc), "--hooksdir", str(hooks))
    yield Sandbox(tmp_path, local, etc / "ca-certificates.crt", tmp_path / "state", cmd)


def _pem(cert: x509.Certificate) -> bytes:
    return bc.cert_pem(cert)


def _body(cert: x509.Certificate) -> bytes:
    return b"".join(_pem(cert).split(b"-----")[2].split())


def _in_bundle(sb: Sandbox, cert: x509.Certificate) -> bool:
    return _body(cert) in b"".join(sb.bundle().split())


def _chain(ca: bc.TestCA, with_root: bool = False) -> list[x509.Certificate]:
    chain = [ca.leaf(bc.ec_key()), ca.intermediate]
    return [*chain, ca.root] if with_root else chain


def test_only_intermediates_are_candidates() -> None:
    """The leaf and a self-signed root in the chain are never imported; the intermediate is."""
    ca = bc.TestCA()
    assert trust.ca_certificates(_chain(ca, with_root=True)) == [ca.intermediate]
    assert trust.ca_certificates(_chain(ca)[:1]) == []


def test_debian_import_is_idempotent_and_stale_files_go_with_fresh(sandbox: Sandbox) -> None:
    """Import writes one .crt per fingerprint and the real tool adds it to the bundle; a
    second run changes nothing and runs nothing; when the lineage's intermediate changes
    the old file is removed and (thanks to --fresh) no longer trusted."""
    cfg = sandbox.config()
    ca1, ca2 = bc.TestCA("one"), bc.TestCA("two")
    plan = trust.plan(cfg, sandbox.state, "mail", _chain(ca1, with_root=True))
    assert [n for n, _ in plan.add] == [f"{trust.PREFIX}{fingerprint(ca1.intermediate)}.crt"]
    assert trust.apply(plan, sandbox.state, "mail").ok
    assert _in_bundle(sandbox, ca1.intermediate)
    assert not _in_bundle(sandbox, ca1.root)
    mtime = sandbox.output.stat().st_mtime_ns

    again = trust.plan(cfg, sandbox.state, "mail", _chain(ca1))
    assert not again.changes and "already current" in again.describe()
    assert trust.apply(again, sandbox.state, "mail").ok
    assert sandbox.output.stat().st_mtime_ns == mtime

    switched = trust.plan(cfg, sandbox.state, "mail", _chain(ca2))
    assert switched.remove == (f"{trust.PREFIX}{fingerprint(ca1.intermediate)}.crt",)
    result = trust.apply(switched, sandbox.state, "mail")
    assert result.ok and "still holds" not in result.message
    assert sorted(p.name for p in sandbox.local.iterdir()) == [
        f"{trust.PREFIX}{fingerprint(ca2.intermediate)}.crt"]
    assert _in_bundle(sandbox, ca2.intermediate)
    assert not _in_bundle(sandbox, ca1.intermediate)


def test_an_intermediate_another_lineage_wants_is_kept(sandbox: Sandbox) -> None:
    """Two lineages share an intermediate: when one moves on, the file stays for the other."""
    cfg = sandbox.config()
    ca1, ca2 = bc.TestCA("shared"), bc.TestCA("new")
    for name in ("a", "b"):
        assert trust.apply(trust.plan(cfg, sandbox.state, name, _chain(ca1)), sandbox.state, name).ok
    plan = trust.plan(cfg, sandbox.state, "a", _chain(ca2))
    assert plan.remove == ()
    assert trust.apply(plan, sandbox.state, "a").ok
    assert _in_bundle(sandbox, ca1.intermediate) and _in_bundle(sandbox, ca2.intermediate)


def test_failed_update_restores_the_previous_anchor_files(sandbox: Sandbox) -> None:
    """When the update command fails, the anchor files and the manifest are put back as
    they were, the command is re-run, and the result says what failed."""
    ca1, ca2 = bc.TestCA("before"), bc.TestCA("after")
    assert trust.apply(trust.plan(sandbox.config(), sandbox.state, "mail", _chain(ca1)),
                       sandbox.state, "mail").ok
    before = {p.name: p.read_bytes() for p in sandbox.local.iterdir()}
    manifest = (sandbox.state / trust.MANIFEST).read_bytes()
    failing = sandbox.root / "update-fails"
    failing.write_text(f"#!/bin/sh\n[ -e {sandbox.root}/failed ] && exec {' '.join(sandbox.command)}\n"
                       f"touch {sandbox.root}/failed\necho 'E: disk full' >&2\nexit 1\n")
    failing.chmod(0o755)
    cfg = TrustConfig(import_anchors=True, flavor="debian", anchors_dir=sandbox.local,
                      update_command=(str(failing),))
    result = trust.apply(trust.plan(cfg, sandbox.state, "mail", _chain(ca2)), sandbox.state, "mail")
    assert not result.ok
    assert "E: disk full" in result.message and "restored" in result.message
    assert {p.name: p.read_bytes() for p in sandbox.local.iterdir()} == before
    assert (sandbox.state / trust.MANIFEST).read_bytes() == manifest
    assert _in_bundle(sandbox, ca1.intermediate)


def test_rhel_path_against_a_recording_stand_in(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """RHEL: files go to the anchors dir and ``update-ca-trust extract`` runs once, after
    they are in place. The real tool is not packaged for Debian: a stand-in on PATH records
    its arguments and what the anchors dir held when it ran."""
    bin_dir, anchors, log = tmp_path / "bin", tmp_path / "anchors", tmp_path / "calls.log"
    bin_dir.mkdir()
    stand_in = bin_dir / "update-ca-trust"
    stand_in.write_text(f"#!/bin/sh\necho \"argv: $*\" >> {log}\nls {anchors} >> {log}\n")
    stand_in.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cfg = TrustConfig(import_anchors=True, flavor="rhel", anchors_dir=anchors)
    ca = bc.TestCA("rhel")
    plan = trust.plan(cfg, tmp_path / "state", "mail", _chain(ca, with_root=True))
    assert plan.command == ("update-ca-trust", "extract")
    assert trust.apply(plan, tmp_path / "state", "mail").ok
    name = f"{trust.PREFIX}{fingerprint(ca.intermediate)}.crt"
    assert log.read_text() == f"argv: extract\n{name}\n"
    assert (anchors / name).read_bytes() == _pem(ca.intermediate)
    assert trust.apply(trust.plan(cfg, tmp_path / "state", "mail", _chain(ca)),
                       tmp_path / "state", "mail").ok
    assert log.read_text().count("argv:") == 1  # idempotent: nothing to do, nothing run
    assert trust.plan(TrustConfig(flavor="rhel"), tmp_path / "s", "x", []).anchors_dir == \
        Path("/etc/pki/ca-trust/source/anchors")
