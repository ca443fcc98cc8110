"""Judge a certificate chain: order, signatures, trust, dates, names, key strength.

Trust and name checks use cryptography's X.509 verification API
(:mod:`cryptography.x509.verification`), not hand-rolled chain walking. The same
functions judge a lineage on disk (deploy hook, ``renew-check``) and a chain a service
served (probe), so there is one validator. Pure functions: the trust store is loaded
once at the edge (:func:`load_trust`) and passed in.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from hook import files
from hook.errors import BundleError
from hook.verdict import Code, Problem, Status

MIN_RSA_BITS = 2048
ALLOWED_CURVES = ("secp256r1", "secp384r1")


@dataclass(frozen=True)
class Trust:
    """Trust anchors: the system store and/or a configured CA file."""

    anchors: tuple[x509.Certificate, ...]
    sources: tuple[str, ...]

    def store(self) -> Store:
        return Store(list(self.anchors))


def load_trust(cafile: Path | None = None, *, system: bool = True) -> Trust:
    """Load the system trust store (OpenSSL's default CA file) plus ``cafile``."""
    anchors: list[x509.Certificate] = []
    sources: list[str] = []
    paths: list[Path] = []
    if system:
        default = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
        if Path(default).is_file():
            paths.append(Path(default))
    if cafile is not None:
        paths.append(cafile)
    for path in paths:
        try:
            data = files.read_bounded(path, files.CAFILE_MAX)
        except OSError as exc:
            raise BundleError(str(path), f"cannot read CA file: {exc.strerror}") from exc
        try:
            with warnings.catch_warnings():  # a few system roots have non-positive serials
                warnings.simplefilter("ignore")
                anchors.extend(x509.load_pem_x509_certificates(data))
        except ValueError as exc:
            raise BundleError(str(path), f"not a PEM CA file: {exc}") from exc
        sources.append(str(path))
    return Trust(tuple(anchors), tuple(sources))


def names_of(cert: x509.Certificate) -> tuple[str, ...]:
    """DNS names (and IP addresses) in the subjectAltName, lower-case."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    dns = [n.lower() for n in san.get_values_for_type(x509.DNSName)]
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return tuple(dns + ips)


def _subject(name: str) -> x509.verification.Subject:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name.lower().rstrip("."))


def _trust_subject(names: Sequence[str]) -> x509.verification.Subject:
    """A concrete name the leaf covers, to ask the verifier about trust alone: the first
    non-wildcard SAN, else a name inside the first wildcard (``*.a.b`` -> ``x.a.b``)."""
    concrete = [n for n in names if not n.startswith("*.")]
    return _subject(concrete[0] if concrete else "wildcard-check" + names[0][1:])


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    if child.issuer != parent.subject:
        return False
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, Exception):  # InvalidSignature and friends
        return False
    return True


def is_self_signed(cert: x509.Certificate) -> bool:
    return _issued_by(cert, cert)


def check_order(chain: Sequence[x509.Certificate], where: str) -> list[Problem]:
    """Each certificate must be issued (and signed) by the next one: leaf first."""
    problems = []
    for i in range(len(chain) - 1):
        child, parent = chain[i], chain[i + 1]
        if child.issuer != parent.subject:
            problems.append(Problem(
                Code.CHAIN_ORDER, Status.CRITICAL,
                f"{where}: certificate {i + 1} ({child.subject.rfc4514_string()}) is not issued "
                f"by certificate {i + 2} ({parent.subject.rfc4514_string()})",
                "the file must hold the leaf first, then its issuer, and so on (certbot's "
                "fullchain.pem does)"))
        elif not _issued_by(child, parent):
            problems.append(Problem(
                Code.BAD_SIGNATURE, Status.CRITICAL,
                f"{where}: the signature on certificate {i + 1} ({child.subject.rfc4514_string()}) "
                f"does not verify with the key of certificate {i + 2}",
                "the chain was tampered with or mixed from two issuances; re-issue"))
    return problems


def check_dates(leaf: x509.Certificate, now: dt.datetime, where: str) -> list[Problem]:
    if now < leaf.not_valid_before_utc:
        return [Problem(Code.NOT_YET_VALID, Status.CRITICAL,
                        f"{where}: not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
                        "check the system clock")]
    if now >= leaf.not_valid_after_utc:
        return [Problem(Code.EXPIRED, Status.CRITICAL,
                        f"{where}: expired {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
                        "renew now: certbot renew --cert-name NAME")]
    return []


def check_trust(chain: Sequence[x509.Certificate], trust: Trust, now: dt.datetime,
                where: str) -> list[Problem]:
    """Does the chain build to a trust anchor? Says *why* not when it can tell."""
    leaf, intermediates = chain[0], list(chain[1:])
    # Judge trust inside the leaf's validity window: expiry is reported on its own.
    when = now
    if not leaf.not_valid_before_utc <= now < leaf.not_valid_after_utc:
        when = leaf.not_valid_before_utc + (leaf.not_valid_after_utc - leaf.not_valid_before_utc) / 2
    names = names_of(leaf)
    if not names:
        return [Problem(Code.NAME_MISMATCH, Status.CRITICAL,
                        f"{where}: the leaf has no subjectAltName", "re-issue with certbot")]
    anchored = any(a.subject == leaf.issuer for a in trust.anchors)
    try:
        verifier = PolicyBuilder().store(trust.store()).time(when).build_server_verifier(
            _trust_subject(names))
        verifier.verify(leaf, intermediates)
    except (VerificationError, ValueError) as exc:
        if is_self_signed(leaf):
            return [Problem(Code.SELF_SIGNED, Status.CRITICAL,
                            f"{where}: the leaf is self-signed ({leaf.subject.rfc4514_string()})",
                            "use a certificate from a CA (Let's Encrypt) or add your CA as cafile")]
        if not anchored and not any(c.subject == leaf.issuer for c in intermediates):
            return [Problem(Code.MISSING_INTERMEDIATE, Status.CRITICAL,
                            f"{where}: the issuer of the leaf ({leaf.issuer.rfc4514_string()}) is "
                            "not in the chain",
                            "serve fullchain.pem, not cert.pem (smtpd_tls_chain_files = "
                            "privkey.pem, fullchain.pem)")]
        return [Problem(Code.UNTRUSTED, Status.CRITICAL,
                        f"{where}: the chain does not build to a trusted root: {exc}",
                        f"trust anchors used: {', '.join(trust.sources) or 'none'}")]
    return []


def check_names(leaf: x509.Certificate, required: Sequence[str], trust: Trust,
                now: dt.datetime, where: str) -> list[Problem]:
    """Every host name Postfix presents must be covered (wildcards as RFC 6125 says)."""
    if not required:
        return []
    when = now
    if not leaf.not_valid_before_utc <= now < leaf.not_valid_after_utc:
        when = leaf.not_valid_before_utc + (leaf.not_valid_after_utc - leaf.not_valid_before_utc) / 2
    # Name matching is done by the library: a verifier per name, anchored at the leaf
    # itself so that trust (judged separately) does not mask the answer.
    missing = []
    for name in required:
        if not _covers(leaf, name, when):
            missing.append(name)
    if not missing:
        return []
    return [Problem(Code.NAME_MISMATCH, Status.CRITICAL,
                    f"{where}: does not cover {', '.join(missing)} (it covers "
                    f"{', '.join(names_of(leaf)) or 'no names'})",
                    "add the names with certbot --expand -d NAME, or fix myhostname")]


def _covers(leaf: x509.Certificate, name: str, when: dt.datetime) -> bool:
    try:
        subject = _subject(name)
    except ValueError:
        return False
    try:
        verifier = PolicyBuilder().store(Store([leaf])).time(when).build_server_verifier(subject)
        verifier.verify(leaf, [])
    except VerificationError as exc:
        # The leaf is its own anchor here, so the verifier may object to other things
        # (e.g. a critical SAN on a private-CA leaf); only this message means "name".
        if "no matching subjectaltname" in str(exc).lower():
            return False
        return _san_match(names_of(leaf), name)
    return True


def _san_match(names: Sequence[str], host: str) -> bool:
    host = host.lower().rstrip(".")
    for n in names:
        if n == host:
            return True
        if n.startswith("*.") and "." in host and host.split(".", 1)[1] == n[2:]:
            return True
    return False


def check_key(leaf: x509.Certificate, where: str) -> list[Problem]:
    key = leaf.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return [Problem(Code.WEAK_KEY, Status.CRITICAL,
                        f"{where}: RSA key of {key.key_size} bits (< {MIN_RSA_BITS})",
                        "re-issue with --key-type ecdsa or --rsa-key-size 2048 or more")]
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name not in ALLOWED_CURVES:
        return [Problem(Code.WEAK_KEY, Status.CRITICAL,
                        f"{where}: EC curve {key.curve.name} (use P-256 or P-384)",
                        "re-issue with --key-type ecdsa --elliptic-curve secp256r1")]
    if isinstance(key, dsa.DSAPublicKey):
        return [Problem(Code.WEAK_KEY, Status.CRITICAL, f"{where}: DSA key", "re-issue")]
    _ = (ed25519, ed448)  # Ed25519/Ed448 are accepted
    return []


def check_chain(chain: Sequence[x509.Certificate], *, trust: Trust, now: dt.datetime,
                names: Sequence[str] = (), where: str = "chain") -> list[Problem]:
    """Everything about a chain, leaf first: order, trust, dates, names, key strength."""
    problems = check_order(chain, where)
    if not problems:
        problems += check_trust(chain, trust, now, where)
    problems += check_dates(chain[0], now, where)
    problems += check_names(chain[0], names, trust, now, where)
    problems += check_key(chain[0], where)
    return problems
