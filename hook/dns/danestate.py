"""Where DANE was seen in use: the last DNSSEC-validated TLSA observation per host.

The DANE gate needs this for one decision. When the TLSA lookup fails (the resolver
does not answer, or answers REFUSED), the gate cannot tell whether the host publishes
TLSA records. Most hosts do not use DANE. If every resolver problem at renewal time
refused the deploy, certbot would not retry (its next run sees nothing due) and the old
certificate would get closer to expiry. So the gate refuses a failed lookup only for a
host that was *seen* using DANE before. For any other host it warns that it could not
check.

The hook records what it sees in ``<deploy.state_dir>/dane.json``, written atomically
(:func:`hook.files.atomic_write`) after each real run, never by ``--dry-run`` or
``renew-check``::

    {"schema": "postfix-certwatch/dane-seen/1",
     "hosts": {"mail.example.com": {"seen_at": "2026-11-26T10:00:00Z",
                                    "records": ["3 1 1 ab..."], "lineage": "mail.example.com"}}}

* A validated answer with usable TLSA records (usage 2 or 3) records the host.
* A validated "no TLSA records" (or only unusable ones), or an unsigned zone, removes it:
  DANE was switched off on purpose, so a later lookup failure no longer refuses.
* A bogus, unvalidated or failed lookup changes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hook import files
from hook.dns.dane import DaneResult
from hook.dns.resolver import Security

FILE_NAME = "dane.json"
SCHEMA = "postfix-certwatch/dane-seen/1"


@dataclass(frozen=True)
class Seen:
    """The last DNSSEC-validated TLSA records seen for one host."""

    host: str
    seen_at: str
    """When (UTC, ``2026-11-26T10:00:00Z``)."""
    records: tuple[str, ...]
    lineage: str = ""

    def describe(self) -> str:
        """For messages: ``validated TLSA 3 1 1 ab12cd34... seen 2026-11-26T10:00:00Z``."""
        shown = ", ".join(_short(r) for r in self.records[:3])
        more = f" (+{len(self.records) - 3} more)" if len(self.records) > 3 else ""
        return f"DNSSEC-validated TLSA {shown}{more} seen {self.seen_at}"


@dataclass(frozen=True)
class History:
    """Every host DANE was seen in use for; ``note`` says why the file could not be read."""

    hosts: Mapping[str, Seen] = field(default_factory=dict)
    note: str = ""

    def seen(self) -> dict[str, str]:
        """Host -> description, as :func:`hook.dns.dane.check` takes it."""
        return {h: s.describe() for h, s in self.hosts.items()}


def path_of(state_dir: Path) -> Path:
    return state_dir / FILE_NAME


def load(state_dir: Path) -> History:
    """Read the history; missing is empty, unreadable or corrupt is empty with a note."""
    path = path_of(state_dir)
    try:
        data = json.loads(files.read_bounded(path, files.RECORD_MAX))
        hosts = {
            str(host): Seen(str(host), str(entry["seen_at"]),
                            tuple(str(r) for r in entry["records"]), str(entry.get("lineage", "")))
            for host, entry in data["hosts"].items()}
    except FileNotFoundError:
        return History()
    except OSError as exc:
        return History(note=f"{path}: cannot read ({exc.strerror}); a failed TLSA lookup only warns")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return History(note=f"{path}: not a DANE history file ({exc!r}); a failed TLSA lookup "
                            "only warns until the next successful lookup rewrites it")
    return History(hosts)


def observe(history: History, result: DaneResult, lineage: str,
            now: dt.datetime | None = None) -> History:
    """The history after the gate's lookups (see the module docstring for the rules)."""
    stamp = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    hosts = dict(history.hosts)
    for h in result.hosts:
        security = h.answer.security
        usable = tuple(str(r) for r in h.records if r.usable)
        if security is Security.SECURE and usable:
            hosts[h.host] = Seen(h.host, stamp, usable, lineage)
        elif security in (Security.SECURE, Security.INSECURE):
            hosts.pop(h.host, None)
    return History(hosts)


def save(state_dir: Path, history: History) -> Path:
    """Write the history atomically (0644: it holds public DNS data only)."""
    files.ensure_private_dir(state_dir, 0o755)
    path = path_of(state_dir)
    doc = {"schema": SCHEMA, "hosts": {
        host: {"seen_at": s.seen_at, "records": list(s.records), "lineage": s.lineage}
        for host, s in sorted(history.hosts.items())}}
    files.atomic_write(path, json.dumps(doc, indent=2).encode() + b"\n", mode=0o644)
    return path


def _short(record: str) -> str:
    fields = record.split()
    if len(fields) < 4:
        return record
    return f"{' '.join(fields[:3])} {''.join(fields[3:])[:16]}..."
