"""The deploy pipeline, one code path for the hook and for ``--dry-run``.

A module per stage (``discover``, ``validate``, ``dane_gate``, ``preflight``, ``plan``,
``apply``, ``reload``, ``prove``, ``rollback``, ``anchors``), the flow in
:func:`hook.pipeline.deploy.run`, the sentences in ``messages``, the results in
``report`` (gathered by ``draft``), the lock and the deploy record in ``lock`` and ``record``.

Front ends (``postfix-deploy-hook``, ``renew-check``, ``renew-daemon``, the benchmarks)
import only the names below, never a submodule.
"""

from hook.pipeline.deploy import Guard, run
from hook.pipeline.lock import DeployError, locked
from hook.pipeline.prove import Proof, served, target_for
from hook.pipeline.record import write_record
from hook.pipeline.report import Outcome, Report
from hook.pipeline.validate import Validation, group_id, validate_lineage

__all__ = [
    "DeployError",
    "Guard",
    "Outcome",
    "Proof",
    "Report",
    "Validation",
    "group_id",
    "locked",
    "run",
    "served",
    "target_for",
    "validate_lineage",
    "write_record",
]
