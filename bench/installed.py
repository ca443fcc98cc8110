"""What an admin runs: the project installed (not editable) into a fresh venv, as
``scripts/install.sh`` does under /opt, with its modules compiled by pip.

The development venv (``scripts/setup.sh``) is an editable install: its path finder
(imported by ``site`` at every start) costs about 10 ms per process, and with
``PYTHONDONTWRITEBYTECODE`` set our own modules are compiled from source on every run.
Process-per-run figures (``renew-check probe``, the deploy hook) are measured here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def installed_venv(*, use_dev: bool = False) -> Iterator[tuple[Path, str]]:
    """The ``bin`` directory of a temporary non-editable install, and a label saying
    what it is; ``use_dev``: this venv's instead (no install)."""
    if use_dev:
        yield Path(sys.executable).parent, "development venv (editable install)"
        return
    base = Path(tempfile.mkdtemp(prefix="certwatch-bench-venv-"))
    build = Path(tempfile.mkdtemp(prefix="certwatch-bench-src-"))
    try:
        print("bench: installing the project into a temporary venv (not editable, as "
              "install.sh does)", file=sys.stderr)
        venv = base / "venv"
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
        # A copy of the tree: pip's build would otherwise leave build/ in the checkout.
        src = build / "src"
        shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
            ".venv", ".git", "__pycache__", "*.egg-info", "build", ".mypy_cache",
            ".ruff_cache", ".pytest_cache"))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                        str(src)], check=True, env=env, stdout=subprocess.DEVNULL)
        yield venv / "bin", "installed venv (pip install ., not editable, compiled)"
    finally:
        shutil.rmtree(build, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)
