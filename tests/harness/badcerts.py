"""Certificates and keys for fault tests, and "renewals" written into a certbot lineage.

A :class:`TestCA` (root + intermediate, made with ``cryptography``) issues leaves that
are wrong in exactly one way (expired, other names, weak key...). Its root is added to
the tools' CA file next to pebble's, so a leaf it issues correctly validates, and each
bad leaf fails for the one reason under test.

:func:`renew_with` writes a new version N+1 into ``archive/NAME/`` and points the
``live/NAME/*.pem`` symlinks at it, exactly as certbot does after a renewal.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, types
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)


def key_pem(key: types.PrivateKeyTypes, password: bytes | None = None) -> bytes:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def cert_pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def ec_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve or ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _sign_alg(key: types.CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def make_ca_cert(subject: str, key: types.CertificateIssuerPrivateKeyTypes,
                 issuer: tuple[x509.Certificate, types.CertificateIssuerPrivateKeyTypes] | None = None
                 ) -> x509.Certificate:
    issuer_name = issuer[0].subject if issuer else _name(subject)
    signer = issuer[1] if issuer else key
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW - 3650 * DAY).not_valid_after(NOW + 3650 * DAY)
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                            False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False))
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()),
            critical=False)
    return builder.sign(signer, _sign_alg(signer))


@dataclass
class TestCA:
    """A root and an intermediate that issue leaves on demand."""

    name: str = "certwatch fault-test"

    def __post_init__(self) -> None:
        self.root_key = ec_key()
        self.root = make_ca_cert(f"{self.name} root", self.root_key)
        self.int_key = ec_key()
        self.intermediate = make_ca_cert(f"{self.name} intermediate", self.int_key,
                                         (self.root, self.root_key))

    def leaf(self, key: types.PrivateKeyTypes, names: tuple[str, ...] = ("mail.example.test",),
             not_before: dt.datetime | None = None, not_after: dt.datetime | None = None,
             self_signed: bool = False) -> x509.Certificate:
        pub = key.public_key()
        issuer = _name(names[0]) if self_signed else self.intermediate.subject
        signer: types.CertificateIssuerPrivateKeyTypes = (key if self_signed else self.int_key)  # type: ignore[assignment]
        builder = (x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(issuer)
                   .public_key(pub)  # type: ignore[arg-type]
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(not_before or NOW - DAY)
                   .not_valid_after(not_after or NOW + 89 * DAY)
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                                  critical=False)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                                  critical=False))
        if not self_signed:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.int_key.public_key()),
                critical=False)
        return builder.sign(signer, _sign_alg(signer))

    def fullchain(self, leaf: x509.Certificate) -> bytes:
        return cert_pem(leaf, self.intermediate)


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


# ----------------------------------------------------------------------- lineage writing
def current_version(live: Path) -> int:
    target = os.readlink(live / "cert.pem")
    match = re.search(r"cert(\d+)\.pem$", target)
    if not match:
        raise ValueError(f"{live}/cert.pem -> {target}: not a certbot archive link")
    return int(match.group(1))


def renew_with(live: Path, *, fullchain: bytes, privkey: bytes, cert: bytes | None = None,
               key_mode: int = 0o600) -> int:
    """Write version N+1 into archive/NAME and point live/NAME at it, like certbot."""
    name = live.name
    archive = live.parent.parent / "archive" / name
    n = current_version(live) + 1
    first, rest = split_fullchain(fullchain)
    files = {"cert": cert if cert is not None else first, "chain": rest,
             "fullchain": fullchain, "privkey": privkey}
    for kind, data in files.items():
        path = archive / f"{kind}{n}.pem"
        path.write_bytes(data)
        path.chmod(key_mode if kind == "privkey" else 0o644)
        link = live / f"{kind}.pem"
        tmp = live / f".{kind}.pem.new"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(f"../../archive/{name}/{kind}{n}.pem")
        os.replace(tmp, link)
    return n


def split_fullchain(fullchain: bytes) -> tuple[bytes, bytes]:
    """(cert.pem, chain.pem) as certbot writes them from a fullchain: the first PEM
    certificate, and the rest; a fullchain that does not parse stays whole in cert.pem."""
    marker = b"-----END CERTIFICATE-----"
    if fullchain.count(marker) < 1 or not fullchain.lstrip().startswith(b"-----BEGIN CERTIFICATE"):
        return fullchain, b""
    end = fullchain.index(marker) + len(marker)
    nl = fullchain.find(b"\n", end)
    cut = len(fullchain) if nl < 0 else nl + 1
    return fullchain[:cut], fullchain[cut:]


@dataclass(frozen=True)
class LineageSnapshot:
    """The live/ links and archive/ files of a lineage, to put back after a fault test."""

    links: dict[str, str]
    archive: frozenset[str]
    modes: dict[str, int]


def snapshot(live: Path) -> LineageSnapshot:
    archive = live.parent.parent / "archive" / live.name
    return LineageSnapshot({p.name: os.readlink(p) for p in live.iterdir() if p.is_symlink()},
                           frozenset(p.name for p in archive.iterdir()),
                           {p.name: p.stat().st_mode & 0o7777 for p in archive.iterdir()})


def restore(live: Path, snap: LineageSnapshot) -> None:
    archive = live.parent.parent / "archive" / live.name
    for p in live.iterdir():
        if p.name.endswith(".pem") and p.name not in snap.links:
            p.unlink()
    for name, target in snap.links.items():
        link = live / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    for p in archive.iterdir():
        if p.name not in snap.archive:
            p.unlink()
        else:
            p.chmod(snap.modes[p.name])


def leaf_sha256_of(chain: bytes) -> str:
    """SHA-256 fingerprint of the first certificate in a PEM chain."""
    from hook.certs.bundle import fingerprint  # noqa: PLC0415

    return fingerprint(x509.load_pem_x509_certificates(chain)[0])
