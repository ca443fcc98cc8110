"""The deploy record: one JSON file per run in ``<state_dir>/deploys/``, written
atomically, for the daemon to pick up (:mod:`daemon.renew_daemon.watch`)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from hook import files
from hook.pipeline.report import Report


def write_record(state_dir: Path, report: Report) -> Path:
    """One JSON deploy record per run, written atomically, for the daemon to pick up."""
    records = state_dir / "deploys"
    files.ensure_private_dir(records, 0o755)
    now = time.time()
    # sorted by name = oldest first, to the microsecond: two runs in one second (certbot's,
    # then one by hand) must not be ordered by their process ids
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
    path = records / f"{stamp}-{os.getpid()}-{report.lineage}.json"
    record = {"time": now, **report.as_record()}
    files.atomic_write(path, json.dumps(record, indent=2).encode() + b"\n", mode=0o644)
    return path
