"""Discover: which Postfix instances use the lineage, through which files, services and
SNI names, and which leaf they serve now.

Every instance that uses the lineage is checked, reloaded and proven: the primary, and
with ``multi_instance_enable = yes`` (postmulti) each of ``multi_instance_directories``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from hook.certs import bundle as bundle_mod
from hook.certs.lineage import Lineage
from hook.config import Config
from hook.errors import BundleError, PostfixError
from hook.pipeline import messages
from hook.pipeline.report import Ending, Outcome
from hook.postfix import tls_files
from hook.postfix.instance import Postfix, postfix_for


@dataclass(frozen=True)
class Discovery:
    """What discover found: the primary instance, every instance that uses the lineage
    (the primary's usage when none does), their merged usage, the leaf staged now."""

    postfix: Postfix
    instances: tuple[tuple[Postfix, tls_files.Usage], ...]
    use: tls_files.Usage
    served_sha256: str | None
    """The leaf of the staged bundle Postfix serves now (None: in place, or a first deploy)."""

    @property
    def unused(self) -> bool:
        return self.use.mode is tls_files.Mode.UNUSED


def discover(config: Config, lineage: Lineage) -> Discovery | Ending:
    """Read each instance's configuration (``postconf``); an unreadable one ends the run."""
    postfix = postfix_for(config)
    try:
        instances = _instances(config, postfix, lineage)
    except PostfixError as exc:
        return Ending(Outcome.REFUSED, messages.postfix_unreadable(
            config.postfix.config_directory / "main.cf", exc))
    use = tls_files.merged([u for _, u in instances])
    return Discovery(postfix, tuple(instances), use, _staged_sha256(use))


def not_used(config: Config, lineage: Lineage) -> Ending:
    return Ending(Outcome.SKIPPED, messages.not_used(config.postfix.config_directory, lineage))


def _instances(config: Config, postfix: Postfix,
               lineage: Lineage) -> list[tuple[Postfix, tls_files.Usage]]:
    """Every Postfix instance that uses the lineage, the primary first: with
    ``multi_instance_enable = yes`` (postmulti), each of ``multi_instance_directories``
    too. The primary's usage stands for all when none uses it (SKIPPED)."""
    primary = tls_files.usage(postfix, lineage, config.deploy.bundle_dir)
    found = [(postfix, primary)]
    for directory in primary.secondaries:
        other = Postfix(directory, (), config.postfix.probe_host, config.postfix.command_timeout)
        found.append((other, tls_files.usage(other, lineage, config.deploy.bundle_dir)))
    used = [(p, u) for p, u in found if u.mode is not tls_files.Mode.UNUSED]
    return used or found[:1]


def _staged_sha256(use: tls_files.Usage) -> str | None:
    for s in use.staged:
        if s.kind is tls_files.Kind.KEY:
            continue
        with contextlib.suppress(OSError, BundleError):
            data = s.path.read_bytes()
            return bundle_mod.fingerprint(bundle_mod.parse_chain(data, str(s.path))[0])
        return None
    return None
