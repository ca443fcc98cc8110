"""The deploy lock: runs serialize on ``<state_dir>/deploy.lock``; a second hook waits
for the first instead of interleaving, and a lock held too long is an error, not a hang."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from hook import files
from hook.errors import Error


class DeployError(Error):
    """The pipeline could not run at all (e.g. the lock is held for too long)."""


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
