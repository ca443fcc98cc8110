"""TLSRPT (hook.peers.tlsrpt): RFC 8460 reports built per the schema (success and every failure
type), gzipped, attached to mail that the private Postfix delivers into a local mbox;
hostile inputs (gzip bomb, bad JSON, FIFO); the _smtp._tls record through the DNS harness."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import threading
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from hook.config import Config
from hook.dns.resolver import Resolver, Security
from hook.peers import tlsrpt
from hook.verdict import Code
from tests.harness.dns import DnsStack
from tests.harness.peerbed import OURS, running_peerbed

RESULT_TYPES = tuple(tlsrpt.FIX)


def report(report_id: str, failures: dict[str, int], mx: str = "mx.example.test",
           ok: int = 100) -> dict[str, Any]:
    """A report as RFC 8460 section 4.4 describes it."""
    return {
        "organization-name": "Sender Inc.",
        "date-range": {"start-datetime": "2026-12-01T00:00:00Z", "end-datetime": "2026-12-01T23:59:59Z"},
        "contact-info": "tlsrpt@sender.example",
        "report-id": report_id,
        "policies": [{
            "policy": {"policy-type": "sts", "policy-string": ["version: STSv1", "mode: enforce",
                                                              f"mx: {mx}", "max_age: 86400"],
                       "policy-domain": "example.test", "mx-host": [mx]},
            "summary": {"total-successful-session-count": ok,
                        "total-failure-session-count": sum(failures.values())},
            "failure-details": [{"result-type": t, "sending-mta-ip": "192.0.2.1",
                                 "receiving-mx-hostname": mx, "receiving-ip": "127.0.0.1",
                                 "failed-session-count": n, "failure-reason-code": "X509_V_ERR"}
                                for t, n in failures.items()]}]}


def mail(doc: dict[str, Any]) -> bytes:
    msg = EmailMessage()
    msg["From"] = "noreply@sender.example"
    msg["To"] = f"tlsrpt@{OURS}"
    msg["Subject"] = f"Report Domain: example.test Submitter: sender.example Report-ID: <{doc['report-id']}>"
    msg["TLS-Report-Domain"] = "example.test"
    msg["TLS-Report-Submitter"] = "sender.example"
    msg.set_content("This is an aggregate TLS report from sender.example")
    msg.add_attachment(gzip.compress(json.dumps(doc).encode()), maintype="application",
                       subtype="tlsrpt+gzip",
                       filename=f"sender.example!example.test!{doc['report-id']}.json.gz")
    return msg.as_bytes()


@pytest.mark.stack
def test_reports_delivered_by_postfix_into_an_mbox() -> None:
    """A success-only report and one with every failure type, mailed to the private Postfix
    and delivered by its local(8) into an mbox, are read back, summed per policy and
    failure type; the failures that name our MX become findings, another MX's do not."""
    docs = [report("r-ok", {}), report("r-bad", {t: i + 1 for i, t in enumerate(RESULT_TYPES)}),
            report("r-other", {"certificate-expired": 5}, mx="mx.elsewhere.example")]
    with running_peerbed() as bed:
        for doc in docs:
            subprocess.run(["/usr/sbin/sendmail", "-C", str(bed.ours.config_dir), "-f",
                            "noreply@sender.example", f"root@{OURS}"], input=mail(doc), check=True,
                           timeout=30)
        mbox = bed.ours.mailbox_dir / "root"
        deadline = time.monotonic() + 30
        while not mbox.exists() or mbox.read_bytes().count(b"\nFrom ") + 1 < 3:
            assert time.monotonic() < deadline, bed.ours.log_tail()
            time.sleep(0.1)
        messages = list(tlsrpt.mailbox_messages(mbox))
        reports = [r for _, raw in messages for r in tlsrpt.from_message(raw, "mbox")]
        assert {r.report_id for r in reports} == {"r-ok", "r-bad", "r-other"}
        assert list(tlsrpt.mailbox_messages(mbox, {k for k, _ in messages})) == []
    s = tlsrpt.summarise(reports)
    assert s.reports == 3 and not s.errors
    assert s.sessions["sts success"] == 300
    assert s.failures["certificate-expired"] == RESULT_TYPES.index("certificate-expired") + 1 + 5
    assert s.per_policy["sts example.test failure"] == sum(range(1, len(RESULT_TYPES) + 1)) + 5
    found = tlsrpt.findings(reports, ["mx.example.test"])
    assert len(found) == len(RESULT_TYPES) and all(p.code is Code.TLSRPT_FAILURE for p in found)
    assert any("1 failed session(s) to mx.example.test: starttls-not-supported" in p.detail for p in found)


def test_maildir_and_hostile_inputs(tmp_path: Path) -> None:
    """A maildir's new/ and cur/ are read once; a gzip bomb, bad JSON, a non-report and a
    FIFO are errors in the result, never exceptions or hangs."""
    md = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (md / sub).mkdir(parents=True)
    (md / "new" / "1.a.host").write_bytes(mail(report("m1", {"certificate-expired": 2})))
    (md / "cur" / "2.b.host:2,S").write_bytes(mail(report("m2", {})))
    got = list(tlsrpt.mailbox_messages(md))
    assert [k for k, _ in got] == ["1.a.host", "2.b.host"]
    assert list(tlsrpt.mailbox_messages(md, ["1.a.host", "2.b.host"])) == []
    bomb = gzip.compress(b"{" + b" " * (tlsrpt.MAX_JSON + 10))
    assert "decompresses to more than" in tlsrpt.parse_report(bomb, "bomb").error
    assert tlsrpt.parse_report(b"{not json", "x").error.startswith("not JSON")
    assert tlsrpt.parse_report(b"[1, 2]", "x").error.startswith("not a TLSRPT report")
    assert tlsrpt.parse_report(b"\x1f\x8bgarbage", "x").error.startswith("not valid gzip")
    odd = tlsrpt.parse_report(json.dumps({"policies": [1, {"policy": [], "summary": {
        "total-successful-session-count": -5}, "failure-details": [{"failed-session-count": "x"}]}]}
    ).encode(), "odd")
    assert odd.error == "" and odd.policies[0].successful == 0
    assert odd.policies[0].failures[0].result_type == "unknown"
    fifo = tmp_path / "report.json"
    os.mkfifo(fifo)
    out: list[tlsrpt.Report] = []
    t = threading.Thread(target=lambda: out.extend(tlsrpt.read_file(fifo)), daemon=True)
    t.start()
    t.join(5)
    assert out and "not a regular file" in out[0].error
    gz = tmp_path / "r.json.gz"
    gz.write_bytes(gzip.compress(json.dumps(report("f1", {})).encode()))
    assert tlsrpt.read_file(gz)[0].report_id == "f1"


@pytest.mark.stack
def test_tlsrpt_record_with_dnssec_status(dns_stack: DnsStack, dns_config: Config) -> None:
    """_smtp._tls TXT through the validating resolver: published (signed zone: secure),
    absent (advice), and a bogus zone (a lookup problem)."""
    from tests.harness.dns import BOGUS, SIGNED  # noqa: PLC0415

    resolver = Resolver.from_config(dns_config.dns)
    dns_stack.set_rrset(f"_smtp._tls.{SIGNED}", "TXT",
                        ['"v=TLSRPTv1;" "rua=mailto:tlsrpt@example.test,https://r.example/x"'])
    rec = tlsrpt.lookup(SIGNED, resolver)
    assert rec.security is Security.SECURE and rec.problem is None
    assert rec.rua == ("mailto:tlsrpt@example.test", "https://r.example/x")
    dns_stack.set_rrset(f"_smtp._tls.{SIGNED}", "TXT", [])
    missing = tlsrpt.lookup(SIGNED, resolver)
    assert missing.problem is not None and missing.problem.code is Code.TLSRPT_MISSING
    bogus = tlsrpt.lookup(BOGUS, resolver)
    assert bogus.security is Security.BOGUS and bogus.problem is not None


def bomb_doc(policies: int, details: int) -> dict[str, Any]:
    """A report of ``policies`` policies with ``details`` empty failure details each: a few
    bytes apiece in the JSON, hundreds of MB once parsed (1000 x 1000: 3 MB, 5 KB gzipped)."""
    doc = report("bomb", {})
    doc["policies"] = [{**doc["policies"][0], "failure-details": [{}] * details}
                       for _ in range(policies)]
    return doc


def test_report_bomb_is_parsed_in_bounded_memory() -> None:
    """1000 policies x 1000 failure details (3 MB of JSON, 5 KB gzipped, in one mail) is
    refused before json.loads with a bounded peak (it took ~220 MB); a report under the
    value cap keeps at most MAX_DETAILS details and says how many it left out; a mail with
    more than MAX_REPORTS attachments reads MAX_REPORTS and says the rest was not read."""
    import tracemalloc  # noqa: PLC0415

    raw = mail(bomb_doc(1000, 1000))
    assert len(raw) < 16 << 10
    tracemalloc.start()
    try:
        got = tlsrpt.from_message(raw, "bomb")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 24 << 20, f"peak {peak >> 20} MB"
    assert len(got) == 1 and "JSON values" in got[0].error
    capped = tlsrpt.parse_report(json.dumps(bomb_doc(10, 500)).encode(), "capped")
    assert capped.error == ""
    assert sum(len(p.failures) for p in capped.policies) == tlsrpt.MAX_DETAILS
    assert capped.note.startswith("4000 failure detail(s) over the cap")
    msg = EmailMessage()
    msg.set_content("many")
    for n in range(tlsrpt.MAX_REPORTS + 5):
        msg.add_attachment(json.dumps(report(f"a{n}", {})).encode(), maintype="application",
                           subtype="tlsrpt+json", filename=f"a{n}.json")
    many = tlsrpt.from_message(msg.as_bytes(), "many")
    assert [r.report_id for r in many[:-1]] == [f"a{n}" for n in range(tlsrpt.MAX_REPORTS)]
    assert "more than" in many[-1].error and len(many) == tlsrpt.MAX_REPORTS + 1


def test_a_full_mailbox_still_yields_its_new_reports(tmp_path: Path) -> None:
    """A maildir of more than MAX_MESSAGES messages: the newest are read (the oldest were
    read back then), not the oldest over and over. An mbox over MAX_MBOX: its end is read
    (the new reports) and the size is named in a note, not silently cut."""
    md = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (md / sub).mkdir(parents=True)
    names = [f"{1700000000 + n}.M{n}.host" for n in range(tlsrpt.MAX_MESSAGES + 5)]
    for name in names:
        (md / "cur" / f"{name}:2,S").write_bytes(b"x")
    got = [k for k, _ in tlsrpt.mailbox_messages(md, names[:tlsrpt.MAX_MESSAGES])]
    assert got == names[tlsrpt.MAX_MESSAGES:]
    mbox = tmp_path / "mbox"
    filler = b"From a@b Tue Dec  1 00:00:00 2026\nSubject: old\n\n" + b"x" * (1 << 20) + b"\n"
    with mbox.open("wb") as w:
        for _ in range((tlsrpt.MAX_MBOX >> 20) + 2):
            w.write(filler)
        for rid in ("new1", "new2"):
            w.write(b"From a@b Wed Dec  2 00:00:00 2026\n" + mail(report(rid, {})) + b"\n")
    notes: list[str] = []
    reports = [r for _, raw in tlsrpt.mailbox_messages(mbox, (), notes)
               for r in tlsrpt.from_message(raw, "mbox")]
    assert [r.report_id for r in reports] == ["new1", "new2"]
    assert len(notes) == 1 and "mailbox larger than 64 MiB" in notes[0]
