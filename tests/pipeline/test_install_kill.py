"""SIGKILL during install: the bundle Postfix reads is always complete, old or new.

A child process runs the hook's real install step (:func:`hook.files.install_files`)
in a loop, alternating two valid bundles; it is killed with SIGKILL after a random
delay, so the kill lands at random points (temp file created, written, fsynced, .prev
linked, renamed, directory fsynced). After every kill the bundle and its ``.prev`` must
each be one of the two complete bundles, parse and pair; the next install cleans up.
A last part kills the whole ``postfix-deploy-hook`` process mid-run on the real stack.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from hook import files as install
from hook.certs.bundle import pair
from tests.harness import badcerts as bc
from tests.harness.hookbed import HOOK, Bed, run_hook, served_all, staged_bed
from tests.harness.stack import Pebble

CHILD = """
import sys
from pathlib import Path
from hook.files import install_files
target, a, b = Path(sys.argv[1]), Path(sys.argv[2]).read_bytes(), Path(sys.argv[3]).read_bytes()
print("ready", flush=True)
i = 0
while True:
    install_files([(target, a if i % 2 else b)])
    i += 1
"""


def _bundle(ca: bc.TestCA) -> bytes:
    key = bc.ec_key()
    return bc.key_pem(key) + ca.fullchain(ca.leaf(key))


def _check_complete(path: Path, allowed: set[bytes]) -> None:
    data = path.read_bytes()
    assert data in allowed, f"{path}: {len(data)} bytes, neither complete bundle"
    key_end = data.index(b"-----END PRIVATE KEY-----\n") + len(b"-----END PRIVATE KEY-----\n")
    pair(data[:key_end], str(path), data[key_end:], str(path))


def test_sigkill_at_random_points_never_leaves_a_partial_bundle(tmp_path: Path) -> None:
    """60 SIGKILLs at random moments of the install loop: the target and its .prev are
    always one complete bundle; leftover temp files are removed by the next install."""
    ca = bc.TestCA()
    a, b = tmp_path / "a.pem", tmp_path / "b.pem"
    a.write_bytes(_bundle(ca))
    b.write_bytes(_bundle(ca))
    allowed = {a.read_bytes(), b.read_bytes()}
    target = tmp_path / "bundles" / "mail.example.test.pem"
    install.install_files([(target, a.read_bytes())])
    rng = random.Random(int(os.environ.get("CERTWATCH_KILL_SEED", "20261126")))
    leftovers = 0
    for _ in range(60):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(target), str(a), str(b)],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0, 0.03))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        _check_complete(target, allowed)
        prev = target.with_name(target.name + install.PREV_SUFFIX)
        if prev.exists():
            _check_complete(prev, allowed)
        leftovers += len(list(target.parent.glob(".*")))
        assert oct(target.stat().st_mode & 0o777) == oct(0o600)
    install.install_files([(target, a.read_bytes())])
    assert list(target.parent.glob(".*")) == []
    assert target.read_bytes() == a.read_bytes()
    print(f"kills that left temp files behind (cleaned up by the next run): {leftovers}")


def test_killing_the_whole_hook_midway_leaves_a_complete_bundle(pebble: Pebble) -> None:
    """The real hook, SIGKILLed at random moments of a deploy on the real stack: the
    bundle is the complete old or new one, Postfix serves one of the two, and a rerun
    deploys the new leaf."""
    rng = random.Random(7)
    bed: Bed
    with staged_bed(pebble) as bed:
        chain, key = bed.good_leaf()
        old = bed.bundle.read_bytes()
        bc.renew_with(bed.stack.lineage, fullchain=chain, privkey=key)
        new = key + chain if key.endswith(b"\n") else key + b"\n" + chain
        env = {**os.environ, **bed.stack.env(), "RENEWED_LINEAGE": str(bed.stack.lineage)}
        for _ in range(6):
            proc = subprocess.Popen([HOOK], env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
            time.sleep(rng.uniform(0.15, 0.6))
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            assert bed.bundle.read_bytes() in (old, new)
            assert set(served_all(bed.stack)) <= {bed.served, bc.leaf_sha256_of(chain)}
        result = run_hook(bed.stack)
        assert result.returncode == 0, result.stderr
        assert bed.bundle.read_bytes() == new
        assert set(served_all(bed.stack)) == {bc.leaf_sha256_of(chain)}


def test_both_files_of_a_pair_are_written_before_either_is_renamed(tmp_path: Path) -> None:
    """install_files writes every temp file before the first rename: when the second file
    cannot be written (its directory is a plain file), the first target is untouched, so
    a cert/key pair is never left mixed by a failed write."""
    crt, key = tmp_path / "b" / "n.crt", tmp_path / "blocked" / "n.key"
    crt.parent.mkdir()
    crt.write_bytes(b"old cert")
    (tmp_path / "blocked").write_bytes(b"a file, not a directory")
    try:
        install.install_files([(crt, b"new cert"), (key, b"new key")])
    except OSError:
        pass
    else:
        raise AssertionError("installing into a non-directory did not fail")
    assert crt.read_bytes() == b"old cert"
    assert [p.name for p in crt.parent.iterdir()] == ["n.crt"]  # no temp file left behind
