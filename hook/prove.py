"""Prove that Postfix serves a given leaf on every TLS service.

Right after ``postfix reload`` an idle old smtpd can still take a connection and serve
the previous certificate, so one good probe proves nothing: each service must show the
expected leaf on ``proof_consecutive`` probes in a row before ``proof_timeout`` runs out.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from hook.bundle import fingerprint
from hook.config import Config
from hook.postfix import Service
from hook.probe import ProbeResult, Target, probe


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


def served(services: Sequence[Service], expected_sha256: str, config: Config,
           servername: str | None = None) -> Proof:
    """Every service serves ``expected_sha256`` (to ``servername`` via SNI, if given)."""
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
            result = probe(target_for(svc, servername), timeout=min(config.probe.timeout,
                                                        max(0.5, deadline - time.monotonic())))
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
