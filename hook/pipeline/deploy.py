"""The deploy pipeline, one code path for the hook and for ``--dry-run``.

::

    discover ─▶ validate ─▶ DANE gate ─▶ preflight ─▶ plan ─▶ apply ─▶ reload ─▶ prove
                                                             ─▶ (rollback) ─▶ trust anchors

* **discover**: is the lineage used (main.cf, master.cf ``-o``, ``tls_server_sni_maps``),
  by the primary instance or by any postmulti instance (``multi_instance_directories``)?
  Every instance that uses it is checked, reloaded and proven.
* **validate**: parse both files, pair key and leaf, chain order and signatures, trust
  (``cryptography.x509.verification``), dates, names, key strength, file permissions.
* **DANE gate** (:mod:`hook.dns.dane`, ``dns.dane``): do the DNSSEC-validated TLSA records of
  the names Postfix presents on port 25 match the new chain? If not, refuse and print the
  records to publish. The only network traffic the hook makes besides its proof.
* **preflight**: Postfix is running and ``postfix check`` passes, before anything changes.
* **apply**: fix permissions (``fchmod`` on ``O_NOFOLLOW`` descriptors), write the staged
  files atomically (previous kept as ``.prev``), rebuild SNI tables with ``postmap -F``.
* **reload / prove**: reload, then probe every TLS service until it serves the new leaf.
* **rollback**: on ANY failure once a file changed (a Postfix command, a reload killed
  after ``postfix.command_timeout``, an exception in the hook): put the previous staged
  files and SNI tables back, reload, prove the old leaf (by key type) and what each SNI
  name served before. Trust anchors are imported only after a successful proof (opt-in).
* **in place** (Postfix reads certbot's ``live/``): nothing can be held back, since new
  smtpd processes load renewed files without a reload; a refusal is ``refused_in_place``
  (exit 7, act now), not ``refused`` (exit 3, old certificate still served).

``--dry-run`` stops after ``plan``: nothing is written, reloaded or imported, and the
report says what the real run would do and whether it would succeed. Every stage returns
data; the pipeline decides. The private key never enters a report or a log.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import grp
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509

from hook import files
from hook.certs import bundle as bundle_mod
from hook.certs import consistency, perms, trust, validate
from hook.certs.lineage import Lineage, previous_version, reuses_key
from hook.config import Config, DaneMode
from hook.errors import BundleError, ConfigError, Error, PostfixError
from hook.pipeline import prove
from hook.postfix import tls_files
from hook.postfix.instance import PREFLIGHT_DRY_RUN_NOTE, Postfix, postfix_at_fault, run_on_pty
from hook.tls.starttls import probe
from hook.verdict import Code, Problem, Status

if TYPE_CHECKING:
    from hook.dns.dane import DaneResult


class DeployError(Error):
    """The pipeline could not run at all (e.g. the lock is held for too long)."""


class Outcome(StrEnum):
    DEPLOYED = "deployed"
    WOULD_DEPLOY = "would_deploy"
    SKIPPED = "skipped"
    REFUSED = "refused"
    REFUSED_IN_PLACE = "refused_in_place"
    """Refused, but Postfix reads certbot's files in place: new smtpd processes are
    already loading the refused files. Not "nothing changed": act now."""
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"


@dataclass(frozen=True)
class Report:
    """What one run did (or, with ``dry_run``, would do)."""

    outcome: Outcome
    lineage: str
    message: str
    mode: str = ""
    dry_run: bool = False
    old_sha256: str | None = None
    new_sha256: str | None = None
    bundle: str | None = None
    steps: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    """Every reason validation refused (the message starts with the first)."""
    notes: tuple[str, ...] = ()
    """Facts worth a line that are not problems (e.g. "the zone is not DNSSEC-signed")."""
    dane: dict[str, object] | None = None
    """The DANE gate's result (:meth:`hook.dns.dane.DaneResult.as_record`); None before it ran
    or with ``dns.dane = "off"``."""

    def as_record(self) -> dict[str, object]:
        data = asdict(self)
        data["outcome"] = self.outcome.value
        return data


@dataclass(frozen=True)
class Validation:
    """What validate found: the parsed bundle (if it parsed), refusals, warnings, fixes."""

    bundle: bundle_mod.Bundle | None
    problems: tuple[str, ...]
    warnings: tuple[str, ...]
    fixes: tuple[perms.Fix, ...]
    key_warning: str = ""
    """The key-changed warning among ``warnings`` (the DANE gate words it better when DANE
    is in use; then this one is dropped)."""
    findings: tuple[Problem, ...] = ()
    """Every refusal as a :class:`~hook.verdict.Problem` (code, detail, fix), in the order
    of ``problems``: what ``renew-check`` reports for the lineage on disk."""


def postfix_for(config: Config) -> Postfix:
    return Postfix(config.postfix.config_directory, config.postfix.reload_command,
                   config.postfix.probe_host, config.postfix.command_timeout)


LOCK_WAIT = 600.0
"""Seconds a run waits for another one; a run is bounded well below this (proof timeout,
60 s per Postfix command), so waiting longer means something hangs."""


@contextlib.contextmanager
def locked(state_dir: Path, wait: float = LOCK_WAIT) -> Iterator[None]:
    """Serialize runs: a second hook waits for the first instead of interleaving."""
    files.ensure_private_dir(state_dir, 0o755)
    path = state_dir / "deploy.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DeployError(f"{path}: another deploy has held the lock for over "
                                      f"{wait:g} s; is a hook hanging?") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def group_id(config: Config) -> int | None:
    if not config.deploy.group:
        return None
    try:
        return grp.getgrnam(config.deploy.group).gr_gid
    except KeyError as exc:
        raise ConfigError(f"deploy.group: no such group {config.deploy.group!r}") from exc


class _Clock:
    def __init__(self) -> None:
        self.start = self.last = time.monotonic()
        self.timings: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.timings[name] = round(self.timings.get(name, 0.0) + now - self.last, 4)
        self.last = now

    def total(self) -> dict[str, float]:
        self.timings["total"] = round(time.monotonic() - self.start, 4)
        return self.timings


# ----------------------------------------------------------------------------- validate
def required_names(config: Config, use: tls_files.Usage) -> tuple[str, ...]:
    """Host names the leaf must cover: myhostname and deploy.names when Postfix presents
    the lineage by default, plus the SNI names that map to it."""
    names: list[str] = []
    if use.default_cert:
        if config.deploy.require_myhostname and use.myhostname:
            names.append(use.myhostname)
        names.extend(config.deploy.names)
    for sni in use.sni_maps:
        names.extend(n for n in sni.names if not n.startswith("."))
    return tuple(dict.fromkeys(n.lower().rstrip(".") for n in names))


def validate_lineage(config: Config, lineage: Lineage, use: tls_files.Usage,
                     now: dt.datetime | None = None) -> Validation:
    """Every check on the lineage's files; nothing is changed here."""
    now = now or dt.datetime.now(dt.UTC)
    problems: list[str] = []
    findings: list[Problem] = []
    warnings: list[str] = []
    fixes = perms.inspect(lineage, group_id(config))
    exposed = perms.current_key_exposure(lineage, fixes)
    if exposed is not None:
        detail = (f"{exposed.path}: private key is readable by other users (mode "
                  f"{exposed.mode:04o}); it may have been copied")
        fix = (f"the hook tightens it to {exposed.want:04o}; re-issue with a new key (certbot "
               f"renew --cert-name {lineage.name} --force-renewal) before deploying")
        problems.append(f"{detail}. The hook tightens it to {exposed.want:04o}; re-issue with a "
                        f"new key (certbot renew --cert-name {lineage.name} --force-renewal) "
                        "before deploying")
        findings.append(Problem(Code.KEY_PERMISSIONS, Status.CRITICAL, detail, fix))
    try:
        new = bundle_mod.pair(lineage.read(lineage.privkey), str(lineage.privkey),
                              lineage.read(lineage.fullchain), str(lineage.fullchain))
    except BundleError as exc:
        code = Code.KEY_MISMATCH if "does not match" in exc.problem else Code.UNREADABLE
        return Validation(None, (str(exc), *problems), tuple(warnings), fixes,
                          findings=(Problem(code, Status.CRITICAL, str(exc)), *findings))
    for odd in consistency.check(lineage):  # is it what certbot writes? (before any write)
        problems.append(odd)
        findings.append(Problem(Code.LINEAGE_INCONSISTENT, Status.CRITICAL, odd,
                                consistency.FIX))
    trust_store = validate.load_trust(config.probe.cafile, system=config.trust.system_store)
    found = validate.check_chain(new.chain, trust=trust_store, now=now,
                                 names=required_names(config, use), where=str(lineage.fullchain))
    for p in found:
        hint = ("; if Postfix presents other names, set deploy.require_myhostname = false and "
                "list them in deploy.names" if p.code is Code.NAME_MISMATCH and use.default_cert
                else "")
        problems.append(f"{p}{hint}")
        findings.append(replace(p, fix=f"{p.fix}{hint}") if hint else p)
    old = _old_leaf(lineage, use)
    key_warning = ""
    if (old is not None and bundle_mod.spki(old.public_key()) != bundle_mod.spki(new.leaf.public_key())
            and not reuses_key(lineage)):
        key_warning = (f"{lineage.privkey}: the private key changed and {lineage.renewal_conf()} "
                       "has no 'reuse_key = True': DANE TLSA '3 1 1' records for the old key "
                       "stop matching; publish the new TLSA record first, or set reuse_key")
        warnings.append(key_warning)
    return Validation(new, tuple(problems), tuple(warnings), fixes, key_warning, tuple(findings))


def _old_leaf(lineage: Lineage, use: tls_files.Usage) -> x509.Certificate | None:
    paths = [s.path for s in use.staged if s.kind is not tls_files.Kind.KEY]
    prev = previous_version(lineage)
    if prev is not None:
        paths.append(prev)
    for path in paths:
        with contextlib.suppress(OSError, BundleError):
            return bundle_mod.parse_chain(path.read_bytes(), str(path))[0]
    return None


# ----------------------------------------------------------------------------- DANE gate
@dataclass(frozen=True)
class Gate:
    """What the DANE gate decided, and what the pipeline reports from it."""

    result: DaneResult | None
    """None: ``dns.dane = "off"`` (no lookup, not even dnspython imported)."""
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
    def summary(self) -> str:
        """``; DANE ok: mail.example.com match`` for the report's message ("" when off)."""
        return f"; {self.result.summary}" if self.result is not None else ""


def faces_port_25(use: tls_files.Usage) -> bool:
    """Can a sender's MX connection get this lineage? Not when only implicit-TLS (465) or
    TLS-required (587-style ``-o smtpd_tls_security_level=encrypt``) services present it:
    RFC 3207 forbids requiring TLS on a public MX, so those are submission services."""
    if use.sni_maps or not use.services:
        return True
    for svc in use.services:
        level = svc.overrides.get("smtpd_tls_security_level", "")
        enforce = svc.overrides.get("smtpd_enforce_tls", "")
        if svc.port == 25 or not (svc.implicit_tls or level == "encrypt" or enforce == "yes"):
            return True
    return False


def tlsa_names(config: Config, use: tls_files.Usage, leaf: x509.Certificate) -> tuple[str, ...]:
    """The host names whose ``_25._tcp`` TLSA records must match the new leaf.

    The names Postfix presents the lineage under (:func:`required_names`: ``myhostname``
    and ``deploy.names`` for the default certificate, the SNI names that map to it) that
    the leaf covers; when there are none (``require_myhostname = false`` and no
    ``deploy.names``), the leaf's own DNS names. A sender looks up TLSA at the MX host
    name, and Postfix's ``myhostname`` is that name on a typical MX; the leaf's other
    names (the bare mail domain, webmail) are not asked for by senders, and a TLSA
    record published there for another server must not hold this one back."""
    from hook.dns import dane  # noqa: PLC0415 - dnspython costs ~70 ms to import; only with DANE on

    now = dt.datetime.now(dt.UTC)
    nobody = validate.Trust((), ())
    covered = [n for n in required_names(config, use)
               if not validate.check_names(leaf, [n], nobody, now, "leaf")]
    return dane.tlsa_hosts(covered or validate.names_of(leaf))


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


def dane_gate(config: Config, lineage: Lineage, use: tls_files.Usage, new: bundle_mod.Bundle,
              *, record: bool) -> Gate:
    """Run :func:`hook.dns.dane.check_before_deploy` for the new chain. With ``record`` (a real
    run, not ``--dry-run``), remember in ``state_dir/dane.json`` where DANE is in use, so a
    later failed lookup refuses only for those hosts (:mod:`hook.dns.danestate`)."""
    if config.dns.dane is DaneMode.OFF:
        return Gate(None)
    from hook.dns import dane, danestate  # noqa: PLC0415 - see tlsa_names

    notes: list[str] = []
    warnings: list[str] = []
    if faces_port_25(use):
        names = tlsa_names(config, use, new.leaf)
    else:
        names = ()
        notes.append(f"DANE: Postfix presents {lineage.name} only on submission services "
                     f"({', '.join(s.label for s in use.services)}), not on port 25; no TLSA "
                     "lookup")
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
                warnings.append(f"{danestate.path_of(config.deploy.state_dir)}: cannot record "
                                f"where DANE is in use: {exc.strerror or exc}")
    warnings += [str(p) for p in result.problems if p.status is not Status.CRITICAL]
    return Gate(result, names, tuple(warnings), (*notes, *result.notes))


def _dane_unchanged(use: tls_files.Usage, config: Config, lineage: Lineage) -> str:
    if use.mode is tls_files.Mode.IN_PLACE:
        return ("; Postfix reads certbot's files in place, so the old pair cannot be kept: "
                "every smtpd process Postfix starts from now on (no reload needed) already "
                "presents the new certificate, and DANE senders defer mail to it. ACT NOW: "
                "publish the records above, then run 'renew-check adopt "
                f"{lineage.live}' so that from the next renewal on the hook can keep the old "
                "certificate served until they match")
    return _unchanged(use, config, lineage)


# ----------------------------------------------------------------------------- run
def run(config: Config, lineage: Lineage, *, dry_run: bool = False,
        log: Callable[..., object] | None = None) -> Report:
    """Run the whole pipeline for ``lineage``; never raises for a bad bundle or Postfix."""
    clock = _Clock()
    postfix = postfix_for(config)
    main_cf = config.postfix.config_directory / "main.cf"
    try:
        instances = _instances(config, postfix, lineage)
    except PostfixError as exc:
        return Report(Outcome.REFUSED, lineage.name, f"cannot read the Postfix configuration "
                      f"({main_cf}): {exc}", dry_run=dry_run, timings=clock.total())
    use = tls_files.merged([u for _, u in instances])
    clock.lap("discover")
    labels = tuple(s.label for s in use.services)
    base = Report(Outcome.REFUSED, lineage.name, "", mode=use.mode.value, dry_run=dry_run,
                  bundle=str(use.bundle_path), services=labels, timings=clock.timings)
    if use.mode is tls_files.Mode.UNUSED:
        return replace(base, outcome=Outcome.SKIPPED, timings=clock.total(),
                       message=f"Postfix ({config.postfix.config_directory}) does not use lineage "
                               f"{lineage.name}; nothing to do")

    try:
        checked = validate_lineage(config, lineage, use)
    except (BundleError, ConfigError) as exc:
        return replace(base, message=f"refused: {exc}", problems=(str(exc),), timings=clock.total())
    clock.lap("validate")
    old_sha = _staged_sha256(use)
    split = {s.kind for s in use.staged} >= {tls_files.Kind.CERT, tls_files.Kind.KEY}
    if split and postfix.has_chain_files():
        checked = replace(checked, warnings=(*checked.warnings, (
            f"{', '.join(str(s.path) for s in use.staged)}: separate certificate and key files "
            "cannot be replaced in one atomic step (an smtpd starting between the two renames "
            "loads a mixed pair); this Postfix reads smtpd_tls_chain_files: run 'renew-check "
            f"adopt {lineage.live}' to switch to one key+chain bundle")))
    base = replace(base, old_sha256=old_sha, warnings=checked.warnings)
    if checked.bundle is not None:
        base = replace(base, new_sha256=checked.bundle.leaf_sha256)
    if checked.problems or checked.bundle is None:
        if checked.fixes and not dry_run:
            perms.apply(lineage, checked.fixes)  # tightening a key is always safe
        return replace(base, problems=checked.problems, timings=clock.total(),
                       outcome=_refused(use),
                       message=f"refused: {checked.problems[0]}"
                               f"{_unchanged(use, config, lineage)}"
                               + (f" (+{len(checked.problems) - 1} more)"
                                  if len(checked.problems) > 1 else ""))
    new = checked.bundle
    base = replace(base, new_sha256=new.leaf_sha256)

    # DANE gate: do the published TLSA records match the new chain? Before any change.
    gate = dane_gate(config, lineage, use, new, record=not dry_run)
    clock.lap("dane")
    kept = tuple(w for w in checked.warnings if not (
        w == checked.key_warning and any(p.code is Code.KEY_CHANGED for p in gate.problems)))
    base = replace(base, warnings=kept + gate.warnings, notes=gate.notes,
                   dane=gate.result.as_record() if gate.result is not None else None)
    if gate.refused:
        if checked.fixes and not dry_run:
            perms.apply(lineage, checked.fixes)  # tightening a key is always safe
        critical = [p for p in gate.problems if p.status is Status.CRITICAL]
        critical.sort(key=lambda p: p.code is not Code.DANE_MISMATCH)
        return replace(base, problems=tuple(str(p) for p in critical), timings=clock.total(),
                       outcome=_refused(use),
                       message=f"refused by the DANE gate: {critical[0]}"
                               f"{_dane_unchanged(use, config, lineage)}"
                               + (f" (+{len(critical) - 1} more)" if len(critical) > 1 else ""))

    # Preflight: Postfix must be running and its configuration sound before we change anything.
    try:
        for instance, _ in instances:  # a dry run writes nothing: not even queue directories
            instance.check_readonly() if dry_run else instance.check()
        clock.lap("check")
        for instance, used in instances:
            _require_running(instance.config_directory, used.queue_directory)
    except PostfixError as exc:
        return replace(base, timings=clock.total(),
                       message=f"refused before any change: {exc}"
                               f"{postfix_at_fault(use.mode.value, lineage.live)}")
    if dry_run:
        base = replace(base, notes=(*base.notes, PREFLIGHT_DRY_RUN_NOTE))
    clock.lap("status")

    anchors = (trust.plan(config.trust, config.deploy.state_dir, lineage.name, new.chain)
               if config.trust.import_anchors else None)
    steps = _plan(config, use, new, checked, anchors, [p for p, _ in instances])
    base = replace(base, steps=steps)
    if dry_run:
        return replace(base, outcome=Outcome.WOULD_DEPLOY, timings=clock.total(),
                       message=f"would deploy {new.leaf_sha256[:16]} for {lineage.name} "
                               f"({use.mode.value}); the real run's checks pass"
                               + gate.summary)

    # Apply, reload, prove. From the first write on, ANY failure (a Postfix command, a
    # timeout, a bug) puts the previous files back, reloads and proves: never a bare exit
    # with unproven files installed.
    gid = group_id(config)
    perms.apply(lineage, checked.fixes)
    before = _Before(files.snapshot(s.path for s in use.staged), {}, _served_sni(use, config))
    try:
        files.install_files([(s.path, new.file_for(s.kind.value)) for s in use.staged],
                              mode=perms.key_mode(gid), gid=gid)
        for sni in use.sni_maps:
            before.sni[sni.db] = _read_optional(sni.db)
            _postmap(config, sni.spec)
            protect_db(sni.db, perms.key_mode(gid), gid)
    except Exception as exc:  # e.g. disk full: put back what was written, nothing reloaded
        try:
            _restore_sni(before.sni, perms.key_mode(gid), gid)
            files.restore(before.staged)
        except Exception as again:  # reported, not raised
            return replace(base, outcome=Outcome.ROLLBACK_FAILED, timings=clock.total(),
                           message=f"installing failed ({_why(exc)}) and restoring the previous "
                                   f"files failed too ({_why(again)}): check "
                                   f"{', '.join(str(p) for p in [*before.staged, *before.sni])}")
        return replace(base, outcome=_refused(use), timings=clock.total(),
                       message=f"refused: installing failed, previous files restored: "
                               f"{_why(exc)}")
    clock.lap("apply")

    def reload() -> None:
        _reload(config, postfix, instances)

    try:
        reload()
        clock.lap("reload")
        _prove(use, new.leaf_sha256, config, new.leaf)
        clock.lap("prove")
    except Exception as exc:  # every failure after a write is rolled back
        clock.lap("prove")
        return _rollback(base, reload, use, old_sha, before, config, _why(exc), clock)
    warnings = list(base.warnings)
    if anchors is not None:
        try:  # the certificate is deployed and proven: a failure here is a warning
            result = trust.apply(anchors, config.deploy.state_dir, lineage.name)
            if not result.ok:
                warnings.append(f"trust anchors: {result.message}")
        except Exception as exc:  # e.g. OSError writing an anchor file
            warnings.append(f"trust anchors: {_why(exc)}")
        clock.lap("trust")
    served = ", ".join(labels + tuple(f"SNI {n}" for m in use.sni_maps for n in m.names))
    return replace(base, outcome=Outcome.DEPLOYED, warnings=tuple(warnings), timings=clock.total(),
                   message=f"deployed {new.leaf_sha256[:16]} for {lineage.name}; served on "
                           f"{served or 'no TLS service'}{gate.summary}")


def _refused(use: tls_files.Usage) -> Outcome:
    """A refusal leaves the old pair served, except when Postfix reads certbot's files in
    place: those ARE the refused files, and each new smtpd process loads them."""
    return Outcome.REFUSED_IN_PLACE if use.mode is tls_files.Mode.IN_PLACE else Outcome.REFUSED


def _unchanged(use: tls_files.Usage, config: Config, lineage: Lineage) -> str:
    if use.mode is tls_files.Mode.IN_PLACE:
        prev = [p for p in (previous_version(lineage, "fullchain"),
                            previous_version(lineage, "privkey")) if p is not None]
        back = (f"point {lineage.fullchain} and {lineage.privkey} back at "
                f"{' and '.join(str(p) for p in prev)}" if len(prev) == 2 else
                f"put a good pair back in {lineage.live}")
        return ("; Postfix reads these files in place, so nothing could be kept: every smtpd "
                "process Postfix starts from now on (no reload needed) loads this pair, and "
                "TLS on new connections may be failing right now. ACT NOW: fix the lineage "
                f"(or {back}), run 'postfix-deploy-hook --lineage {lineage.live}', then "
                f"'renew-check adopt {lineage.live}' so that Postfix reads files the hook "
                "stages and a bad renewal can never reach it again")
    if use.mode is tls_files.Mode.STAGED:
        return f"; {', '.join(str(s.path) for s in use.staged)} unchanged, Postfix keeps serving it"
    return "; the SNI table is unchanged"


def _plan(config: Config, use: tls_files.Usage, new: bundle_mod.Bundle, checked: Validation,
          anchors: trust.AnchorPlan | None, postfixes: list[Postfix]) -> tuple[str, ...]:
    gid = group_id(config)
    mode = perms.key_mode(gid)
    steps = [f"fix {f.describe()}" for f in checked.fixes]
    for s in use.staged:
        what = {"chain": f"key + {len(new.chain)} certificates", "cert":
                f"{len(new.chain)} certificates", "key": "private key"}[s.kind.value]
        group = f" group {config.deploy.group}" if gid is not None else ""
        steps.append(f"write {s.path} (mode {mode:04o}{group}, {what}), keeping the current "
                     f"one as {s.path.name}{files.PREV_SUFFIX}")
    steps.extend(f"postmap -F {m.spec} (SNI {', '.join(m.names)})" for m in use.sni_maps)
    if config.postfix.reload_command:
        steps.append(" ".join(config.postfix.reload_command))
    else:
        steps.extend(f"postfix -c {p.config_directory} reload" for p in postfixes)
    steps.extend(f"prove {s.label} serves leaf sha256 {new.leaf_sha256}" for s in use.services)
    steps.extend(f"prove SNI {n} serves leaf sha256 {new.leaf_sha256}"
                 for m in use.sni_maps for n in m.names if not n.startswith("."))
    if anchors is not None:
        steps.append(anchors.describe())
    return tuple(steps)


def _sni_names(use: tls_files.Usage) -> tuple[str, ...]:
    return tuple(n for m in use.sni_maps for n in m.names if not n.startswith("."))


def _prove(use: tls_files.Usage, sha: str, config: Config,
           leaf: x509.Certificate | None) -> None:
    """Every service and SNI name of the lineage serves ``sha`` (``leaf``: its certificate,
    so the probes ask for its key type when RSA and ECDSA are served side by side)."""
    proof = prove.served(use.services, sha, config, leaf=leaf)
    if not proof.ok:
        raise PostfixError(f"proof failed: {proof.message}")
    for name in _sni_names(use):
        proof = prove.served(use.tls_services[:1], sha, config, servername=name, leaf=leaf)
        if not proof.ok:
            raise PostfixError(f"proof failed: {proof.message}")


def _served_sni(use: tls_files.Usage, config: Config) -> dict[str, str | None]:
    """What each SNI name serves before the change (one probe each): the rollback proves
    it is served again. In SNI-only mode there is no staged file to read it from."""
    if not use.tls_services:
        return {}
    out: dict[str, str | None] = {}
    for name in _sni_names(use):
        result = probe(prove.target_for(use.tls_services[0], name),
                             timeout=config.probe.timeout)
        out[name] = prove.served_sha256(result)
    return out


def _why(exc: BaseException) -> str:
    """A failure in words: Postfix's own errors as they are, anything else (a bug, an
    unexpected OSError) with its type, so an alert never says just "1"."""
    if isinstance(exc, Error):
        return str(exc)
    return f"unexpected {type(exc).__name__}: {exc}"


def _instances(config: Config, postfix: Postfix,
               lineage: Lineage) -> list[tuple[Postfix, tls_files.Usage]]:
    """Every Postfix instance that uses the lineage, the primary first: with
    ``multi_instance_enable = yes`` (postmulti), each of ``multi_instance_directories``
    too. The primary's usage stands for all when none uses it (SKIPPED)."""
    primary = tls_files.usage(postfix, lineage, config.deploy.bundle_dir)
    found = [(postfix, primary)]
    for directory in primary.secondaries:
        other = Postfix(directory, (), config.postfix.probe_host, config.postfix.command_timeout)
        found.append((other, tls_files.usage(other, lineage, config.deploy.bundle_dir)))
    used = [(p, u) for p, u in found if u.mode is not tls_files.Mode.UNUSED]
    return used or found[:1]


def _reload(config: Config, postfix: Postfix,
            instances: list[tuple[Postfix, tls_files.Usage]]) -> None:
    """``postfix.reload_command`` once (it must cover every instance, e.g. ``postmulti -p
    reload``), else ``postfix -c DIR reload`` for each instance that uses the lineage."""
    if config.postfix.reload_command:
        postfix.reload()
        return
    for instance, _ in instances:
        instance.reload()


def _require_running(config_directory: Path, queue_directory: str) -> None:
    """Is the master process alive (``$queue_directory/pid/master.pid``)? Cheaper than
    ``postfix status`` (another process) and the same test."""
    pid_file = Path(queue_directory or "/var/spool/postfix") / "pid" / "master.pid"
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError) as exc:
        raise PostfixError(f"Postfix ({config_directory}) is not running "
                           f"({pid_file}: {getattr(exc, 'strerror', None) or exc}); nothing was "
                           "installed: start it, then run the hook again with --lineage") from exc


def _postmap(config: Config, spec: str) -> None:
    argv = ["postmap", "-F", "-c", str(config.postfix.config_directory), spec]
    res = run_on_pty(argv, config.postfix.command_timeout)
    if not res.ok:
        raise PostfixError(f"'{' '.join(argv)}' failed (exit {res.returncode})", res.output)


def _read_optional(path: Path) -> tuple[bytes, int] | None:
    try:
        return path.read_bytes(), os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return None


def protect_db(path: Path, mode: int, gid: int | None) -> None:
    """``postmap -F`` copies the key files (base64) into the table, and the table gets the
    source file's mode (often 0644): make it as private as a key (``fchmod`` on an
    ``O_NOFOLLOW`` descriptor). smtpd opens the table before it drops privileges."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if gid is not None:
            os.fchown(fd, -1, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _restore_sni(backup: dict[Path, tuple[bytes, int] | None], mode: int, gid: int | None) -> None:
    """Put each SNI table back as it was (it holds keys: written ``mode``, never wider)."""
    for path, saved in backup.items():
        if saved is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        else:
            files.atomic_write(path, saved[0], mode=saved[1] & mode, gid=gid)


@dataclass(frozen=True)
class _Before:
    """What the rollback puts back and proves: staged files (bytes, mode, group), SNI
    tables (filled as they are rebuilt), and what each SNI name served."""

    staged: dict[Path, files.Saved | None]
    sni: dict[Path, tuple[bytes, int] | None]
    sni_served: dict[str, str | None]

    def old_leaf(self) -> x509.Certificate | None:
        for path, saved in self.staged.items():
            if saved is not None and b"CERTIFICATE" in saved.data:
                with contextlib.suppress(BundleError):
                    return bundle_mod.parse_chain(saved.data, str(path))[0]
        return None


def _rollback(report: Report, reload: Callable[[], None], use: tls_files.Usage,
              old_sha: str | None,
              before: _Before, config: Config, why: str, clock: _Clock) -> Report:
    def failed(message: str) -> Report:
        return replace(report, outcome=Outcome.ROLLBACK_FAILED, message=message,
                       timings=clock.total())

    if use.mode is tls_files.Mode.IN_PLACE:
        return failed(f"{why}; Postfix reads certbot's files in place, so there is nothing to "
                      "roll back to: fix the lineage and reload Postfix now")
    gid = group_id(config)
    try:
        _restore_sni(before.sni, perms.key_mode(gid), gid)
        if use.staged and (old_sha is None or not files.restore(before.staged)):
            return failed(f"{why}; no previous bundle to restore at {use.bundle_path}")
        reload()
        proven = []
        if use.services and old_sha is not None:
            proof = prove.served(use.services, old_sha, config, leaf=before.old_leaf())
            if not proof.ok:
                raise PostfixError(f"proof failed: {proof.message}")
            proven.append(f"the previous certificate {old_sha[:16]} is served again on "
                          f"{len(use.services)} service(s)")
        unproven = []
        for name in _sni_names(use):
            sha = before.sni_served.get(name)
            if sha is None:
                unproven.append(name)
                continue
            proof = prove.served(use.tls_services[:1], sha, config, servername=name)
            if not proof.ok:
                raise PostfixError(f"proof failed: {proof.message}")
            proven.append(f"SNI {name} serves {sha[:16]} again (as before the deploy)")
    except Exception as exc:  # the report says it; the caller alerts
        return failed(f"{why}; rollback failed too: {_why(exc)}")
    clock.lap("rollback")
    restored = ", ".join(str(p) for p in [*before.staged, *before.sni]) or "nothing"
    said = "; ".join(proven) if proven else "nothing could be proven"
    if unproven:
        said += (f"; SNI {', '.join(unproven)} served no certificate before the deploy either, "
                 "so what it serves now is not proven")
    return replace(report, outcome=Outcome.ROLLED_BACK, timings=clock.total(),
                   message=f"{why}; rolled back ({restored} restored, Postfix reloaded): {said}")


def _staged_sha256(use: tls_files.Usage) -> str | None:
    for s in use.staged:
        if s.kind is tls_files.Kind.KEY:
            continue
        try:
            data = s.path.read_bytes()
            return bundle_mod.fingerprint(bundle_mod.parse_chain(data, str(s.path))[0])
        except (OSError, BundleError):
            return None
    return None


def write_record(state_dir: Path, report: Report) -> Path:
    """One JSON deploy record per run, written atomically, for the daemon to pick up."""
    records = state_dir / "deploys"
    files.ensure_private_dir(records, 0o755)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = records / f"{stamp}-{os.getpid()}-{report.lineage}.json"
    record = {"time": time.time(), **report.as_record()}
    files.atomic_write(path, json.dumps(record, indent=2).encode() + b"\n", mode=0o644)
    return path

