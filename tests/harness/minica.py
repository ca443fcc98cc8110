"""A tiny test CA built with ``cryptography``: root -> intermediate -> leaves, on demand.

For the bad certificates Postfix must be made to serve (expired, wrong name, self-signed,
missing intermediate, ...). Keys are generated per run and never leave the temp dir::

    ca = MiniCA()
    leaf = ca.issue(["mail.example.test"], days=-1)       # expired yesterday
    path = leaf.write_chain_file(tmp / "expired.pem")      # key + leaf + intermediate
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_ONE_DAY = dt.timedelta(days=1)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certwatch tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class Issued:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    """The issuers to serve after the leaf (intermediates), may be empty."""

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def cert_pem(self) -> bytes:
        return _pem(self.cert)

    def chain_pem(self) -> bytes:
        """Leaf and issuers, like certbot's fullchain.pem."""
        return b"".join(_pem(c) for c in (self.cert, *self.chain))

    def write_chain_file(self, path: Path, *, with_chain: bool = True) -> Path:
        """One file for ``smtpd_tls_chain_files``: key, leaf, then (optionally) issuers."""
        certs = (self.cert, *self.chain) if with_chain else (self.cert,)
        path.write_bytes(self.key_pem() + b"".join(_pem(c) for c in certs))
        path.chmod(0o600)
        return path


class MiniCA:
    """Root and intermediate (ECDSA P-256), issuing leaves for server auth."""

    def __init__(self, name: str = "certwatch test") -> None:
        now = dt.datetime.now(dt.UTC)
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = self._cert(_name(f"{name} root"), self.root_key.public_key(),
                               _name(f"{name} root"), self.root_key, now - 3650 * _ONE_DAY,
                               now + 3650 * _ONE_DAY, ca=True)
        self.int_key = ec.generate_private_key(ec.SECP256R1())
        self.intermediate = self._cert(_name(f"{name} intermediate"), self.int_key.public_key(),
                                       self.root.subject, self.root_key, now - 3650 * _ONE_DAY,
                                       now + 1825 * _ONE_DAY, ca=True)

    def root_pem(self) -> bytes:
        return _pem(self.root)

    def issue(self, names: Sequence[str], *, days: float = 89, lifetime: float = 90,
              self_signed: bool = False, client_auth: bool = False) -> Issued:
        """A leaf valid for ``lifetime`` days that expires in ``days`` days (negative:
        already expired). The default was issued a day ago: valid at any "now" of a test."""
        now = dt.datetime.now(dt.UTC)
        not_after = now + dt.timedelta(days=days)
        not_before = not_after - dt.timedelta(days=lifetime)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = _name(names[0])
        if self_signed:
            cert = self._cert(subject, key.public_key(), subject, key, not_before, not_after,
                              names=names, client_auth=client_auth)
            return Issued(key, cert, ())
        cert = self._cert(subject, key.public_key(), self.intermediate.subject, self.int_key,
                          not_before, not_after, names=names, client_auth=client_auth)
        return Issued(key, cert, (self.intermediate,))

    @staticmethod
    def _cert(subject: x509.Name, public: ec.EllipticCurvePublicKey, issuer: x509.Name,
              signer: ec.EllipticCurvePrivateKey, not_before: dt.datetime,
              not_after: dt.datetime, *, ca: bool = False, names: Sequence[str] = (),
              client_auth: bool = False) -> x509.Certificate:
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
             .public_key(public).serial_number(x509.random_serial_number())
             .not_valid_before(not_before).not_valid_after(not_after)
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False))
        if ca:
            b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                              False, False), critical=True)
        else:
            usages = [ExtendedKeyUsageOID.SERVER_AUTH]
            if client_auth:
                usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
            b = (b.add_extension(x509.KeyUsage(True, False, False, False, False, False, False,
                                               False, False), critical=True)
                 .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
                 .add_extension(x509.SubjectAlternativeName(
                     [x509.DNSName(n) for n in names]), critical=False))
        if issuer != subject:
            b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                signer.public_key()), critical=False)
        return b.sign(signer, hashes.SHA256())
