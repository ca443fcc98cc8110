"""The fault suite: bad renewals and broken surroundings, on the real stack.

One private Postfix (staged mode, after ``renew-check adopt``) serves a pebble
certificate. Each case writes a bad "renewal" into the certbot lineage (or breaks
Postfix), runs the installed hook exactly as certbot does (``RENEWED_LINEAGE`` in the
environment) and checks: a message naming the file and the problem, a non-zero exit,
the previous certificate still served on all three TLS ports, and the bundle files
byte-identical.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hook.certs.bundle import parse_chain
from tests.harness import badcerts as bc
from tests.harness.hookbed import KEY_PEM, Bed, key_body, run_hook, served_all, staged_bed
from tests.harness.stack import (
    Pebble,
    port_open,
    wait_until,
    write_backdated,
)


@pytest.fixture(scope="module")
def faults(pebble: Pebble) -> Iterator[Bed]:
    """The staged bed shared by every fault case."""
    with staged_bed(pebble) as bed:
        yield bed


@pytest.fixture
def fault(faults: Bed) -> Iterator[Bed]:
    """Put the lineage, main.cf and Postfix back as they were after each case."""
    snap = bc.snapshot(faults.stack.lineage)
    main_cf = faults.stack.postfix.config_dir / "main.cf"
    main_text = main_cf.read_text()
    try:
        yield faults
    finally:
        bc.restore(faults.stack.lineage, snap)
        write_backdated(main_cf, main_text)
        pf = faults.stack.postfix
        if pf.master_pid() is None:
            pf.postfix("start")
            for port in pf.ports:
                wait_until(f"postfix on {port}", lambda p=port: port_open(p), 15)  # type: ignore[misc]


# ----------------------------------------------------------------------------- cases
Case = Callable[[Bed], tuple[int, str, str]]
"""Make the fault; return (exit code, file the message must name, problem text)."""
FC, PK = "fullchain.pem", "privkey.pem"


def _renew(f: Bed, fullchain: bytes, privkey: bytes, key_mode: int = 0o600) -> None:
    bc.renew_with(f.stack.lineage, fullchain=fullchain, privkey=privkey, key_mode=key_mode)


def empty_fullchain(f: Bed) -> tuple[int, str, str]:
    _renew(f, b"", f.key)
    return 3, FC, "file is empty"


def der_fullchain(f: Bed) -> tuple[int, str, str]:
    der = parse_chain(f.fullchain, "x")[0].public_bytes(serialization.Encoding.DER)
    _renew(f, der, f.key)
    return 3, FC, "looks like DER"


def garbage_fullchain(f: Bed) -> tuple[int, str, str]:
    _renew(f, b"<html>502 Bad Gateway</html>\n", f.key)
    return 3, FC, "not PEM"


def truncated_fullchain(f: Bed) -> tuple[int, str, str]:
    _renew(f, f.fullchain[: len(f.fullchain) // 2 + 40], f.key)
    return 3, FC, "truncated PEM"


def empty_key(f: Bed) -> tuple[int, str, str]:
    _renew(f, f.fullchain, b"\n")
    return 3, PK, "file is empty"


def garbage_key(f: Bed) -> tuple[int, str, str]:
    _renew(f, f.fullchain, os.urandom(200))
    return 3, PK, "not PEM"


def truncated_key(f: Bed) -> tuple[int, str, str]:
    _renew(f, f.fullchain, f.key[: len(f.key) // 2])
    return 3, PK, "truncated PEM"


def encrypted_key(f: Bed) -> tuple[int, str, str]:
    key = serialization.load_pem_private_key(f.key, None)
    _renew(f, f.fullchain, bc.key_pem(key, password=b"secret"))
    return 3, PK, "encrypted"


def mismatch_p256(f: Bed) -> tuple[int, str, str]:
    _renew(f, f.fullchain, bc.key_pem(bc.ec_key()))
    return 3, PK, "does not match the leaf"


def mismatch_p384(f: Bed) -> tuple[int, str, str]:
    k = bc.ec_key(ec.SECP384R1())
    chain, _ = f.good_leaf(k)
    _renew(f, chain, bc.key_pem(bc.ec_key(ec.SECP384R1())))
    return 3, PK, "does not match the leaf"


def mismatch_rsa(f: Bed) -> tuple[int, str, str]:
    chain, _ = f.good_leaf(bc.rsa_key())
    _renew(f, chain, bc.key_pem(bc.rsa_key()))
    return 3, PK, "does not match the leaf"


def mismatch_ed25519(f: Bed) -> tuple[int, str, str]:
    chain, _ = f.good_leaf(bc.ed_key())
    _renew(f, chain, bc.key_pem(bc.ed_key()))
    return 3, PK, "does not match the leaf"


def chain_out_of_order(f: Bed) -> tuple[int, str, str]:
    certs = parse_chain(f.fullchain, "x")
    _renew(f, bc.cert_pem(*reversed(certs)), f.key)
    return 3, FC, "chain out of order"


def bad_signature(f: Bed) -> tuple[int, str, str]:
    k = bc.ec_key()
    leaf = f.ca.leaf(k)
    impostor = bc.make_ca_cert(f"{f.ca.name} intermediate", bc.ec_key(), (f.ca.root, f.ca.root_key))
    _renew(f, bc.cert_pem(leaf, impostor), bc.key_pem(k))
    return 3, FC, "does not verify"


def untrusted_root(f: Bed) -> tuple[int, str, str]:
    other = bc.TestCA("certwatch unknown")
    k = bc.ec_key()
    _renew(f, other.fullchain(other.leaf(k)), bc.key_pem(k))
    return 3, FC, "does not build to a trusted root"


def missing_intermediate(f: Bed) -> tuple[int, str, str]:
    k = bc.ec_key()
    _renew(f, bc.cert_pem(f.ca.leaf(k)), bc.key_pem(k))
    return 3, FC, "is not in the chain"


def self_signed(f: Bed) -> tuple[int, str, str]:
    k = bc.ec_key()
    _renew(f, bc.cert_pem(f.ca.leaf(k, self_signed=True)), bc.key_pem(k))
    return 3, FC, "self-signed"


def expired(f: Bed) -> tuple[int, str, str]:
    k = bc.ec_key()
    leaf = f.ca.leaf(k, not_before=bc.NOW - 100 * bc.DAY, not_after=bc.NOW - 10 * bc.DAY)
    _renew(f, f.ca.fullchain(leaf), bc.key_pem(k))
    return 3, FC, "expired"


def not_yet_valid(f: Bed) -> tuple[int, str, str]:
    k = bc.ec_key()
    leaf = f.ca.leaf(k, not_before=bc.NOW + 10 * bc.DAY, not_after=bc.NOW + 100 * bc.DAY)
    _renew(f, f.ca.fullchain(leaf), bc.key_pem(k))
    return 3, FC, "not valid before"


def wrong_names(f: Bed) -> tuple[int, str, str]:
    k = bc.ec_key()
    _renew(f, f.ca.fullchain(f.ca.leaf(k, names=("www.example.test",))), bc.key_pem(k))
    return 3, FC, "mail.example.test"


def rsa_1024(f: Bed) -> tuple[int, str, str]:
    k = bc.rsa_key(1024)
    _renew(f, f.ca.fullchain(f.ca.leaf(k)), bc.key_pem(k))
    return 3, FC, "RSA key of 1024 bits"


def outside_live(f: Bed) -> tuple[int, str, str]:
    copy = f.stack.base / "elsewhere" / "mail.example.test"
    shutil.copytree(f.stack.lineage, copy, symlinks=True, dirs_exist_ok=True)
    f.lineage_override = copy
    return 2, str(copy), "not a lineage directory under"


def symlink_escape(f: Bed) -> tuple[int, str, str]:
    evil = f.stack.base / "evil"
    evil.mkdir(exist_ok=True)
    (evil / "privkey.pem").write_bytes(f.key)
    link = f.stack.lineage / PK
    link.unlink()
    link.symlink_to(evil / "privkey.pem")
    return 3, PK, "refusing to follow a symlink out of the lineage"


def key_readable_by_others(f: Bed) -> tuple[int, str, str]:
    chain, key = f.good_leaf()
    _renew(f, chain, key, key_mode=0o644)
    return 3, "privkey", "readable by other users"


def main_cf_syntax_error(f: Bed) -> tuple[int, str, str]:
    main_cf = f.stack.postfix.config_dir / "main.cf"
    write_backdated(main_cf, main_cf.read_text() + "this line is broken\n")
    chain, key = f.good_leaf()
    _renew(f, chain, key)
    return 3, "main.cf", "missing '=' after attribute name"


def postfix_check_fails(f: Bed) -> tuple[int, str, str]:
    main_cf = f.stack.postfix.config_dir / "main.cf"
    write_backdated(main_cf, main_cf.read_text() + "mail_owner = certwatch-no-such-user\n")
    chain, key = f.good_leaf()
    _renew(f, chain, key)
    return 3, "check' failed", "certwatch-no-such-user"


def postfix_stopped(f: Bed) -> tuple[int, str, str]:
    chain, key = f.good_leaf()
    _renew(f, chain, key)
    f.stack.postfix.stop()
    return 3, str(f.stack.postfix.config_dir), "is not running"


CASES: list[Case] = [
    empty_fullchain, der_fullchain, garbage_fullchain, truncated_fullchain, empty_key,
    garbage_key, truncated_key, encrypted_key, mismatch_p256, mismatch_p384, mismatch_rsa,
    mismatch_ed25519, chain_out_of_order, bad_signature, untrusted_root, missing_intermediate,
    self_signed, expired, not_yet_valid, wrong_names, rsa_1024, outside_live, symlink_escape,
    key_readable_by_others, main_cf_syntax_error, postfix_check_fails, postfix_stopped,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_fault_is_refused_and_old_certificate_stays(fault: Bed, case: Case) -> None:
    """The hook refuses the fault with a message naming the file and the problem, exits
    non-zero, and Postfix keeps serving the previous certificate from byte-identical files."""
    before = fault.files()
    try:
        code, where, problem = case(fault)
        result = run_hook(fault.stack, fault.lineage_override)
    finally:
        fault.lineage_override = None
    assert result.returncode == code, result.stderr + result.stdout
    assert where in result.stderr, result.stderr
    assert problem in result.stderr, result.stderr
    assert not KEY_PEM.search(result.stdout + result.stderr)
    assert key_body(fault.key) not in result.stdout + result.stderr
    if case is postfix_stopped:
        pf = fault.stack.postfix
        pf.postfix("start")
        for port in pf.ports:
            wait_until(f"postfix on {port}", lambda p=port: port_open(p), 15)  # type: ignore[misc]
    assert fault.files() == before
    assert served_all(fault.stack) == [fault.served] * 3
    if case is key_readable_by_others:
        current = Path(os.path.realpath(fault.stack.lineage / PK))
        assert current.stat().st_mode & 0o777 == 0o600, "the exposed key was not tightened"


def test_refusal_raises_an_alert_mail(fault: Bed) -> None:
    """A refused renewal sends one alert mail through the configured sendmail, naming the
    lineage, the outcome and the problem, and never the key."""
    fault.mailbox.unlink(missing_ok=True)
    mismatch_p256(fault)
    assert run_hook(fault.stack).returncode == 3
    mail = fault.mailbox.read_text()
    assert "ARGS: -f " in mail and "postmaster@example.test" in mail
    assert "Subject: [postfix-certwatch] CRITICAL" in mail
    assert "mail.example.test refused" in mail
    assert "does not match the leaf" in mail
    assert not KEY_PEM.search(mail)
    assert key_body(fault.key) not in mail
