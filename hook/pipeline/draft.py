"""The stages' results so far: :class:`Draft` builds the :class:`~hook.pipeline.report.Report`
of whichever ending came, so every way out of :func:`hook.pipeline.deploy.run` reports
the same facts."""

from __future__ import annotations

from dataclasses import dataclass, replace

from hook.pipeline.dane_gate import DaneGate
from hook.pipeline.discover import Discovery
from hook.pipeline.report import Clock, Ending, Report
from hook.pipeline.validate import Validation


@dataclass(frozen=True)
class Draft:
    """The stages' results so far; any ending's report is built from them."""

    lineage: str
    dry_run: bool
    found: Discovery | None = None
    checked: Validation | None = None
    gate: DaneGate | None = None
    steps: tuple[str, ...] = ()

    def discovered(self, found: Discovery) -> Draft:
        return replace(self, found=found)

    def checked_by(self, checked: Validation, gate: DaneGate) -> Draft:
        return replace(self, checked=checked, gate=gate)

    def planned(self, steps: tuple[str, ...]) -> Draft:
        return replace(self, steps=steps)

    def ended(self, ending: Ending, clock: Clock) -> Report:
        found, checked, gate = self.found, self.checked, self.gate
        read = checked is not None and checked.error is None
        warnings = checked.warnings if checked is not None else ()
        if gate is not None and checked is not None and gate.rewords_key_change:
            warnings = tuple(w for w in warnings if w != checked.key_warning)
        return Report(
            ending.outcome, self.lineage, ending.message, dry_run=self.dry_run,
            mode=found.use.mode.value if found else "",
            bundle=str(found.use.bundle_path) if found else None,
            services=tuple(s.label for s in found.use.services) if found else (),
            old_sha256=found.served_sha256 if found and read else None,
            new_sha256=checked.bundle.leaf_sha256 if checked and checked.bundle else None,
            steps=self.steps, timings=clock.timings(), problems=ending.problems,
            warnings=(*warnings, *(gate.warnings if gate else ()), *ending.warnings),
            notes=(*(gate.notes if gate else ()), *ending.notes), dane=gate.result if gate else None)
