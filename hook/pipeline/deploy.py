"""The deploy pipeline's flow: :func:`run` calls the stages in order and decides.

::

    discover ─▶ validate ─▶ DANE gate ─▶ preflight ─▶ plan ─▶ apply ─▶ reload ─▶ prove
                                                             ─▶ (rollback) ─▶ trust anchors

Each stage lives in its own module and returns data; a stage that ends the run returns
an :class:`~hook.pipeline.report.Ending`, a failure after the first write a
:class:`~hook.pipeline.report.StageFailure` that the rollback turns into one. The sentences
are :mod:`hook.pipeline.messages`'.

``--dry-run`` stops after ``plan``: nothing is written, reloaded or imported, and the
report says what the real run would do and whether it would succeed. In place (Postfix
reads certbot's ``live/``) nothing can be held back, since new smtpd processes load
renewed files without a reload: a refusal is ``refused_in_place`` (exit 7, act now), not
``refused`` (exit 3, old certificate still served). The private key never enters a
report or a log.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol

from hook.certs.lineage import Lineage
from hook.config import Config
from hook.pipeline import messages
from hook.pipeline.anchors import import_anchors, plan_anchors
from hook.pipeline.apply import apply
from hook.pipeline.dane_gate import cleared, dane_gate
from hook.pipeline.discover import discover, not_used
from hook.pipeline.draft import Draft
from hook.pipeline.plan import plan
from hook.pipeline.preflight import preflight
from hook.pipeline.prove import prove_new
from hook.pipeline.reload import reload
from hook.pipeline.report import Clock, Ending, Outcome, Report, StageFailure
from hook.pipeline.rollback import rollback
from hook.pipeline.validate import tighten_key, validate


class Guard(Protocol):
    """The front end's overall deadline, as the pipeline sees it (it imports no front end):
    :meth:`shielded` from the first write to the end of the run, where the deadline must
    not interrupt; :meth:`interruptible` inside it, around a step whose failure is rolled
    back, where it may (and raises at once if it already passed)."""

    def shielded(self) -> AbstractContextManager[None]: ...
    def interruptible(self) -> AbstractContextManager[None]: ...


class _Unguarded:
    def shielded(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()

    def interruptible(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()


def _interruptible(guard: Guard, stage: str,
                   step: Callable[[], StageFailure | None]) -> StageFailure | None:
    """``step`` with the deadline allowed to stop it: its passing is that stage's failure."""
    try:
        with guard.interruptible():
            return step()
    except Exception as exc:  # the deadline (or anything else): rolled back
        return StageFailure(stage, messages.why(exc))


def run(config: Config, lineage: Lineage, *, dry_run: bool = False,
        guard: Guard | None = None) -> Report:
    """Run the whole pipeline for ``lineage``; never raises for a bad bundle or Postfix.
    From the first write on, ``guard`` (the front end's deadline) is shielded off except
    while the new files are reloaded and proven."""
    clock = Clock()
    draft = Draft(lineage.name, dry_run)

    found = discover(config, lineage)
    clock.lap("discover")
    if isinstance(found, Ending):  # the Postfix configuration cannot be read
        return draft.ended(found, clock)
    draft = draft.discovered(found)
    if found.unused:
        return draft.ended(not_used(config, lineage), clock)

    # Refusals before any change: the lineage's files, then the TLSA records.
    checked = validate(config, lineage, found)
    clock.lap("validate")
    gate = dane_gate(config, lineage, found.use, checked, record=not dry_run)
    clock.lap("dane_gate")
    draft = draft.checked_by(checked, gate)
    new = cleared(checked, gate, found, lineage)
    if isinstance(new, Ending):
        tighten_key(lineage, checked, dry_run=dry_run)
        return draft.ended(new, clock)

    stopped = preflight(found, lineage, clock, dry_run=dry_run)
    if stopped is not None:
        return draft.ended(stopped, clock)

    anchors = plan_anchors(config, lineage, new.chain)
    draft = draft.planned(plan(config, found, new, checked, anchors))
    if dry_run:
        return draft.ended(Ending(Outcome.WOULD_DEPLOY, messages.would_deploy(
            new, lineage, found.use, gate.summary), notes=(messages.PREFLIGHT_DRY_RUN,)), clock)

    # From the first write on, ANY failure puts the previous files back, reloads and
    # proves: never a bare exit with unproven files installed.
    guard = guard or _Unguarded()
    with guard.shielded():
        applied = apply(config, lineage, found, new, checked)
        clock.lap("apply")
        failure = applied.failure or _interruptible(guard, "reload",
                                                    lambda: reload(config, found))
        clock.lap("reload")
        failure = failure or _interruptible(guard, "prove", lambda: prove_new(
            config, found.use, new.leaf_sha256, new.leaf))
        clock.lap("prove")
        if failure is not None:
            ending = rollback(config, found, applied, failure)
            clock.lap("rollback")
        else:
            warnings: tuple[str, ...] = ()
            if anchors is not None:
                warnings = import_anchors(config, lineage, anchors)
                clock.lap("trust")
            ending = Ending(Outcome.DEPLOYED, messages.deployed(new, lineage, found.use,
                                                                gate.summary), warnings=warnings)
        return draft.ended(ending, clock)
