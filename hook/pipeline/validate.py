"""Validate: every check on the lineage's files before anything changes.

Parse both files, pair key and leaf, chain order and signatures, trust
(``cryptography.x509.verification``), dates, the names Postfix presents, key strength,
file permissions. :func:`validate_lineage` is the one validator: ``renew-check`` and
``renew-check adopt`` use it too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import grp
from dataclasses import dataclass, replace

from cryptography import x509

from hook.certs import bundle as bundle_mod
from hook.certs import consistency, perms
from hook.certs.lineage import Lineage, previous_version, reuses_key
from hook.certs.validate import check_chain, load_trust
from hook.config import Config
from hook.errors import BundleError, ConfigError, Error
from hook.pipeline import messages
from hook.pipeline.discover import Discovery
from hook.pipeline.report import Ending, Outcome, refusal_outcome
from hook.postfix import tls_files
from hook.verdict import Code, Problem, Status


@dataclass(frozen=True)
class Validation:
    """What validate found: the parsed bundle (if it parsed), refusals, warnings, fixes."""

    bundle: bundle_mod.Bundle | None
    problems: tuple[Problem, ...]
    """Every refusal as a :class:`~hook.verdict.Problem` (code, detail, fix): what the
    hook refuses for and what ``renew-check`` reports for the lineage on disk."""
    warnings: tuple[str, ...]
    fixes: tuple[perms.Fix, ...]
    key_warning: str = ""
    """The key-changed warning among ``warnings`` (the DANE gate words it better when DANE
    is in use; then this one is dropped)."""
    error: Error | None = None
    """The lineage could not be validated at all (an unusable file, a bad setting)."""

    @property
    def passed(self) -> bool:
        return self.bundle is not None and not self.problems


def group_id(config: Config) -> int | None:
    """The group that may read the keys (``deploy.group``), None without one."""
    if not config.deploy.group:
        return None
    try:
        return grp.getgrnam(config.deploy.group).gr_gid
    except KeyError as exc:
        raise ConfigError(f"deploy.group: no such group {config.deploy.group!r}") from exc


def validate_lineage(config: Config, lineage: Lineage, use: tls_files.Usage,
                     now: dt.datetime | None = None) -> Validation:
    """Every check on the lineage's files; nothing is changed here."""
    now = now or dt.datetime.now(dt.UTC)
    problems: list[Problem] = []
    warnings: list[str] = []
    fixes = perms.inspect(lineage, group_id(config))
    exposed = perms.current_key_exposure(lineage, fixes)
    if exposed is not None:
        problems.append(Problem(Code.KEY_PERMISSIONS, Status.CRITICAL,
                                messages.key_exposed(exposed.path, exposed.mode),
                                messages.key_exposed_fix(exposed.want, lineage)))
    try:
        new = bundle_mod.pair(lineage.read(lineage.privkey), str(lineage.privkey),
                              lineage.read(lineage.fullchain), str(lineage.fullchain))
    except BundleError as exc:
        code = Code.KEY_MISMATCH if "does not match" in exc.problem else Code.UNREADABLE
        return Validation(None, (Problem(code, Status.CRITICAL, str(exc)), *problems),
                          tuple(warnings), fixes)
    for odd in consistency.check(lineage):  # is it what certbot writes? (before any write)
        problems.append(Problem(Code.LINEAGE_INCONSISTENT, Status.CRITICAL, odd, consistency.FIX))
    trust_store = load_trust(config.probe.cafile, system=config.trust.system_store)
    found = check_chain(new.chain, trust=trust_store, now=now,
                                 names=tls_files.required_names(config, use),
                                 where=str(lineage.fullchain))
    for p in found:
        hinted = p.code is Code.NAME_MISMATCH and use.default_cert
        problems.append(replace(p, fix=f"{p.fix}{messages.NAME_HINT}") if hinted else p)
    old = _old_leaf(lineage, use)
    key_warning = ""
    if (old is not None and bundle_mod.spki(old.public_key()) != bundle_mod.spki(new.leaf.public_key())
            and not reuses_key(lineage)):
        key_warning = messages.key_changed(lineage)
        warnings.append(key_warning)
    return Validation(new, tuple(problems), tuple(warnings), fixes, key_warning)


def _old_leaf(lineage: Lineage, use: tls_files.Usage) -> x509.Certificate | None:
    paths = [s.path for s in use.staged if s.kind is not tls_files.Kind.KEY]
    prev = previous_version(lineage)
    if prev is not None:
        paths.append(prev)
    for path in paths:
        with contextlib.suppress(OSError, BundleError):
            return bundle_mod.parse_chain(path.read_bytes(), str(path))[0]
    return None


def validate(config: Config, lineage: Lineage, found: Discovery) -> Validation:
    """The validate stage: :func:`validate_lineage`, and a warning when Postfix reads
    separate certificate and key files although it could read one bundle."""
    try:
        checked = validate_lineage(config, lineage, found.use)
    except (BundleError, ConfigError) as exc:
        return Validation(None, (Problem(Code.UNREADABLE, Status.CRITICAL, str(exc)),), (), (),
                          error=exc)
    split = {s.kind for s in found.use.staged} >= {tls_files.Kind.CERT, tls_files.Kind.KEY}
    if split and found.postfix.has_chain_files():
        checked = replace(checked, warnings=(*checked.warnings,
                                             messages.split_files(found.use.staged, lineage)))
    return checked


def accepted(checked: Validation, found: Discovery, lineage: Lineage) -> bundle_mod.Bundle | Ending:
    """The bundle to deploy, or why the run ends here (unreadable, or a check refused)."""
    if checked.error is not None:
        return Ending(Outcome.REFUSED, messages.validation_failed(checked.error), checked.problems)
    if checked.bundle is None or checked.problems:
        return Ending(refusal_outcome(found.use),
                      messages.refused(checked.problems, found.use, lineage), checked.problems)
    return checked.bundle


def tighten_key(lineage: Lineage, checked: Validation, *, dry_run: bool) -> None:
    """On a refusal too: tightening a key is always safe (not in a dry run)."""
    if checked.fixes and not dry_run:
        perms.apply(lineage, checked.fixes)
