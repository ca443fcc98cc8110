"""An overall deadline for one run of the deploy hook (``deploy.hook_deadline``).

certbot waits for its deploy hooks, one lineage after the other: a hook that hangs holds
every later renewal hostage. Each step of ours has its own bound (Postfix commands,
probes, DNS), but their sum, a lock held by a stuck run, or an unforeseen wait could
still add up; this is the one bound over all of them.

When the deadline passes before the first write, :class:`DeadlinePassed` is raised
wherever the hook is (a ``SIGALRM`` handler, main thread) and the run ends with nothing
changed. From the first write on (:meth:`Watch.shielded`, entered by the pipeline) it is
raised only inside the reload and the proof of the new files (:meth:`Watch.interruptible`),
whose failure the rollback handles; anywhere else (the rollback above all) the run goes on
to its end and its report. The rollback then gets ``grace`` seconds (sized from
``postfix.command_timeout`` and ``deploy.proof_timeout``), and the record and the alert
a fresh ``alert_grace`` of their own; if even those run out, the process writes one line
to stderr and exits at once with ``exit_code``.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType

from hook.errors import Error

GRACE = 120.0
"""The least time after the deadline for the rollback (reload(s) + proofs)."""
ALERT_GRACE = 75.0
"""Seconds for the record and the alert once the outcome is known: the mail and the
webhook (30 s each, :func:`hook.alert.send`) and a margin; ``postconf`` (the host name)
is added per configuration."""


def grace_for(command_timeout: float, proof_timeout: float) -> float:
    """The rollback after the deadline: its reload and a second one (killed after
    ``command_timeout`` each), the old leaf's proof and an SNI name's (``proof_timeout``
    each), and a margin; never less than :data:`GRACE`."""
    return max(GRACE, 2 * command_timeout + 2 * proof_timeout + 30)


class DeadlinePassed(Error):
    """The hook ran longer than ``deploy.hook_deadline``."""


@dataclass
class Watch:
    seconds: float
    grace: float
    alert_grace: float = ALERT_GRACE
    passed: bool = False
    """The deadline passed."""
    settled: bool = False
    wrote: bool = False
    """A write started (:meth:`shielded`): the deadline no longer raises outside
    :meth:`interruptible`, and "nothing was changed" is no longer true."""
    window: bool = False

    @property
    def message(self) -> str:
        return (f"the hook ran for more than {self.seconds:g} s (deploy.hook_deadline); "
                "stopped so that certbot can go on")

    @contextlib.contextmanager
    def shielded(self) -> Iterator[None]:
        """From the first write to the end of the run: the deadline does not interrupt
        (a rollback cut half way would leave files unrestored or unproven)."""
        self.wrote = True
        yield

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """Inside the shield, a step whose failure is rolled back (the reload and the proof
        of the new files): the deadline raises there, or at once if it already passed."""
        if self.passed:
            raise DeadlinePassed(self.message)
        self.window = True
        try:
            yield
        finally:
            self.window = False

    def settle(self) -> None:
        """The outcome is known: the record and the alert get a fresh ``alert_grace``,
        never interrupted half way by :class:`DeadlinePassed`."""
        if not self.settled:
            self.settled = True
            signal.setitimer(signal.ITIMER_REAL, self.alert_grace)


@contextlib.contextmanager
def deadline(seconds: float, *, exit_code: int, grace: float = GRACE,
             alert_grace: float = ALERT_GRACE,
             what: str = "postfix-deploy-hook") -> Iterator[Watch]:
    """Raise :class:`DeadlinePassed` once ``seconds`` have passed (see :class:`Watch` for
    where); exit with ``exit_code`` if the run is still going ``grace`` seconds later, or
    ``alert_grace`` seconds after :meth:`Watch.settle`."""
    watch = Watch(seconds, grace, alert_grace)

    def fire(_signum: int, _frame: FrameType | None) -> None:
        if not (watch.passed or watch.settled):
            watch.passed = True
            signal.setitimer(signal.ITIMER_REAL, grace)
            if watch.window or not watch.wrote:
                raise DeadlinePassed(watch.message)
            return  # shielded: the run finishes its rollback, then exits with exit_code
        os.write(2, f"{what}: still running past its deadline of {seconds:g} s "
                    f"(deploy.hook_deadline) + {grace:g} s for the rollback or "
                    f"{alert_grace:g} s for the record and the alert: exiting now; "
                    "check 'renew-check' and the Postfix log\n".encode())
        os._exit(exit_code)

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield watch
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
