"""Prove that Postfix serves a given leaf on every TLS service.

Right after ``postfix reload`` an idle old smtpd can still take a connection and serve
the previous certificate, so one good probe proves nothing: each service must show the
expected leaf on ``proof_consecutive`` probes in a row before ``proof_timeout`` runs out.

The prove stage (:func:`prove_new`) proves the new leaf on every service and SNI name of
the lineage; the rollback proves the old one with :func:`served` again.
"""

from __future__ import annotations

import functools
import ssl
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from hook.certs.bundle import fingerprint
from hook.config import Config
from hook.pipeline import messages
from hook.pipeline.report import StageFailure
from hook.postfix.instance import Service
from hook.postfix.tls_files import Usage
from hook.tls.starttls import Failure, ProbeResult, Target, default_context, probe


@dataclass(frozen=True)
class Proof:
    ok: bool
    message: str
    probes: int


def target_for(service: Service, servername: str | None = None) -> Target:
    return Target(service.host, service.port, implicit_tls=service.implicit_tls,
                  servername=servername)


def served_sha256(result: ProbeResult) -> str | None:
    return fingerprint(result.handshake.leaf) if result.handshake and result.handshake.chain else None


def key_kind(cert: x509.Certificate) -> str:
    """``rsa`` or ``ecdsa`` (Ed25519/Ed448 ride on the ECDSA cipher suites in TLS 1.2)."""
    return "rsa" if isinstance(cert.public_key(), rsa.RSAPublicKey) else "ecdsa"


@functools.cache
def context_for(kind: str) -> ssl.SSLContext:
    """A client that can only accept a certificate of one key type.

    Postfix can serve an RSA and an ECDSA certificate side by side; a default handshake
    always gets the ECDSA one, so an RSA renewal could never be proven. TLS 1.2 with
    ``aRSA`` (or ``aECDSA``) cipher suites makes the server show the other one.
    """
    ctx = default_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("aRSA" if kind == "rsa" else "aECDSA")
    return ctx


def _probe_for(target: Target, timeout: float, leaf: x509.Certificate | None) -> ProbeResult:
    if leaf is None:
        return probe(target, timeout=timeout)
    result = probe(target, timeout=timeout, context=context_for(key_kind(leaf)))
    if result.failure is Failure.HANDSHAKE_FAILED:  # e.g. a TLS 1.3-only service
        return probe(target, timeout=timeout)
    return result


def served(services: Sequence[Service], expected_sha256: str, config: Config,
           servername: str | None = None, leaf: x509.Certificate | None = None) -> Proof:
    """Every service serves ``expected_sha256`` (to ``servername`` via SNI, if given).

    With ``leaf`` (the expected certificate), probes ask for its key type, so a service
    that also serves a certificate of the other type shows the one to prove.
    """
    deadline = time.monotonic() + config.deploy.proof_timeout
    need = config.deploy.proof_consecutive
    total = 0
    for svc in services:
        streak = 0
        last = "no probe yet"
        while streak < need:
            if time.monotonic() > deadline:
                sni = f" (SNI {servername})" if servername else ""
                return Proof(False, f"{svc.label}{sni} did not serve {expected_sha256[:16]} "
                             f"{need} times in a row within {config.deploy.proof_timeout:g} s "
                             f"(last: {last})", total)
            result = _probe_for(target_for(svc, servername), min(
                config.probe.timeout, max(0.5, deadline - time.monotonic())), leaf)
            total += 1
            sha = served_sha256(result)
            if sha == expected_sha256:
                streak += 1
                continue
            streak = 0
            last = f"served {sha[:16]}" if sha else f"{result.failure and result.failure.value}: " \
                   f"{result.detail}"
            time.sleep(0.1)
    return Proof(True, f"{len(services)} service(s) serve {expected_sha256[:16]}", total)


def sni_names(use: Usage) -> tuple[str, ...]:
    """The SNI names to prove (a ``.domain`` entry matches subdomains: nothing to ask for)."""
    return tuple(n for m in use.sni_maps for n in m.names if not n.startswith("."))


def served_sni(use: Usage, config: Config) -> dict[str, str | None]:
    """What each SNI name serves now (one probe each): the rollback proves it is served
    again. In SNI-only mode there is no staged file to read it from."""
    if not use.tls_services:
        return {}
    return {name: served_sha256(probe(target_for(use.tls_services[0], name),
                                      timeout=config.probe.timeout))
            for name in sni_names(use)}


def prove_new(config: Config, use: Usage, sha: str, leaf: x509.Certificate) -> StageFailure | None:
    """Every service and SNI name of the lineage serves ``sha`` (``leaf``: its certificate,
    so the probes ask for its key type when RSA and ECDSA are served side by side)."""
    try:
        for proof in _proofs(config, use, sha, leaf):
            if not proof.ok:
                return StageFailure("prove", messages.proof_failed(proof.message))
    except Exception as exc:  # a bug in the proof is rolled back like a failed proof
        return StageFailure("prove", messages.why(exc))
    return None


def _proofs(config: Config, use: Usage, sha: str, leaf: x509.Certificate) -> Iterator[Proof]:
    yield served(use.services, sha, config, leaf=leaf)
    for name in sni_names(use):
        yield served(use.tls_services[:1], sha, config, servername=name, leaf=leaf)
