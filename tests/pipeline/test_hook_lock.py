"""The deploy lock: runs serialize, and a lock held too long is an error, not a hang."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from hook.pipeline import DeployError, locked


def test_second_holder_waits_then_gets_the_lock(tmp_path: Path) -> None:
    """A second ``locked`` blocks until the first is released."""
    order: list[str] = []
    with locked(tmp_path):
        def second() -> None:
            with locked(tmp_path):
                order.append("second")
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        order.append("first done")
    t.join(5)
    assert order == ["first done", "second"]


def test_lock_held_too_long_raises_with_the_lock_path(tmp_path: Path) -> None:
    """Waiting longer than the limit raises DeployError naming the lock file."""
    with locked(tmp_path), pytest.raises(DeployError, match=r"deploy\.lock: another deploy"), \
            locked(tmp_path, wait=0.2):
        pass
