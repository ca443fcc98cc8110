"""Rollback, on ANY failure once a file changed (a Postfix command, a reload killed
after ``postfix.command_timeout``, an exception in the hook): put the previous staged
files and SNI tables back; if Postfix was reloaded, reload again and prove the old leaf
(by key type) and what each SNI name served before.

In place (Postfix reads certbot's ``live/``) there is nothing to roll back to: the
outcome is ``rollback_failed`` and the message says to act now.
"""

from __future__ import annotations

from hook import files
from hook.certs import perms
from hook.config import Config
from hook.errors import PostfixError
from hook.pipeline import messages, prove
from hook.pipeline.apply import Applied, restore_sni
from hook.pipeline.discover import Discovery
from hook.pipeline.reload import reload_instances
from hook.pipeline.report import Ending, Outcome, StageFailure, refusal_outcome
from hook.pipeline.validate import group_id
from hook.postfix.tls_files import Mode


def rollback(config: Config, found: Discovery, applied: Applied, failure: StageFailure) -> Ending:
    """Put back what :func:`~hook.pipeline.apply.apply` changed; the ending says what is
    served now. Never raises: a failing rollback is the ``rollback_failed`` outcome."""
    if failure.stage == "apply":
        return _unwrite(config, found, applied, failure.reason)
    return _roll_back(config, found, applied, failure.reason)


def _unwrite(config: Config, found: Discovery, applied: Applied, reason: str) -> Ending:
    """Writing failed before any reload: restore the files, no reload needed."""
    try:
        gid = group_id(config)
        restore_sni(applied.before.sni, perms.key_mode(gid), gid)
        files.restore(applied.before.staged)
    except Exception as again:  # reported, not raised
        return Ending(Outcome.ROLLBACK_FAILED, messages.install_and_restore_failed(
            reason, messages.why(again), applied.before.paths))
    return Ending(refusal_outcome(found.use), messages.install_failed(reason))


def _roll_back(config: Config, found: Discovery, applied: Applied, reason: str) -> Ending:
    use, before, old_sha = found.use, applied.before, found.served_sha256
    if use.mode is Mode.IN_PLACE:
        return Ending(Outcome.ROLLBACK_FAILED, messages.in_place_no_rollback(reason))
    proven: list[str] = []
    unproven: list[str] = []
    try:
        gid = group_id(config)
        restore_sni(before.sni, perms.key_mode(gid), gid)
        if use.staged and (old_sha is None or not files.restore(before.staged)):
            return Ending(Outcome.ROLLBACK_FAILED,
                          messages.no_previous_bundle(reason, use.bundle_path))
        reload_instances(config, found)
        if use.services and old_sha is not None:
            _require(prove.served(use.services, old_sha, config, leaf=before.old_leaf()))
            proven.append(messages.previous_served(old_sha, len(use.services)))
        for name in prove.sni_names(use):
            sha = before.sni_served.get(name)
            if sha is None:
                unproven.append(name)
                continue
            _require(prove.served(use.tls_services[:1], sha, config, servername=name))
            proven.append(messages.sni_served_again(name, sha))
    except Exception as exc:  # the report says it; the caller alerts
        return Ending(Outcome.ROLLBACK_FAILED, messages.rollback_failed(reason, messages.why(exc)))
    return Ending(Outcome.ROLLED_BACK, messages.rolled_back(reason, before.paths, proven, unproven))


def _require(proof: prove.Proof) -> None:
    if not proof.ok:
        raise PostfixError(messages.proof_failed(proof.message))
