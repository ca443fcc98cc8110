"""The deploy hook on the real stack: rollback, dry run, lock, idempotence, warnings,
modes (staged, in place, split files for older Postfix, SNI maps), adopt and undo."""

from __future__ import annotations

import fcntl
import grp
import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from daemon.renew_check import adopt, audit
from daemon.renew_check import cli as check
from hook import config
from hook.certs import lineage
from hook.certs.bundle import fingerprint, parse_chain
from hook.postfix import tls_files as discover
from hook.postfix.instance import postfix_for
from hook.tls.starttls import Target, probe
from hook.verdict import Code
from tests.harness import badcerts as bc
from tests.harness.hookbed import HOOK, Bed, log_line, run_hook, served_all, staged_bed
from tests.harness.stack import LO, Pebble, PostfixInstance, Stack


@pytest.fixture(scope="module")
def bed(pebble: Pebble) -> Iterator[Bed]:
    """One staged stack for this module; each test leaves a valid lineage served."""
    with staged_bed(pebble) as b:
        yield b


def served_now(b: Bed) -> str:
    got = set(served_all(b.stack))
    assert len(got) == 1, got
    return got.pop()


def leaf_sha(chain: bytes) -> str:
    return fingerprint(parse_chain(chain, "x")[0])


def reloads(stack: Stack) -> int:
    return stack.postfix.maillog.read_text(errors="replace").count("reload -- version")


def test_rollback_when_the_reload_serves_the_wrong_certificate(bed: Bed) -> None:
    """A reload that makes Postfix serve something else (here: a reload command that
    clobbers the bundle once) fails the proof; the hook restores the previous bundle,
    reloads, proves the old leaf is served again and exits 4 with an alert."""
    stack = bed.stack
    old_files, old = bed.files(), served_now(bed)
    wrong_chain, wrong_key = bed.good_leaf()
    wrong = stack.base / "wrong.pem"
    wrong.write_bytes(wrong_key + wrong_chain)
    flag = stack.base / "clobbered"
    script = stack.base / "reload-wrong"
    script.write_text(f"#!/bin/sh\nset -e\nif [ ! -e {flag} ]; then touch {flag}; "
                      f"cp {wrong} {bed.bundle}.x; mv {bed.bundle}.x {bed.bundle}; fi\n"
                      f"exec postfix -c {stack.postfix.config_dir} reload\n")
    script.chmod(0o755)
    cfg = stack.write_config(stack.base / "wrong.toml",
                             probe={"cafile": str(stack.base / "cafile.pem")},
                             deploy={"proof_timeout": 3},
                             postfix={"reload_command": [str(script)]},
                             alert={"mail_to": ["postmaster@example.test"],
                                    "sendmail_command": [str(stack.base / "sendmail")]})
    chain, key = bed.good_leaf()
    bc.renew_with(stack.lineage, fullchain=chain, privkey=key)
    bed.mailbox.unlink(missing_ok=True)
    result = run_hook(stack, config=cfg)
    assert result.returncode == 4, result.stderr
    assert "proof failed" in result.stderr and "rolled back" in result.stderr
    assert leaf_sha(wrong_chain)[:16] in result.stderr  # what was served instead
    assert served_now(bed) == old
    assert bed.files()[bed.bundle.name] == old_files[bed.bundle.name]
    assert "problem:   rolled_back" in bed.mailbox.read_text()
    line = log_line(result)
    assert line["outcome"] == "rolled_back" and line["level"] == "error"
    assert {"reload", "prove", "rollback"} <= set(line["timings"])


def test_dry_run_changes_nothing_and_predicts_the_real_run(bed: Bed) -> None:
    """``--dry-run`` on a good renewal prints every step, exits 0 and changes nothing (no
    write, no reload, no record); the real run then does exactly that and exits 0 too. On
    a bad renewal both the hook's and renew-check's dry runs fail like the real run."""
    stack = bed.stack
    chain, key = bed.good_leaf()
    bc.renew_with(stack.lineage, fullchain=chain, privkey=key)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in bed.bundle.parent.iterdir()}
    records = set((stack.state_dir / "deploys").glob("*.json"))
    n_reloads, old = reloads(stack), served_now(bed)
    dry = run_hook(stack, None, "--dry-run", by_certbot=False)
    assert dry.returncode == 0, dry.stderr
    new = leaf_sha(chain)
    assert f"would: write {bed.bundle} (mode 0600, key + 2 certificates)" in dry.stdout
    assert f"would: postfix -c {stack.postfix.config_dir} reload" in dry.stdout
    assert dry.stdout.count("would: prove 127.0.0.1:") == 3
    assert f"would deploy {new[:16]}" in dry.stdout
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in bed.bundle.parent.iterdir()} == before
    assert set((stack.state_dir / "deploys").glob("*.json")) == records
    assert reloads(stack) == n_reloads
    assert served_now(bed) == old
    assert check.main(["--config", str(stack.config_file), "--dry-run"]) == 0

    real = run_hook(stack, None, by_certbot=False)
    assert real.returncode == 0, real.stderr
    assert served_now(bed) == new

    bc.renew_with(stack.lineage, fullchain=chain, privkey=bc.key_pem(bc.ec_key()))
    bad = run_hook(stack, None, "--dry-run", by_certbot=False)
    assert bad.returncode == 3
    assert "problem: " in bad.stdout and "does not match the leaf" in bad.stdout
    assert check.main(["--config", str(stack.config_file), "--dry-run"]) == 2
    bc.renew_with(stack.lineage, fullchain=chain, privkey=key)


def test_two_runs_serialize_on_the_lock_and_a_rerun_is_harmless(bed: Bed) -> None:
    """A hook started while another holds the lock waits for it; running the hook again on
    the same lineage redeploys the same leaf and exits 0."""
    stack = bed.stack
    chain, key = bed.good_leaf()
    bc.renew_with(stack.lineage, fullchain=chain, privkey=key)
    lock = os.open(stack.state_dir / "deploy.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        env = {**os.environ, **stack.env(), "RENEWED_LINEAGE": str(stack.lineage)}
        proc = subprocess.Popen([HOOK], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        assert proc.poll() is None, "the hook did not wait for the lock"
    finally:
        os.close(lock)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    first = bed.bundle.read_bytes()
    again = run_hook(stack)
    assert again.returncode == 0, again.stderr
    assert bed.bundle.read_bytes() == first
    line = log_line(again)
    assert line["old_sha256"] == line["new_sha256"] == leaf_sha(chain)
    assert served_now(bed) == leaf_sha(chain)


def test_key_change_warns_unless_renewal_conf_reuses_the_key(bed: Bed) -> None:
    """A renewal with a new key deploys but the log line warns (DANE 3 1 1 breaks); with
    ``reuse_key = True`` in renewal/NAME.conf and the same key, no warning."""
    stack = bed.stack
    chain, key = bed.good_leaf()
    bc.renew_with(stack.lineage, fullchain=chain, privkey=key)
    result = run_hook(stack)
    assert result.returncode == 0, result.stderr
    line = log_line(result)
    assert line["level"] == "warning" and "reuse_key" in line["warnings"][0]
    assert result.stderr == ""  # certbot would call any stderr "error output"

    lin = lineage.Lineage(stack.certbot.config_dir, stack.lineage.name)
    conf = lin.renewal_conf()
    conf.write_text(conf.read_text().replace("[renewalparams]", "[renewalparams]\nreuse_key = True"))
    same = serialization.load_pem_private_key(key, None)
    bc.renew_with(stack.lineage, fullchain=bed.ca.fullchain(bed.ca.leaf(same)), privkey=key)
    result = run_hook(stack)
    assert result.returncode == 0, result.stderr
    assert log_line(result)["warnings"] == []


def test_unused_lineage_is_left_alone(bed: Bed) -> None:
    """A lineage Postfix does not use: one log line, nothing written; exit 0 under certbot
    (which runs every hook for every lineage), 6 when asked for by hand."""
    stack = bed.stack
    other = stack.lineage.parent / "other.example.test"
    shutil.copytree(stack.lineage, other, symlinks=True)
    (stack.certbot.config_dir / "archive" / "other.example.test").symlink_to(
        stack.certbot.config_dir / "archive" / stack.lineage.name)
    try:
        before = sorted(stack.bundle_dir.iterdir())
        result = run_hook(stack, other)
        assert result.returncode == 0, result.stderr
        assert log_line(result)["outcome"] == "skipped"
        assert run_hook(stack, other, by_certbot=False).returncode == 6
        assert sorted(stack.bundle_dir.iterdir()) == before
    finally:
        shutil.rmtree(other)
        (stack.certbot.config_dir / "archive" / "other.example.test").unlink()


def test_group_option_writes_bundle_0640_root_group(bed: Bed) -> None:
    """With ``deploy.group``, the bundle is written 0640 root:GROUP from creation and the
    lineage's keys get the same group and mode."""
    stack = bed.stack
    cfg = stack.write_config(stack.base / "group.toml",
                             probe={"cafile": str(stack.base / "cafile.pem")},
                             deploy={"group": "postdrop", "proof_timeout": 8})
    chain, key = bed.good_leaf()
    bc.renew_with(stack.lineage, fullchain=chain, privkey=key)
    result = run_hook(stack, config=cfg)
    assert result.returncode == 0, result.stderr
    gid = grp.getgrnam("postdrop").gr_gid
    st = bed.bundle.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 0, gid)
    key_st = os.stat(os.path.realpath(stack.lineage / "privkey.pem"))
    assert (stat.S_IMODE(key_st.st_mode), key_st.st_gid) == (0o640, gid)
    # back to 0600 for the other tests
    assert run_hook(stack).returncode == 0
    assert stat.S_IMODE(bed.bundle.stat().st_mode) == 0o600


def test_in_place_mode_refuses_then_deploys_and_fixes_key_permissions(stack: Stack) -> None:
    """Postfix reading live/ directly: a bad renewal is refused with exit 7 (not 3) and
    the message says new smtpd processes already load it (act now, adopt); a real certbot
    renewal whose key is group-readable is deployed, the key tightened to 0600, and the
    new leaf served."""
    snap = bc.snapshot(stack.lineage)
    bc.renew_with(stack.lineage, fullchain=(stack.lineage / "fullchain.pem").read_bytes(),
                  privkey=bc.key_pem(bc.ec_key()))
    bad = run_hook(stack)
    assert bad.returncode == 7, bad.stderr  # not 3: the refused files are live already
    assert "every smtpd process Postfix starts from now on (no reload needed) loads" in bad.stderr
    assert f"renew-check adopt {stack.lineage}" in bad.stderr
    record = json.loads(sorted((stack.state_dir / "deploys").glob("*.json"))[-1].read_text())
    assert record["outcome"] == "refused_in_place"
    bc.restore(stack.lineage, snap)

    os.chmod(os.path.realpath(stack.lineage / "privkey.pem"), 0o640)  # certbot keeps group bits
    stack.install_hook()
    stack.certbot.renew(env=stack.env())
    key = Path(os.path.realpath(stack.lineage / "privkey.pem"))
    assert key.name == "privkey2.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    new = fingerprint(parse_chain((stack.lineage / "cert.pem").read_bytes(), "cert")[0])
    assert set(served_all(stack)) == {new}
    record = json.loads(sorted((stack.state_dir / "deploys").glob("*.json"))[-1].read_text())
    assert record["outcome"] == "deployed" and record["mode"] == "in_place"
    assert any("privkey1.pem: mode 0640 -> 0600" in s for s in record["steps"])


def test_adopt_split_files_for_older_postfix_then_undo(stack: Stack) -> None:
    """``adopt`` with separate cert/key files (Postfix < 3.4 style) makes Postfix read
    NAME.crt + NAME.key; the hook deploys a renewal into both (warning that this Postfix
    could use one bundle without the mixed-pair window); ``undo`` restores main.cf
    byte for byte and Postfix reads certbot's files in place again."""
    cfg = config.load(stack.config_file, {})
    main_cf = stack.postfix.config_dir / "main.cf"
    original = main_cf.read_bytes()
    lin = lineage.resolve(stack.lineage, cfg.certbot.config_dir)
    res = adopt.adopt(cfg, lin, split=True)
    crt, key = res.files
    assert (crt.suffix, key.suffix) == (".crt", ".key")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    use = discover.usage(postfix_for(cfg), lin, cfg.deploy.bundle_dir)
    assert use.mode is discover.Mode.STAGED
    assert {s.kind for s in use.staged} == {discover.Kind.CERT, discover.Kind.KEY}

    stack.install_hook()
    stack.certbot.renew(env=stack.env())
    new = fingerprint(parse_chain((stack.lineage / "cert.pem").read_bytes(), "cert")[0])
    assert set(served_all(stack)) == {new}
    assert fingerprint(parse_chain(crt.read_bytes(), str(crt))[0]) == new
    assert b"PRIVATE KEY" in key.read_bytes() and b"CERTIFICATE" not in key.read_bytes()
    record = json.loads(sorted((stack.state_dir / "deploys").glob("*.json"))[-1].read_text())
    assert any("switch to one key+chain bundle" in w for w in record["warnings"])  # 3.7 here

    adopt.undo(cfg)
    assert main_cf.read_bytes() == original
    use = discover.usage(postfix_for(cfg), lin, cfg.deploy.bundle_dir)
    assert use.mode is discover.Mode.IN_PLACE
    assert set(served_all(stack)) == {new}


def test_sni_map_is_rebuilt_with_postmap_and_proven(stack: Stack) -> None:
    """A second lineage served only through ``tls_server_sni_maps``: after a certbot
    renewal the hook rebuilds the table with ``postmap -F``, reloads, and the SNI name
    serves the new leaf while the default certificate is unchanged. The table, which holds
    the keys, was 0644 like its source (the audit flags it) and is 0600 afterwards. A
    failed reload rolls the table back and proves what the SNI name served before."""
    sni_live = stack.certbot.issue(name="sni.example.test")
    source = stack.postfix.config_dir / "sni"
    source.write_text(f"# SNI\nsni.example.test {sni_live}/privkey.pem\n"
                      f"    {sni_live}/fullchain.pem\n")
    source.chmod(0o644)
    subprocess.run(["postmap", "-F", "-c", str(stack.postfix.config_dir), f"hash:{source}"],
                   check=True)
    stack.postfix.set_main(tls_server_sni_maps=f"hash:{source}")
    stack.postfix.reload()
    default = set(served_all(stack))
    db = Path(f"{source}.db")
    assert stat.S_IMODE(db.stat().st_mode) == 0o644  # postmap -F: the keys, world-readable
    tls = audit.snapshot(postfix_for(config.load(stack.config_file, {})))
    assert [p.code for p in audit.check_sni_tables(tls)] == [Code.SNI_TABLE_EXPOSED]

    def sni_sha() -> str:
        res = probe(Target(LO, stack.postfix.smtp_port, servername="sni.example.test"), timeout=5)
        assert res.handshake is not None, res.detail
        return fingerprint(res.handshake.leaf)

    before = sni_sha()
    stack.install_hook()
    stack.certbot.renew(name="sni.example.test", env=stack.env())
    new = fingerprint(parse_chain((sni_live / "cert.pem").read_bytes(), "cert")[0])
    assert new != before
    assert sni_sha() == new
    assert set(served_all(stack)) == default
    record = json.loads(sorted((stack.state_dir / "deploys").glob("*.json"))[-1].read_text())
    assert record["mode"] == "sni_map" and record["outcome"] == "deployed"
    assert any(s.startswith(f"postmap -F hash:{source}") for s in record["steps"])
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert audit.check_sni_tables(tls) == []

    # A reload that fails once: the table is restored (still 0600) and the rollback proves
    # that the SNI name serves what it served before the run, instead of claiming it.
    flag, script = stack.base / "failed-once", stack.base / "reload-fails-once"
    script.write_text(f"#!/bin/sh\nif [ ! -e {flag} ]; then touch {flag}; exit 1; fi\n"
                      f"exec postfix -c {stack.postfix.config_dir} reload\n")
    script.chmod(0o755)
    cfg = stack.write_config(stack.base / "fails-once.toml",
                             postfix={"reload_command": [str(script)]})
    result = run_hook(stack, sni_live, config=cfg)
    assert result.returncode == 4, result.stderr
    assert f"SNI sni.example.test serves {new[:16]} again (as before the deploy)" in result.stderr
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert sni_sha() == new


def test_deploy_imports_intermediates_into_os_trust_anchors_when_enabled(bed: Bed) -> None:
    """With ``trust.import_anchors``, a successful deploy (and only after the proof) puts
    the chain's intermediate into the (sandboxed) Debian anchors and bundle; the dry run
    lists the step and imports nothing."""
    stack = bed.stack
    root = stack.base / "trust"
    certs, local, etc, hooks = (root / d for d in ("certs", "local", "etc", "hooks"))
    for d in (certs, local, etc, hooks):
        d.mkdir(parents=True, exist_ok=True)
    system = sorted(Path("/usr/share/ca-certificates/mozilla").glob("*.crt"))[0]
    shutil.copy(system, certs / system.name)
    (root / "certs.conf").write_text(f"{system.name}\n")
    command = ["update-ca-certificates", "--certsconf", str(root / "certs.conf"),
               "--certsdir", str(certs), "--localcertsdir", str(local),
               "--etccertsdir", str(etc), "--hooksdir", str(hooks)]
    cfg = stack.write_config(stack.base / "anchors.toml",
                             probe={"cafile": str(stack.base / "cafile.pem")},
                             trust={"import_anchors": True, "flavor": "debian",
                                    "anchors_dir": str(local), "update_command": command})
    chain, key = bed.good_leaf()
    bc.renew_with(stack.lineage, fullchain=chain, privkey=key)
    dry = run_hook(stack, None, "--dry-run", config=cfg, by_certbot=False)
    assert dry.returncode == 0, dry.stderr
    assert f"would: trust anchors in {local}: add 1, remove 0" in dry.stdout
    assert list(local.iterdir()) == []
    result = run_hook(stack, config=cfg)
    assert result.returncode == 0, result.stderr
    inter = fingerprint(bed.ca.intermediate)
    assert [p.name for p in local.iterdir()] == [f"postfix-certwatch-{inter}.crt"]
    assert "trust" in log_line(result)["timings"]
    body = b"".join(bc.cert_pem(bed.ca.intermediate).split(b"-----")[2].split())
    assert body in b"".join((etc / "ca-certificates.crt").read_bytes().split())


@pytest.mark.parametrize("kind", ["rsa2048", "p384", "ed25519"])
def test_valid_renewals_of_every_key_type_are_deployed(bed: Bed, kind: str) -> None:
    """Validation does not over-refuse: RSA 2048, ECDSA P-384 and Ed25519 renewals from a
    trusted CA are deployed and served on all three ports."""
    key: PrivateKeyTypes = (bc.rsa_key(2048) if kind == "rsa2048" else
                            bc.ec_key(ec.SECP384R1()) if kind == "p384" else bc.ed_key())
    chain, pem = bed.good_leaf(key)
    bc.renew_with(bed.stack.lineage, fullchain=chain, privkey=pem)
    result = run_hook(bed.stack)
    assert result.returncode == 0, result.stderr
    assert served_now(bed) == leaf_sha(chain)


def test_failing_reload_command_restores_files_and_exits_5(bed: Bed) -> None:
    """A reload command that always fails: the previous bundle is put back byte for byte,
    the hook says the rollback failed too (its reload failed) and exits 5, the "act now"
    code; Postfix keeps serving the old certificate."""
    stack = bed.stack
    old_bundle, old = bed.bundle.read_bytes(), served_now(bed)
    cfg = stack.write_config(stack.base / "false.toml",
                             probe={"cafile": str(stack.base / "cafile.pem")},
                             postfix={"reload_command": ["/bin/false"]})
    chain, key = bed.good_leaf()
    bc.renew_with(stack.lineage, fullchain=chain, privkey=key)
    result = run_hook(stack, config=cfg)
    assert result.returncode == 5, result.stderr
    assert "'/bin/false' failed (exit 1)" in result.stderr
    assert "rollback failed too" in result.stderr
    assert bed.bundle.read_bytes() == old_bundle
    assert served_now(bed) == old
    assert log_line(result)["outcome"] == "rollback_failed"


def test_lineage_used_by_one_master_cf_service_only(stack: Stack) -> None:
    """A second lineage set with ``-o smtpd_tls_chain_files=...`` on the submission service
    only: discovery finds just that service, ``adopt`` rewrites only that override (main.cf
    keeps the other lineage), and a certbot renewal of it changes only that port."""
    sub = stack.certbot.issue(name="submit.example.test", domains=["mail.example.test"])
    pf = stack.postfix
    service = f"{LO}:{pf.submission_port}/inet"
    pf.postconf("-P", f"{service}/smtpd_tls_chain_files={sub}/privkey.pem,{sub}/fullchain.pem")
    pf.reload()
    cfg = config.load(stack.config_file, {})
    lin = lineage.resolve(sub, cfg.certbot.config_dir)
    use = discover.usage(postfix_for(cfg), lin, cfg.deploy.bundle_dir)
    assert [s.port for s in use.services] == [pf.submission_port]
    main_before = pf.postconf("-h", "smtpd_tls_chain_files")

    adopt.adopt(cfg, lin)
    assert pf.postconf("-h", "smtpd_tls_chain_files") == main_before
    assert f"smtpd_tls_chain_files={cfg.deploy.bundle_dir}/submit.example.test.pem" in \
        pf.postconf("-M", f"{LO}:{pf.submission_port}/inet")
    others = [served_all(stack)[0], served_all(stack)[2]]

    stack.install_hook()
    stack.certbot.renew(name="submit.example.test", env=stack.env())
    new = fingerprint(parse_chain((sub / "cert.pem").read_bytes(), "cert")[0])
    got = served_all(stack)
    assert got[1] == new
    assert [got[0], got[2]] == others


def test_every_postmulti_instance_that_uses_the_lineage_is_reloaded_and_proven(
        stack: Stack) -> None:
    """A second Postfix instance (``multi_instance_enable = yes``,
    ``multi_instance_directories``) that reads the same lineage: a certbot renewal with the
    hook reloads both instances and proves the new leaf on all six services (three each)."""
    second = PostfixInstance(stack.base / "postfix2", chain_files=stack.postfix.chain_files)
    try:
        second.start()
        stack.postfix.set_main(multi_instance_enable="yes",
                               multi_instance_directories=str(second.config_dir))
        stack.postfix.reload()
        stack.install_hook()
        stack.certbot.renew(env=stack.env())
        record = json.loads(sorted((stack.state_dir / "deploys").glob("*.json"))[-1].read_text())
        assert record["outcome"] == "deployed", record["message"]
        assert len(record["services"]) == 6
        assert {f"{LO}:{p}" for p in second.ports} <= {s.rsplit("/", 1)[0]
                                                      for s in record["services"]}
        assert f"postfix -c {second.config_dir} reload" in record["steps"]
        new = fingerprint(parse_chain((stack.lineage / "cert.pem").read_bytes(), "cert")[0])
        for port, implicit in zip(second.ports, (False, False, True), strict=True):
            res = probe(Target(LO, port, implicit_tls=implicit), timeout=5)
            assert res.handshake is not None and fingerprint(res.handshake.leaf) == new
    finally:
        second.stop()
