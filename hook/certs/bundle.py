"""Parse a lineage's ``fullchain.pem`` + ``privkey.pem`` from bytes, and pair them.

Pure functions over bytes: reading files happens in :mod:`hook.certs.lineage`. Every failure
is a :class:`~hook.errors.BundleError` that names the file and the problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes

from hook.errors import BundleError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import types

PEM_CERT = b"-----BEGIN CERTIFICATE-----"


@dataclass(frozen=True)
class Bundle:
    """A parsed, paired key and certificate chain (leaf first)."""

    key_pem: bytes
    chain_pem: bytes
    chain: tuple[x509.Certificate, ...]
    key: types.PrivateKeyTypes

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def leaf_sha256(self) -> str:
        return fingerprint(self.leaf)

    def postfix_chain_file(self) -> bytes:
        """Key first, then leaf and intermediates: one file for ``smtpd_tls_chain_files``."""
        return _ensure_nl(self.key_pem) + _ensure_nl(self.chain_pem)

    def file_for(self, kind: str) -> bytes:
        """Content of a staged file: ``chain`` (key + chain), ``cert`` (chain) or ``key``."""
        if kind == "key":
            return _ensure_nl(self.key_pem)
        if kind == "cert":
            return _ensure_nl(self.chain_pem)
        return self.postfix_chain_file()

    def __repr__(self) -> str:  # never let the key reach a log or traceback
        return f"Bundle(leaf={self.leaf.subject.rfc4514_string()!r}, sha256={self.leaf_sha256})"


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lower-case hex (no colons)."""
    return cert.fingerprint(hashes.SHA256()).hex()


def parse_chain(data: bytes, path: str) -> tuple[x509.Certificate, ...]:
    """Parse one or more PEM certificates; refuse empty, DER, garbage or truncated input."""
    if not data.strip():
        raise BundleError(path, "file is empty")
    if PEM_CERT not in data:
        if data[:1] == b"\x30":
            raise BundleError(path, "not PEM: looks like DER (binary); convert with "
                              "'openssl x509 -inform der'")
        raise BundleError(path, "not PEM: no '-----BEGIN CERTIFICATE-----' line")
    if data.count(PEM_CERT) != data.count(b"-----END CERTIFICATE-----"):
        raise BundleError(path, "truncated PEM: a BEGIN CERTIFICATE has no matching END")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise BundleError(path, f"cannot parse certificate: {exc}") from exc
    return tuple(certs)


def parse_key(data: bytes, path: str) -> types.PrivateKeyTypes:
    """Parse an unencrypted PEM private key."""
    # serialization (with its SSH and cipher modules, ~4 ms) only where keys are read:
    # the probe path fingerprints certificates and never loads it.
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    if not data.strip():
        raise BundleError(path, "file is empty")
    if b"-----BEGIN" not in data:
        raise BundleError(path, "not PEM: no '-----BEGIN ... PRIVATE KEY-----' line")
    if data.count(b"-----BEGIN") != data.count(b"-----END"):
        raise BundleError(path, "truncated PEM: a BEGIN line has no matching END")
    if b"ENCRYPTED" in data:
        raise BundleError(path, "private key is encrypted; Postfix cannot use a passphrase")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:
        raise BundleError(path, "private key is encrypted; Postfix cannot use a passphrase") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise BundleError(path, f"cannot parse private key: {exc}") from exc


def spki(key: types.PublicKeyTypes) -> bytes:
    """DER SubjectPublicKeyInfo: equal for a key pair's two halves."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def pair(key_pem: bytes, key_path: str, chain_pem: bytes, chain_path: str) -> Bundle:
    """Parse both files and check that the private key belongs to the leaf."""
    chain = parse_chain(chain_pem, chain_path)
    key = parse_key(key_pem, key_path)
    mine = spki(key.public_key())
    if mine != spki(chain[0].public_key()):
        for i, cert in enumerate(chain[1:], start=2):
            if spki(cert.public_key()) == mine:
                raise BundleError(chain_path, f"chain out of order: the certificate for the key in "
                                  f"{key_path} is number {i} ({cert.subject.rfc4514_string()}); "
                                  "the leaf must come first, then its issuers")
        raise BundleError(key_path, f"private key does not match the leaf certificate in "
                          f"{chain_path} ({chain[0].subject.rfc4514_string()})")
    return Bundle(key_pem=key_pem, chain_pem=chain_pem, chain=chain, key=key)


def _ensure_nl(data: bytes) -> bytes:
    return data if data.endswith(b"\n") else data + b"\n"
