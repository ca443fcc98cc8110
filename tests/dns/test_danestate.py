"""hook.dns.danestate: what the deploy hook remembers about where DANE is in use (the rules
that decide whether a failed TLSA lookup refuses), and its file on disk."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from hook.config import DaneMode
from hook.dns import dane, danestate
from hook.dns.resolver import Answer, Security
from tests.dns.test_dane_records import chain_from, secure

OWNER = "_25._tcp.mail.example.test"
NOW = dt.datetime(2026, 11, 26, 10, 0, tzinfo=dt.UTC)


def gate(*answers: Answer) -> dane.DaneResult:
    chain = chain_from("R10")
    return dane.dane_gate(chain, chain, answers, DaneMode.REFUSE)


def test_validated_usable_records_are_remembered_and_a_validated_absence_forgets(tmp_path: Path) -> None:
    """A secure answer with a 3 1 1 records the host; a later secure NODATA removes it (DANE
    switched off on purpose); an unsigned zone removes it too."""
    record = "3 1 1 " + "ab" * 32
    history = danestate.observe(danestate.History(), gate(secure(OWNER, record)), "mail", NOW)
    assert history.hosts["mail.example.test"] == danestate.Seen(
        "mail.example.test", "2026-11-26T10:00:00Z", (record,), "mail")
    assert "DNSSEC-validated TLSA 3 1 1 abababababababab... seen 2026-11-26T10:00:00Z" in \
        history.seen()["mail.example.test"]
    assert danestate.observe(history, gate(secure(OWNER)), "mail", NOW).hosts == {}
    unsigned = Answer(OWNER, "TLSA", Security.INSECURE, "NOERROR", (record,), 60, "127.0.0.1:53")
    assert danestate.observe(history, gate(unsigned), "mail", NOW).hosts == {}


def test_failed_bogus_or_unusable_lookups_forget_nothing() -> None:
    """No answer, a bogus answer or an unvalidated one leaves the history as it was; a
    secure answer with only usage 0/1 records (unusable for SMTP) is not DANE in use."""
    record = "3 1 1 " + "ab" * 32
    history = danestate.observe(danestate.History(), gate(secure(OWNER, record)), "mail", NOW)
    for security in (Security.ERROR, Security.BOGUS, Security.UNVALIDATED):
        answer = Answer(OWNER, "TLSA", security, "SERVFAIL", (), 0, "127.0.0.1:53", "no")
        assert danestate.observe(history, gate(answer), "mail", NOW).hosts == history.hosts
    assert danestate.observe(danestate.History(), gate(secure(OWNER, "1 1 1 " + "cd" * 32)),
                             "mail", NOW).hosts == {}


def test_file_round_trip_and_a_corrupt_file(tmp_path: Path) -> None:
    """save() writes dane.json atomically (0644, schema named); load() reads it back. A
    corrupt file reads as empty with a note naming the file (the gate then only warns)."""
    history = danestate.observe(danestate.History(), gate(secure(OWNER, "2 1 1 " + "cd" * 32)),
                                "mail", NOW)
    path = danestate.save(tmp_path, history)
    assert path == tmp_path / "dane.json" and path.stat().st_mode & 0o777 == 0o644
    assert json.loads(path.read_text())["schema"] == danestate.SCHEMA
    assert danestate.load(tmp_path) == history
    assert danestate.load(tmp_path / "missing") == danestate.History()
    path.write_text("{not json")
    broken = danestate.load(tmp_path)
    assert broken.hosts == {} and broken.note.startswith(f"{path}: not a DANE history file")
