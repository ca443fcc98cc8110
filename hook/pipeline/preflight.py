"""Preflight: every Postfix instance that uses the lineage passes ``postfix check`` and
is running, before anything changes (a stopped Postfix cannot prove anything)."""

from __future__ import annotations

from hook.certs.lineage import Lineage
from hook.errors import PostfixError
from hook.pipeline import messages
from hook.pipeline.discover import Discovery
from hook.pipeline.report import Clock, Ending, Outcome


def preflight(found: Discovery, lineage: Lineage, clock: Clock, *,
              dry_run: bool) -> Ending | None:
    """None when Postfix is ready; else the ending (nothing was changed). Laps ``check``
    (``postfix check``; a dry run writes nothing, not even the queue directories that
    ``postfix check`` creates, so it only parses with ``postconf``) and ``status``
    (``master.pid``)."""
    try:
        for instance, _ in found.instances:
            instance.check_readonly() if dry_run else instance.check()
    except PostfixError as exc:
        return _not_ready(str(exc), found, lineage)
    clock.lap("check")
    try:
        for instance, used in found.instances:
            instance.require_running(used.queue_directory)
    except PostfixError as exc:
        return _not_ready(messages.postfix_stopped(exc), found, lineage)
    clock.lap("status")
    return None


def _not_ready(reason: str, found: Discovery, lineage: Lineage) -> Ending:
    return Ending(Outcome.REFUSED, messages.not_ready(reason, found.use, lineage))
