"""Every sentence the deploy pipeline says to an admin, built from typed data.

The stages decide; this module words. A report's message, its warnings and notes, the
``would:`` steps of a dry run and the refusal text of :func:`hook.pipeline.validate_lineage`
all come from here, so one place shows what an admin reads and the flow stays free of
prose. Nothing here touches a file, a socket or a process.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from hook import files
from hook.certs.bundle import Bundle
from hook.certs.lineage import Lineage, previous_version
from hook.certs.perms import Fix
from hook.certs.trust import AnchorPlan
from hook.errors import Error
from hook.postfix.instance import Service
from hook.postfix.tls_files import Kind, Mode, SniMap, Staged, Usage
from hook.verdict import Problem


def why(exc: BaseException) -> str:
    """A failure in words: Postfix's own errors as they are, anything else (a bug, an
    unexpected OSError) with its type, so an alert never says just "1"."""
    if isinstance(exc, Error):
        return str(exc)
    return f"unexpected {type(exc).__name__}: {exc}"


def _more(problems: Sequence[object]) -> str:
    return f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""


def _paths(paths: Iterable[Path]) -> str:
    return ", ".join(str(p) for p in paths)


# ----------------------------------------------------------------------------- discover
def postfix_unreadable(main_cf: Path, exc: Error) -> str:
    return f"cannot read the Postfix configuration ({main_cf}): {exc}"


def not_used(config_directory: Path, lineage: Lineage) -> str:
    return f"Postfix ({config_directory}) does not use lineage {lineage.name}; nothing to do"


# ----------------------------------------------------------------------------- validate
def key_exposed(path: Path, mode: int) -> str:
    return f"{path}: private key is readable by other users (mode {mode:04o}); it may have been copied"


def key_exposed_fix(want: int, lineage: Lineage) -> str:
    return (f"the hook tightens it to {want:04o}; re-issue with a new key (certbot renew "
            f"--cert-name {lineage.name} --force-renewal) before deploying")


NAME_HINT = ("; if Postfix presents other names, set deploy.require_myhostname = false and "
             "list them in deploy.names")
"""Appended to a name mismatch's fix when Postfix presents the lineage by default."""


def key_changed(lineage: Lineage) -> str:
    return (f"{lineage.privkey}: the private key changed and {lineage.renewal_conf()} "
            "has no 'reuse_key = True': DANE TLSA '3 1 1' records for the old key "
            "stop matching; publish the new TLSA record first, or set reuse_key")


def split_files(staged: Sequence[Staged], lineage: Lineage) -> str:
    return (f"{_paths(s.path for s in staged)}: separate certificate and key files "
            "cannot be replaced in one atomic step (an smtpd starting between the two renames "
            "loads a mixed pair); this Postfix reads smtpd_tls_chain_files: run 'renew-check "
            f"adopt {lineage.live}' to switch to one key+chain bundle")


def unchanged(use: Usage, lineage: Lineage) -> str:
    """What a refusal leaves served, and in place what to do at once."""
    if use.mode is Mode.IN_PLACE:
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
    if use.mode is Mode.STAGED:
        return f"; {_paths(s.path for s in use.staged)} unchanged, Postfix keeps serving it"
    return "; the SNI table is unchanged"


def validation_failed(exc: Error) -> str:
    return f"refused: {exc}"


def refused(problems: Sequence[Problem], use: Usage, lineage: Lineage) -> str:
    return f"refused: {problems[0]}{unchanged(use, lineage)}{_more(problems)}"


# ----------------------------------------------------------------------------- DANE gate
def submission_only(lineage: Lineage, services: Sequence[Service]) -> str:
    return (f"DANE: Postfix presents {lineage.name} only on submission services "
            f"({', '.join(s.label for s in services)}), not on port 25; no TLSA lookup")


def dane_state_unsaved(path: Path, exc: OSError) -> str:
    return f"{path}: cannot record where DANE is in use: {exc.strerror or exc}"


def dane_unchanged(use: Usage, lineage: Lineage) -> str:
    if use.mode is Mode.IN_PLACE:
        return ("; Postfix reads certbot's files in place, so the old pair cannot be kept: "
                "every smtpd process Postfix starts from now on (no reload needed) already "
                "presents the new certificate, and DANE senders defer mail to it. ACT NOW: "
                "publish the records above, then run 'renew-check adopt "
                f"{lineage.live}' so that from the next renewal on the hook can keep the old "
                "certificate served until they match")
    return unchanged(use, lineage)


def refused_by_dane_gate(problems: Sequence[Problem], use: Usage, lineage: Lineage) -> str:
    return f"refused by the DANE gate: {problems[0]}{dane_unchanged(use, lineage)}{_more(problems)}"


def dane_summary(summary: str) -> str:
    """``; DANE ok: mail.example.com match`` after a report's message ("" when off)."""
    return f"; {summary}" if summary else ""


# ----------------------------------------------------------------------------- preflight
def postfix_stopped(exc: Error) -> str:
    return f"{exc}; nothing was installed: start it, then run the hook again with --lineage"


def not_ready(reason: str, use: Usage, lineage: Lineage) -> str:
    """A refusal caused by Postfix (not running, ``postfix check`` failing): the lineage is
    fine and nothing was written; say which side to fix."""
    where = ("; Postfix reads the lineage's files in place, so new smtpd processes may "
             "already load them" if use.mode is Mode.IN_PLACE else "")
    return (f"refused before any change: {reason}; the lineage is not at fault, Postfix is: "
            f"nothing was written{where}. Fix Postfix, then run 'postfix-deploy-hook "
            f"--lineage {lineage.live}'")


PREFLIGHT_DRY_RUN = ("the dry run parsed the Postfix configuration with 'postconf' but did "
                     "not run 'postfix check' (it creates missing queue directories); the "
                     "real run runs it before any change")


# ----------------------------------------------------------------------------- plan
def fix_step(fix: Fix) -> str:
    return f"fix {fix.describe()}"


def write_step(staged: Staged, new: Bundle, mode: int, group: str | None) -> str:
    what = {Kind.CHAIN: f"key + {len(new.chain)} certificates",
            Kind.CERT: f"{len(new.chain)} certificates", Kind.KEY: "private key"}[staged.kind]
    owner = f" group {group}" if group is not None else ""
    return (f"write {staged.path} (mode {mode:04o}{owner}, {what}), keeping the current "
            f"one as {staged.path.name}{files.PREV_SUFFIX}")


def postmap_step(sni: SniMap) -> str:
    return f"postmap -F {sni.spec} (SNI {', '.join(sni.names)})"


def reload_step(argv: Sequence[str]) -> str:
    return " ".join(argv)


def prove_step(service: Service, sha256: str) -> str:
    return f"prove {service.label} serves leaf sha256 {sha256}"


def prove_sni_step(name: str, sha256: str) -> str:
    return f"prove SNI {name} serves leaf sha256 {sha256}"


def anchors_step(plan: AnchorPlan) -> str:
    return plan.describe()


def would_deploy(new: Bundle, lineage: Lineage, use: Usage, dane: str) -> str:
    return (f"would deploy {new.leaf_sha256[:16]} for {lineage.name} ({use.mode.value}); the "
            f"real run's checks pass{dane_summary(dane)}")


# ----------------------------------------------------------------------------- prove
def proof_failed(message: str) -> str:
    return f"proof failed: {message}"


# ----------------------------------------------------------------------------- rollback
def install_failed(reason: str) -> str:
    return f"refused: installing failed, previous files restored: {reason}"


def install_and_restore_failed(reason: str, again: str, paths: Iterable[Path]) -> str:
    return (f"installing failed ({reason}) and restoring the previous files failed too "
            f"({again}): check {_paths(paths)}")


def in_place_no_rollback(reason: str) -> str:
    return (f"{reason}; Postfix reads certbot's files in place, so there is nothing to "
            "roll back to: fix the lineage and reload Postfix now")


def no_previous_bundle(reason: str, bundle: Path) -> str:
    return f"{reason}; no previous bundle to restore at {bundle}"


def rollback_failed(reason: str, again: str) -> str:
    return f"{reason}; rollback failed too: {again}"


def previous_served(old_sha256: str, services: int) -> str:
    return f"the previous certificate {old_sha256[:16]} is served again on {services} service(s)"


def sni_served_again(name: str, sha256: str) -> str:
    return f"SNI {name} serves {sha256[:16]} again (as before the deploy)"


def rolled_back(reason: str, restored: Sequence[Path], proven: Sequence[str],
                unproven: Sequence[str]) -> str:
    said = "; ".join(proven) if proven else "nothing could be proven"
    if unproven:
        said += (f"; SNI {', '.join(unproven)} served no certificate before the deploy either, "
                 "so what it serves now is not proven")
    return (f"{reason}; rolled back ({_paths(restored) or 'nothing'} restored, Postfix "
            f"reloaded): {said}")


# ----------------------------------------------------------------------------- trust anchors
def anchors_failed(detail: str) -> str:
    return f"trust anchors: {detail}"


# ----------------------------------------------------------------------------- deployed
def deployed(new: Bundle, lineage: Lineage, use: Usage, dane: str) -> str:
    served = ", ".join((*(s.label for s in use.services),
                        *(f"SNI {n}" for m in use.sni_maps for n in m.names)))
    return (f"deployed {new.leaf_sha256[:16]} for {lineage.name}; served on "
            f"{served or 'no TLS service'}{dane_summary(dane)}")
