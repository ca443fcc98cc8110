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
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = records / f"{stamp}-{os.getpid()}-{report.lineage}.json"
    record = {"time": time.time(), **report.as_record()}
    files.atomic_write(path, json.dumps(record, indent=2).encode() + b"\n", mode=0o644)
    return path
