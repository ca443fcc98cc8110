"""The DANE gate: do the DNSSEC-validated TLSA records of the names Postfix presents on
port 25 match the new chain? If not, refuse and say which records to publish.

The judgement is :mod:`hook.dns.dane`'s (``dns.dane``: ``refuse``, ``warn``, ``off``);
this stage picks the names, remembers where DANE is in use (:mod:`hook.dns.danestate`)
and words the outcome. Besides the proof, the only network traffic the hook makes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509

from hook.certs import bundle as bundle_mod
from hook.certs.lineage import Lineage, previous_version
from hook.config import Config, DaneMode
from hook.errors import BundleError
from hook.pipeline import messages
from hook.pipeline.discover import Discovery
from hook.pipeline.report import Ending, refusal_outcome
from hook.pipeline.validate import Validation, accepted
from hook.postfix import tls_files
from hook.verdict import Code, Problem, Status

if TYPE_CHECKING:
    from hook.dns.dane import DaneResult


@dataclass(frozen=True)
class DaneGate:
    """What the DANE gate decided, and what the report says of it."""

    result: DaneResult | None
    """None: ``dns.dane = "off"``, or validation refused first (no lookup, not even
    dnspython imported)."""
    names: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def refused(self) -> bool:
        return self.result is not None and self.result.refused

    @property
    def problems(self) -> tuple[Problem, ...]:
        return self.result.problems if self.result is not None else ()

    @property
    def rewords_key_change(self) -> bool:
        """The gate's key-changed finding replaces validation's warning about it."""
        return any(p.code is Code.KEY_CHANGED for p in self.problems)

    @property
    def summary(self) -> str:
        """``DANE ok: mail.example.com match`` for the report's message ("" when off)."""
        return self.result.summary if self.result is not None else ""


def dane_gate(config: Config, lineage: Lineage, use: tls_files.Usage, checked: Validation,
              *, record: bool) -> DaneGate:
    """Run :func:`hook.dns.dane.check_before_deploy` for the new chain (not when validation
    refused it). With ``record`` (a real run, not ``--dry-run``), remember in
    ``state_dir/dane.json`` where DANE is in use, so a later failed lookup refuses only for
    those hosts (:mod:`hook.dns.danestate`)."""
    if config.dns.dane is DaneMode.OFF or checked.bundle is None or checked.problems:
        return DaneGate(None)
    from hook.dns import dane, danestate  # noqa: PLC0415 - dnspython costs ~70 ms to import

    new = checked.bundle
    notes: list[str] = []
    warnings: list[str] = []
    if tls_files.faces_port_25(use):
        names = dane.tlsa_names(tls_files.required_names(config, use), new.leaf)
    else:
        names = ()
        notes.append(messages.submission_only(lineage, use.services))
    history = danestate.load(config.deploy.state_dir)
    if history.note:
        warnings.append(history.note)
    result = dane.check_before_deploy(config, new.chain, _old_chain(lineage, use), names,
                                      reuse_key=dane.reuse_key(lineage.renewal_conf()),
                                      seen=history.seen())
    if record and names:
        updated = danestate.observe(history, result, lineage.name)
        if updated.hosts != history.hosts or history.note:
            try:
                danestate.save(config.deploy.state_dir, updated)
            except OSError as exc:
                warnings.append(messages.dane_state_unsaved(
                    danestate.path_of(config.deploy.state_dir), exc))
    warnings += [str(p) for p in result.problems if p.status is not Status.CRITICAL]
    return DaneGate(result, names, tuple(warnings), (*notes, *result.notes))


def cleared(checked: Validation, gate: DaneGate, found: Discovery,
            lineage: Lineage) -> bundle_mod.Bundle | Ending:
    """The bundle validation and the DANE gate let through, or the first refusal."""
    new = accepted(checked, found, lineage)
    if isinstance(new, Ending):
        return new
    return refused_by_dane_gate(gate, found, lineage) or new


def refused_by_dane_gate(gate: DaneGate, found: Discovery, lineage: Lineage) -> Ending | None:
    """The run ends here when the gate refuses: its critical problems, mismatches first."""
    if not gate.refused:
        return None
    critical = sorted((p for p in gate.problems if p.status is Status.CRITICAL),
                      key=lambda p: p.code is not Code.DANE_MISMATCH)
    return Ending(refusal_outcome(found.use),
                  messages.refused_by_dane_gate(critical, found.use, lineage), tuple(critical))


def _old_chain(lineage: Lineage, use: tls_files.Usage) -> tuple[x509.Certificate, ...] | None:
    """The chain Postfix serves now: the staged bundle; in place, certbot's previous
    version (``archive/NAME/fullchainN-1.pem``, what Postfix loaded before this renewal);
    None on a first deploy."""
    paths = [s.path for s in use.staged if s.kind is not tls_files.Kind.KEY]
    if not paths and use.mode is tls_files.Mode.IN_PLACE:
        prev = previous_version(lineage, "fullchain")
        paths = [prev] if prev is not None else []
    for path in paths:
        with contextlib.suppress(OSError, BundleError):
            return bundle_mod.parse_chain(path.read_bytes(), str(path))
    return None
