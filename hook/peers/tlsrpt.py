"""SMTP TLS Reporting (RFC 8460): the ``_smtp._tls`` record, and the reports senders mail us.

Reports are JSON, usually gzipped, attached to a mail (``application/tlsrpt+gzip``)
sent to the ``rua=mailto:`` address; they arrive in a maildir or an mbox that the admin
names (``[peers] tlsrpt_mailbox``), or are given as files. Everything here is untrusted
input: each file and message is read with a size cap, gzip output is capped (a gzip
bomb stops at :data:`MAX_JSON`), and malformed JSON is a :class:`Report` with ``error``
set, never an exception.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hook.peers.maillog import LogError, open_regular
from hook.verdict import Code, Problem, Status

if TYPE_CHECKING:  # dnspython and the email package cost the daemon ~4 MB: imported on use
    from hook.dns.resolver import Resolver, Security

MAX_FILE = 8 << 20
"""A report file or one mail message: at most this many bytes are read."""
MAX_JSON = 16 << 20
"""Decompressed report size cap (a gzip bomb stops here)."""
MAX_MBOX = 64 << 20
MAX_MESSAGES = 2000
MAX_VALUES = 200_000
"""A report's JSON with more values than this (counted, before parsing, as its ``{ [ , :``
bytes) is refused: parsed, a few MB of tiny values would take hundreds of MB of memory."""
MAX_DETAILS = 1000
"""Failure details kept per report, all policies together (the rest are noted, not kept)."""
MAX_REPORTS = 20
"""Report attachments read per mail message (more: noted as an error, not read)."""
REPORT_TYPES = ("application/tlsrpt+gzip", "application/tlsrpt+json", "application/gzip",
                "application/json", "application/x-gzip")
FIX = {
    "starttls-not-supported": "senders saw no STARTTLS: check smtpd_tls_security_level and "
                              "that the MX named in the report is this Postfix",
    "certificate-host-mismatch": "the certificate does not cover the MX name: add it to the "
                                 "lineage (certbot -d) and to [deploy] names",
    "certificate-expired": "an expired certificate was served: run 'renew-check' and "
                           "'postfix-deploy-hook --lineage ...'",
    "certificate-not-trusted": "serve the full chain (fullchain.pem, not cert.pem)",
    "validation-failure": "serve the full chain and a certificate for the MX name",
    "tlsa-invalid": "the TLSA records do not match: publish the records 'renew-check' prints",
    "dnssec-invalid": "the zone's DNSSEC is broken: check the DS and signatures",
    "dane-required": "publish valid TLSA records ('renew-check' prints them)",
    "sts-policy-fetch-error": "the MTA-STS policy could not be fetched: check "
                              "https://mta-sts.DOMAIN/.well-known/mta-sts.txt",
    "sts-policy-invalid": "fix the MTA-STS policy file",
    "sts-webpki-invalid": "the mta-sts. web server's certificate is not valid",
}


@dataclass(frozen=True)
class FailureDetail:
    result_type: str
    sessions: int
    receiving_mx: str = ""
    receiving_ip: str = ""
    sending_ip: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Policy:
    policy_type: str
    domain: str
    mx: tuple[str, ...]
    successful: int
    failed: int
    failures: tuple[FailureDetail, ...] = ()


@dataclass(frozen=True)
class Report:
    """One report, or why it could not be read (``error``)."""

    source: str
    organization: str = ""
    report_id: str = ""
    start: str = ""
    end: str = ""
    policies: tuple[Policy, ...] = ()
    error: str = ""
    note: str = ""
    """What was left out of a report that was read (failure details over the cap)."""

    @property
    def key(self) -> str:
        return f"{self.organization}|{self.report_id}" if self.report_id else self.source


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any, limit: int = 255) -> str:
    return value[:limit] if isinstance(value, str) else ""


def parse_report(data: bytes, source: str) -> Report:
    """Parse a report (JSON, or gzip of JSON)."""
    if data[:2] == b"\x1f\x8b":
        try:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            raw = d.decompress(data, MAX_JSON + 1)
        except zlib.error as exc:
            return Report(source, error=f"not valid gzip: {exc}")
        if len(raw) > MAX_JSON or d.unconsumed_tail:
            return Report(source, error=f"decompresses to more than {MAX_JSON >> 20} MiB: ignored")
        data = raw
    values = sum(data.count(c) for c in (b"{", b"[", b",", b":"))
    if values > MAX_VALUES:
        return Report(source, error=f"more than {MAX_VALUES} JSON values ({values}): ignored")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        return Report(source, error=f"not JSON: {str(exc)[:120]}")
    if not isinstance(doc, dict) or not isinstance(doc.get("policies"), list):
        return Report(source, error="not a TLSRPT report (no 'policies' list)")
    rng = _dict(doc.get("date-range"))
    policies = []
    left, dropped = MAX_DETAILS, 0
    for p in doc["policies"][:1000]:
        if not isinstance(p, dict):
            continue
        pol = _dict(p.get("policy"))
        summ = _dict(p.get("summary"))
        raw_details = p.get("failure-details")
        raw_details = [f for f in raw_details if isinstance(f, dict)] if isinstance(
            raw_details, list) else []
        details = [_detail(f) for f in raw_details[:left]]
        left -= len(details)
        dropped += len(raw_details) - len(details)
        mx_hosts = pol.get("mx-host")
        mx = mx_hosts if isinstance(mx_hosts, list) else []
        policies.append(Policy(
            _str(pol.get("policy-type"), 32) or "unknown",
            _str(pol.get("policy-domain")).lower().rstrip("."),
            tuple(_str(m) for m in mx[:50] if isinstance(m, str)),
            _int(summ.get("total-successful-session-count")),
            _int(summ.get("total-failure-session-count")), tuple(details)))
    return Report(source, _str(doc.get("organization-name")), _str(doc.get("report-id")),
                  _str(rng.get("start-datetime"), 40), _str(rng.get("end-datetime"), 40),
                  tuple(policies),
                  note=f"{dropped} failure detail(s) over the cap of {MAX_DETAILS} left out"
                  if dropped else "")


def _detail(f: dict[str, Any]) -> FailureDetail:
    return FailureDetail(
        _str(f.get("result-type"), 64) or "unknown", _int(f.get("failed-session-count")),
        _str(f.get("receiving-mx-hostname")).lower().rstrip("."),
        _str(f.get("receiving-ip"), 64), _str(f.get("sending-mta-ip"), 64),
        _str(f.get("failure-reason-code"), 200))


def read_bounded(path: Path, limit: int = MAX_FILE) -> bytes:
    """Read at most ``limit`` bytes of a regular file (never blocks on a FIFO)."""
    fd = open_regular(path)
    try:
        chunks, left = [], limit
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_file(path: Path) -> list[Report]:
    """A report file (``.json``, ``.json.gz``) or a saved mail (``.eml``) holding reports."""
    try:
        data = read_bounded(path)
    except LogError as exc:
        return [Report(str(path), error=str(exc))]
    if data[:2] == b"\x1f\x8b" or data.lstrip()[:1] == b"{":
        return [parse_report(data, str(path))]
    return from_message(data, str(path))


def from_message(raw: bytes, source: str) -> list[Report]:
    """The reports attached to one mail message (none: an empty list)."""
    import email  # noqa: PLC0415
    import email.policy  # noqa: PLC0415
    from email.message import EmailMessage  # noqa: PLC0415

    msg = email.message_from_bytes(raw[:MAX_FILE], policy=email.policy.default)
    out: list[Report] = []
    for part in msg.walk() if isinstance(msg, EmailMessage) else ():
        ctype = part.get_content_type()
        name = part.get_filename() or ""
        if ctype in REPORT_TYPES or name.endswith((".json", ".json.gz", ".gz")):
            if len(out) >= MAX_REPORTS:
                out.append(Report(source, error=f"more than {MAX_REPORTS} report attachments: "
                                                "the rest not read"))
                break
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                out.append(parse_report(payload, f"{source} ({name or ctype})"))
    return out


def mailbox_messages(path: Path, seen: Iterable[str] = (), notes: list[str] | None = None
                     ) -> Iterable[tuple[str, bytes]]:
    """(key, message) for each of the newest :data:`MAX_MESSAGES` messages of a maildir
    (``new/`` and ``cur/``, by name: maildir names begin with the delivery time) or an mbox
    file (its last :data:`MAX_MBOX` bytes) that is not in ``seen``, oldest first; keys are
    maildir unique names or a hash of the message. An mbox over the cap adds a line to
    ``notes`` (only its end is read: old mail should be expired)."""
    skip = set(seen)
    if path.is_dir():
        names: list[tuple[str, Path]] = []
        for sub in ("new", "cur"):
            folder = path / sub
            try:
                names += [(p.name.split(":2,")[0], p) for p in folder.iterdir()]
            except OSError:
                continue
        for key, p in sorted(names)[-MAX_MESSAGES:]:
            if key in skip:
                continue
            try:
                yield key, read_bounded(p)
            except LogError:
                continue
        return
    data, size = read_tail(path, MAX_MBOX)
    if size > MAX_MBOX:
        if notes is not None:
            notes.append(f"{path}: mailbox larger than {MAX_MBOX >> 20} MiB ({size >> 20} MiB): "
                         "only its last messages are read; expire old mail")
        data = data[data.find(b"\nFrom ") + 1:] if b"\nFrom " in data else b""
    for raw in re.split(rb"(?m)^From .*\n", data)[-MAX_MESSAGES:]:
        if not raw.strip():
            continue
        key = hashlib.sha256(raw).hexdigest()[:32]
        if key not in skip:
            yield key, raw


def read_tail(path: Path, limit: int) -> tuple[bytes, int]:
    """The last ``limit`` bytes of a regular file, and its size."""
    fd = open_regular(path)
    try:
        size = os.fstat(fd).st_size
        start = max(0, size - limit)
        chunks, offset = [], start
        while offset < size and (chunk := os.pread(fd, min(size - offset, 1 << 20), offset)):
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks), size
    finally:
        os.close(fd)


@dataclass
class Summary:
    """Reports summed per policy (type, domain) and per failure type."""

    reports: int = 0
    errors: list[str] = field(default_factory=list)
    sessions: Counter[str] = field(default_factory=Counter)
    """``policy_type success|failure`` -> sessions."""
    per_policy: Counter[str] = field(default_factory=Counter)
    """``policy_type domain success|failure`` -> sessions."""
    failures: Counter[str] = field(default_factory=Counter)
    """result type -> failed sessions."""


def summarise(reports: Sequence[Report]) -> Summary:
    s = Summary()
    for r in reports:
        if r.error:
            s.errors.append(f"{r.source}: {r.error}")
            continue
        s.reports += 1
        for p in r.policies:
            s.sessions[f"{p.policy_type} success"] += p.successful
            s.sessions[f"{p.policy_type} failure"] += p.failed
            s.per_policy[f"{p.policy_type} {p.domain} success"] += p.successful
            s.per_policy[f"{p.policy_type} {p.domain} failure"] += p.failed
            for f in p.failures:
                s.failures[f.result_type] += f.sessions
    return s


def findings(reports: Sequence[Report], our_mx: Iterable[str], our_ips: Iterable[str] = ()
             ) -> list[Problem]:
    """A problem for each failure detail that names one of our MX host names (or addresses)."""
    names = {n.lower().rstrip(".") for n in our_mx if n}
    ips = set(our_ips)
    out = []
    for r in reports:
        for p in r.policies:
            for f in p.failures:
                if f.receiving_mx not in names and not (f.receiving_ip and f.receiving_ip in ips):
                    continue
                out.append(Problem(
                    Code.TLSRPT_FAILURE, Status.WARNING,
                    f"TLSRPT from {r.organization or '?'} ({r.start[:10]}..{r.end[:10]}, {p.policy_type} "
                    f"policy of {p.domain}): {f.sessions} failed session(s) to "
                    f"{f.receiving_mx or f.receiving_ip}: {f.result_type}"
                    + (f" ({f.reason})" if f.reason else ""),
                    FIX.get(f.result_type, "run 'renew-check' and compare with the report")))
    return out


@dataclass(frozen=True)
class TlsRptRecord:
    """``_smtp._tls.DOMAIN``: whether the domain asks senders for reports."""

    domain: str
    security: Security
    record: str = ""
    rua: tuple[str, ...] = ()
    problem: Problem | None = None


def _txt(rdata: str) -> str:
    return "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', rdata)) or rdata


def lookup(domain: str, resolver: Resolver) -> TlsRptRecord:
    """Look up the domain's TLSRPT record (with its DNSSEC status)."""
    owner = f"_smtp._tls.{domain}"
    answer = resolver.lookup(owner, "TXT")
    if not answer.ok:
        return TlsRptRecord(domain, answer.security, problem=Problem(
            Code.DNS_LOOKUP_FAILED, Status.WARNING, f"{owner} TXT: {answer.describe()}"))
    records = [t for t in map(_txt, answer.records) if t.startswith("v=TLSRPTv1")]
    if not records:
        return TlsRptRecord(domain, answer.security, problem=Problem(
            Code.TLSRPT_MISSING, Status.OK,
            f"{domain} publishes no TLSRPT record: senders that fail to reach it over TLS "
            "cannot tell you",
            f"publish {owner}. IN TXT \"v=TLSRPTv1; rua=mailto:tlsrpt@{domain}\" and set "
            "[peers] tlsrpt_mailbox to where that mail is delivered"))
    text = records[0]
    rua = tuple(u.strip() for part in text.split(";") if part.strip().startswith("rua=")
                for u in part.strip()[4:].split(","))
    return TlsRptRecord(domain, answer.security, text, rua)


def report_time(r: Report) -> float:
    try:
        return dt.datetime.fromisoformat(r.end.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0
