"""What the daemon remembers across restarts: the last result of every check, which
deploy records it has read, and the last certificate each service served.

One JSON file in the state directory, replaced atomically after every job that changed
it, so a restart resumes where it stopped: no alert is repeated before its time and no
old deploy record is announced twice. A corrupt or unknown-version file is set aside
(``daemon.json.corrupt``) and the daemon starts afresh rather than refusing to run.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from hook import files

VERSION = 1
FILENAME = "daemon.json"


class Kind(StrEnum):
    PROBE = "probe"
    """A TLS service of Postfix, judged from what it serves."""
    EXPIRY = "expiry"
    """A certbot lineage Postfix uses, judged from its cert.pem on disk."""
    DEPLOY = "deploy"
    """The outcome of the deploy hook's last run for a lineage (or of ``certbot renew``)."""
    POSTFIX = "postfix"
    """Whether Postfix's configuration can be read at all (``postconf``)."""
    PEERS = "peers"
    """What peers see: Postfix's TLS log lines and TLSRPT reports (daemon.renew_daemon.peers)."""


@dataclass
class Check:
    """The latest result of one check, and when its current state began and was alerted.

    ``sha256``/``not_before``/``not_after`` keep the last certificate seen even when a
    later probe fails: metrics for an unreachable service do not vanish.
    """

    kind: Kind
    subject: str
    """Service label (``127.0.0.1:25/starttls``) or lineage name."""
    status: str = "unknown"
    codes: tuple[str, ...] = ()
    detail: str = ""
    action: str = ""
    lineage: str = ""
    since: float = 0.0
    """When this status + codes began."""
    last_alert: float = 0.0
    """When an alert for this state was last sent (0: never)."""
    last_run: float = 0.0
    last_ok: float = 0.0
    """Last time the check itself worked (a probe got a handshake; the file was read)."""
    sha256: str = ""
    not_before: float = 0.0
    not_after: float = 0.0

    @property
    def key(self) -> str:
        return key_of(self.kind, self.subject)

    @property
    def lifetime_left(self) -> float | None:
        return lifetime_left(self.not_before, self.not_after, self.last_run)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = self.kind.value
        data["codes"] = list(self.codes)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Check:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["kind"] = Kind(kwargs["kind"])
        kwargs["codes"] = tuple(kwargs.get("codes", ()))
        return cls(**kwargs)


def key_of(kind: Kind, subject: str) -> str:
    return f"{kind.value} {subject}"


def lifetime_left(not_before: float, not_after: float, now: float) -> float | None:
    if not not_after or not_after <= not_before:
        return None
    return max(0.0, min(1.0, (not_after - now) / (not_after - not_before)))


@dataclass
class DeployInfo:
    """The last deploy record of a lineage, and the last one that deployed."""

    time: float = 0.0
    outcome: str = ""
    new_sha256: str = ""
    message: str = ""
    last_success: float = 0.0
    old_sha256: str = ""
    """The leaf Postfix served when the hook ran (staged mode; "" if unknown)."""


@dataclass
class State:
    checks: dict[str, Check] = field(default_factory=dict)
    deploys: dict[str, DeployInfo] = field(default_factory=dict)
    seen_records: list[str] = field(default_factory=list)
    """Deploy record file names already read (pruned to the files that still exist)."""
    fresh: bool = True
    """True when no state file was found: existing deploy records are history, not news."""

    def to_json(self) -> dict[str, Any]:
        return {"version": VERSION,
                "checks": [c.to_json() for c in self.checks.values()],
                "deploys": {k: asdict(v) for k, v in self.deploys.items()},
                "seen_records": self.seen_records}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> State:
        if data.get("version") != VERSION:
            raise ValueError(f"unknown state version {data.get('version')!r}")
        checks = [Check.from_json(c) for c in data.get("checks", [])]
        deploys = {k: DeployInfo(**v) for k, v in data.get("deploys", {}).items()}
        return cls({c.key: c for c in checks}, deploys, list(data.get("seen_records", [])),
                   fresh=False)


def path_in(state_dir: Path) -> Path:
    return state_dir / FILENAME


def load(state_dir: Path) -> tuple[State, str]:
    """Load the state; returns it and a note for the log ("" when all was well)."""
    path = path_in(state_dir)
    try:
        raw = files.read_bounded(path, files.STATE_MAX)
    except FileNotFoundError:
        return State(), ""
    except OSError as exc:
        return State(), f"cannot read {path}: {exc.strerror}; starting afresh"
    try:
        return State.from_json(json.loads(raw)), ""
    except (ValueError, TypeError, KeyError) as exc:
        aside = path.with_name(path.name + ".corrupt")
        with contextlib.suppress(OSError):
            os.replace(path, aside)
        # fresh: deploy records found now are treated as history, not announced again
        return State(), f"{path}: unreadable state ({exc}); moved to {aside.name}, starting afresh"


def save(state_dir: Path, state: State) -> None:
    """Write the state atomically (0644: it holds no secret)."""
    files.ensure_private_dir(state_dir, 0o755)
    data = json.dumps(state.to_json(), indent=1, sort_keys=True).encode() + b"\n"
    files.atomic_write(path_in(state_dir), data, mode=0o644)
