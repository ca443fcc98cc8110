"""The deploy pipeline, one code path for the hook and for ``--dry-run``.

::

    discover ─▶ validate ─▶ plan ─▶ apply ─▶ reload ─▶ prove ─▶ (rollback) ─▶ record

``--dry-run`` stops after ``plan``: nothing is written, reloaded or imported, and the
report says what the real run would do. Every stage returns data; the pipeline decides.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from hook import bundle as bundle_mod
from hook import discover, install, prove
from hook.config import Config
from hook.errors import BundleError, PostfixError
from hook.lineage import Lineage
from hook.postfix import Postfix


class Outcome(StrEnum):
    DEPLOYED = "deployed"
    WOULD_DEPLOY = "would_deploy"
    SKIPPED = "skipped"
    REFUSED = "refused"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"


@dataclass(frozen=True)
class Report:
    """What one run did (or, with ``dry_run``, would do)."""

    outcome: Outcome
    lineage: str
    message: str
    mode: str = ""
    dry_run: bool = False
    old_sha256: str | None = None
    new_sha256: str | None = None
    bundle: str | None = None
    steps: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)

    def as_record(self) -> dict[str, object]:
        data = asdict(self)
        data["outcome"] = self.outcome.value
        return data


def postfix_for(config: Config) -> Postfix:
    return Postfix(config.postfix.config_directory, config.postfix.reload_command,
                   config.postfix.probe_host)


@contextlib.contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    """Serialize runs: a second hook waits for the first instead of interleaving."""
    install.ensure_private_dir(state_dir, 0o755)
    fd = os.open(state_dir / "deploy.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def run(config: Config, lineage: Lineage, *, dry_run: bool = False,
        log: Callable[..., object] | None = None) -> Report:
    """Run the whole pipeline for ``lineage``; never raises for a bad bundle or Postfix."""
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    postfix = postfix_for(config)

    def lap(name: str, since: float) -> float:
        now = time.monotonic()
        timings[name] = round(now - since, 4)
        return now

    t = t0
    try:
        use = discover.usage(postfix, lineage, config.deploy.bundle_dir)
    except PostfixError as exc:
        return Report(Outcome.REFUSED, lineage.name, f"cannot read the Postfix configuration: {exc}",
                      dry_run=dry_run)
    t = lap("discover", t)
    labels = tuple(s.label for s in use.services)
    if use.mode is discover.Mode.UNUSED:
        return Report(Outcome.SKIPPED, lineage.name,
                      f"Postfix ({config.postfix.config_directory}) does not use lineage "
                      f"{lineage.name}; nothing to do", mode=use.mode.value, dry_run=dry_run,
                      timings=timings)

    try:
        new = bundle_mod.pair(lineage.read(lineage.privkey), str(lineage.privkey),
                              lineage.read(lineage.fullchain), str(lineage.fullchain))
    except BundleError as exc:
        extra = ("; Postfix reads these files directly, so it would load the broken pair on "
                 "its next restart or reload" if use.mode is discover.Mode.IN_PLACE else
                 f"; {use.bundle_path} is unchanged and Postfix keeps serving it")
        return Report(Outcome.REFUSED, lineage.name, f"refused: {exc}{extra}",
                      mode=use.mode.value, dry_run=dry_run, services=labels, timings=timings)
    t = lap("validate", t)

    old_sha = _current_sha256(use.bundle_path) if use.mode is discover.Mode.STAGED else None
    steps: list[str] = []
    if use.mode is discover.Mode.STAGED:
        steps.append(f"write {use.bundle_path} (mode 0600, key + {len(new.chain)} certificates), "
                     f"keeping the current one as {use.bundle_path.name}{install.PREV_SUFFIX}")
    steps.append(f"postfix -c {config.postfix.config_directory} check")
    steps.append(" ".join(postfix.reload_command) or
                 f"postfix -c {config.postfix.config_directory} reload")
    steps.extend(f"prove {label} serves leaf sha256 {new.leaf_sha256}" for label in labels)
    report = Report(Outcome.WOULD_DEPLOY, lineage.name, "", mode=use.mode.value, dry_run=dry_run,
                    old_sha256=old_sha, new_sha256=new.leaf_sha256, bundle=str(use.bundle_path),
                    steps=tuple(steps), services=labels, timings=timings)
    if dry_run:
        try:
            postfix.check()
        except PostfixError as exc:
            return _replace(report, Outcome.REFUSED, f"the real run would fail: {exc}")
        return _replace(report, Outcome.WOULD_DEPLOY,
                        f"would deploy {new.leaf_sha256[:16]} for {lineage.name}")

    staged = use.mode is discover.Mode.STAGED
    if staged:
        install.ensure_private_dir(use.bundle_path.parent)
        install.atomic_write(use.bundle_path, new.postfix_chain_file(), keep_previous=True)
        t = lap("apply", t)
    try:
        postfix.check()
        t = lap("check", t)
        postfix.reload()
        t = lap("reload", t)
        proof = prove.served(use.services, new.leaf_sha256, config)
        t = lap("prove", t)
        if not proof.ok:
            raise PostfixError(f"proof failed: {proof.message}")
    except PostfixError as exc:
        if not staged:
            return _replace(report, Outcome.ROLLBACK_FAILED,
                            f"{exc}; Postfix reads certbot's files in place, nothing to roll back")
        return _rollback(report, postfix, use, old_sha, config, str(exc))
    timings["total"] = round(time.monotonic() - t0, 4)
    return _replace(report, Outcome.DEPLOYED,
                    f"deployed {new.leaf_sha256[:16]} for {lineage.name}; served on "
                    f"{', '.join(labels) or 'no TLS service'}")


def _rollback(report: Report, postfix: Postfix, use: discover.Usage, old_sha: str | None,
              config: Config, why: str) -> Report:
    if old_sha is None or not install.restore_previous(use.bundle_path):
        return _replace(report, Outcome.ROLLBACK_FAILED,
                        f"{why}; no previous bundle to restore at {use.bundle_path}")
    try:
        postfix.check()
        postfix.reload()
        proof = prove.served(use.services, old_sha, config)
    except PostfixError as exc:
        return _replace(report, Outcome.ROLLBACK_FAILED, f"{why}; rollback failed too: {exc}")
    if not proof.ok:
        return _replace(report, Outcome.ROLLBACK_FAILED,
                        f"{why}; rolled back but the old certificate is not served: {proof.message}")
    return _replace(report, Outcome.ROLLED_BACK,
                    f"{why}; rolled back: the previous certificate {old_sha[:16]} is served again")


def _replace(report: Report, outcome: Outcome, message: str) -> Report:
    return replace(report, outcome=outcome, message=message)


def _current_sha256(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return bundle_mod.fingerprint(bundle_mod.parse_chain(data, str(path))[0])
    except BundleError:
        return None


def write_record(state_dir: Path, report: Report) -> Path:
    """One JSON deploy record per run, written atomically, for the daemon to pick up."""
    records = state_dir / "deploys"
    install.ensure_private_dir(records, 0o755)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = records / f"{stamp}-{os.getpid()}-{report.lineage}.json"
    record = {"time": time.time(), **report.as_record()}
    install.atomic_write(path, json.dumps(record, indent=2).encode() + b"\n", mode=0o644)
    return path
