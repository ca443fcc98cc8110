"""Reload: ``postfix.reload_command`` once (it must cover every instance, e.g.
``postmulti -p reload``), else ``postfix -c DIR reload`` for each instance that uses the
lineage. A reload that hangs is killed after ``postfix.command_timeout``."""

from __future__ import annotations

from hook.config import Config
from hook.pipeline import messages
from hook.pipeline.discover import Discovery
from hook.pipeline.report import StageFailure


def reload_instances(config: Config, found: Discovery) -> None:
    """Reload; raises :class:`~hook.errors.PostfixError` (the rollback's reload)."""
    if config.postfix.reload_command:
        found.postfix.reload()
        return
    for instance, _ in found.instances:
        instance.reload()


def reload(config: Config, found: Discovery) -> StageFailure | None:
    """The reload stage: a failure is returned for the rollback, never raised."""
    try:
        reload_instances(config, found)
    except Exception as exc:  # every failure after a write is rolled back
        return StageFailure("reload", messages.why(exc))
    return None
