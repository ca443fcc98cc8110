"""An overall deadline for one run of the deploy hook (``deploy.hook_deadline``).

certbot waits for its deploy hooks, one lineage after the other: a hook that hangs holds
every later renewal hostage. Each step of ours has its own bound (Postfix commands,
probes, DNS), but their sum, a lock held by a stuck run, or an unforeseen wait could
still add up; this is the one bound over all of them.

When the deadline passes, :class:`DeadlinePassed` is raised wherever the hook is (a
``SIGALRM`` handler, main thread). Before the first write it ends the run with nothing
changed; after it, the pipeline's "any failure after a write is rolled back" path puts
the previous files back, reloads and proves. The run then gets :data:`GRACE` more
seconds for that rollback, the record and the alert; if even those hang, the process
writes one line to stderr and exits at once with ``exit_code``.
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
"""Seconds after the deadline for the rollback (reload + proof), the record and the alert."""


class DeadlinePassed(Error):
    """The hook ran longer than ``deploy.hook_deadline``."""


@dataclass
class Watch:
    seconds: float
    grace: float
    passed: bool = False
    """The deadline passed (and :class:`DeadlinePassed` was raised)."""
    settled: bool = False

    def settle(self) -> None:
        """The outcome is known: from now on only the grace time applies (recording and
        alerting are never interrupted half way by :class:`DeadlinePassed`)."""
        if not (self.passed or self.settled):
            self.settled = True
            signal.setitimer(signal.ITIMER_REAL, self.grace)


@contextlib.contextmanager
def deadline(seconds: float, *, exit_code: int, grace: float = GRACE,
             what: str = "postfix-deploy-hook") -> Iterator[Watch]:
    """Raise :class:`DeadlinePassed` once ``seconds`` have passed; exit with ``exit_code``
    if the run is still going ``grace`` seconds later."""
    watch = Watch(seconds, grace)

    def fire(_signum: int, _frame: FrameType | None) -> None:
        if not (watch.passed or watch.settled):
            watch.passed = True
            signal.setitimer(signal.ITIMER_REAL, grace)
            raise DeadlinePassed(f"the hook ran for more than {seconds:g} s "
                                 "(deploy.hook_deadline); stopped so that certbot can go on")
        os.write(2, f"{what}: still running {grace:g} s after its deadline of {seconds:g} s "
                    "(deploy.hook_deadline), during the rollback or the alert: exiting now; "
                    "check 'renew-check' and the Postfix log\n".encode())
        os._exit(exit_code)

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield watch
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
