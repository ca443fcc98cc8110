"""MTA-STS (RFC 8461): does the domain's policy fit its MX names and our certificate?

A sender that honours MTA-STS (Gmail, Microsoft, ...) looks up ``_mta-sts.<domain>`` TXT,
fetches ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` and, in mode ``enforce``,
delivers only to MX hosts matching one of the policy's ``mx:`` patterns whose certificate
is valid for that MX name and chains to a public root. So a renewal that drops an MX
name from the certificate, or an MX renamed without updating the policy, stops mail from
those senders (``testing``: they only report it).

:func:`check` reports the policy's mode and max_age and whether the patterns cover the
MX names and the certificate's names. Network: one DNS query and one HTTPS GET. Never
called by the deploy hook (a slow web server must not hold up a renewal); ``renew-check``
and the daemon call it.
"""

from __future__ import annotations

import datetime as dt
import http.client
import ipaddress
import re
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography import x509

from daemon.renew_check.mx import MxCoverage
from hook.certs import Trust, check_names, names_of
from hook.config import Config
from hook.dns import Answer, Resolver
from hook.errors import Error
from hook.verdict import Code, Problem, Status, worst

WELL_KNOWN = "/.well-known/mta-sts.txt"
MAX_POLICY_BYTES = 64 * 1024          # RFC 8461 §3.3: senders may stop reading beyond this
MAX_AGE_LIMIT = 31557600              # RFC 8461 §3.2: one year
SHORT_MAX_AGE = 7 * 86400             # RFC 8461 §3.2 recommends "weeks or greater"
_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


class StsMode(StrEnum):
    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"


class MtaStsError(Error):
    """The policy could not be fetched or parsed; the message says what and why."""


@dataclass(frozen=True)
class Policy:
    mode: StsMode
    max_age: int
    mx: tuple[str, ...]
    version: str = "STSv1"

    def matches(self, host: str) -> bool:
        return any(mx_matches(p, host) for p in self.mx)


@dataclass(frozen=True)
class MtaStsResult:
    """What the domain publishes and how it fits; ``policy`` is None without one."""

    domain: str
    txt: Answer | None = None
    policy_id: str = ""
    url: str = ""
    policy: Policy | None = None
    problems: tuple[Problem, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def mode(self) -> StsMode | None:
        return self.policy.mode if self.policy else None

    @property
    def max_age(self) -> int | None:
        return self.policy.max_age if self.policy else None

    @property
    def status(self) -> Status:
        return worst(tuple(p.status for p in self.problems))

    def as_record(self) -> dict[str, object]:
        """Plain data for JSON (``renew-check --json``)."""
        return {
            "domain": self.domain, "status": self.status.value, "policy_id": self.policy_id,
            "url": self.url, "mode": self.mode.value if self.mode else None,
            "max_age": self.max_age, "mx": list(self.policy.mx) if self.policy else [],
            "problems": [{"code": p.code.value, "status": p.status.value, "detail": p.detail,
                          "fix": p.fix} for p in self.problems],
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- pure parts
def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 §4.1: exact, or ``*.example.com`` matching exactly one more leftmost label."""
    pattern, host = pattern.rstrip(".").lower(), host.rstrip(".").lower()
    if pattern.startswith("*."):
        label, dot, rest = host.partition(".")
        return bool(label) and bool(dot) and rest == pattern[2:]
    return pattern == host


def txt_strings(record: str) -> str:
    """A TXT record's character-strings joined (``"a" "b"`` -> ``ab``)."""
    parts = _QUOTED.findall(record)
    joined = "".join(parts) if parts else record
    return re.sub(r"\\(.)", r"\1", joined)


def parse_txt(record: str) -> dict[str, str]:
    """``v=STSv1; id=20240101;`` -> {"v": "STSv1", "id": "20240101"}."""
    fields: dict[str, str] = {}
    for part in txt_strings(record).split(";"):
        key, sep, value = part.strip().partition("=")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def parse_policy(text: str) -> Policy:
    """Parse a policy file (``key: value`` lines, CRLF or LF); raise MtaStsError if invalid."""
    fields: dict[str, list[str]] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise MtaStsError(f"line {n}: {line[:60]!r} is not 'key: value'")
        fields.setdefault(key.strip(), []).append(value.strip())
    version = (fields.get("version") or [""])[0]
    if version != "STSv1":
        raise MtaStsError(f"version must be STSv1, got {version!r}")
    mode_text = (fields.get("mode") or [""])[0]
    try:
        mode = StsMode(mode_text)
    except ValueError as exc:
        raise MtaStsError(f"mode must be enforce, testing or none, got {mode_text!r}") from exc
    age_text = (fields.get("max_age") or [""])[0]
    if not age_text.isdigit() or int(age_text) > MAX_AGE_LIMIT:
        raise MtaStsError(f"max_age must be 0..{MAX_AGE_LIMIT} seconds, got {age_text!r}")
    mx = tuple(m.lower() for m in fields.get("mx", []))
    if not mx and mode is not StsMode.NONE:
        raise MtaStsError(f"mode {mode} needs at least one 'mx:' line")
    return Policy(mode, int(age_text), mx, version)


# --------------------------------------------------------------------------- fetch
class _Connection(http.client.HTTPSConnection):
    """HTTPS to ``connect_to`` while sending and verifying ``host`` (SNI, certificate, Host)."""

    def __init__(self, host: str, connect_to: tuple[str, int], context: ssl.SSLContext,
                 timeout: float) -> None:
        super().__init__(host, 443, timeout=timeout, context=context)
        self._connect_to = connect_to
        self._tls = context

    def connect(self) -> None:
        sock = socket.create_connection(self._connect_to, self.timeout)
        try:
            self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def policy_context(cafile: Path | None) -> ssl.SSLContext:
    """System trust store (plus ``cafile``), host name checked, TLS 1.2 or later."""
    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cafile is not None:
        ctx.load_verify_locations(cafile=str(cafile))
    return ctx


def parse_connect(value: str) -> tuple[str, int] | None:
    """``127.0.0.1:8443`` / ``[::1]:8443`` -> (host, port); empty -> None."""
    if not value:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise MtaStsError(f"dns.mta_sts_connect: {value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def fetch_policy(domain: str, *, cafile: Path | None = None, connect_to: tuple[str, int] | None = None,
                 timeout: float = 10.0) -> str:
    """GET the policy as RFC 8461 §3.3 says: HTTPS, valid certificate for
    ``mta-sts.<domain>``, no redirects, 200, ``text/plain``, at most 64 KiB."""
    host = f"mta-sts.{domain}"
    url = f"https://{host}{WELL_KNOWN}"
    via = f" (connecting to {connect_to[0]}:{connect_to[1]})" if connect_to else ""
    try:
        ctx = policy_context(cafile)
    except (OSError, ssl.SSLError) as exc:
        raise MtaStsError(f"cannot load dns.mta_sts_cafile {cafile}: {exc}") from exc
    conn = _Connection(host, connect_to or (host, 443), ctx, timeout)
    try:
        conn.request("GET", WELL_KNOWN, headers={"User-Agent": "postfix-certwatch"})
        resp = conn.getresponse()
        body = resp.read(MAX_POLICY_BYTES + 1)
    except ssl.SSLCertVerificationError as exc:
        raise MtaStsError(f"{url}{via}: the policy server's certificate is not valid for "
                          f"{host}: {exc.verify_message}") from exc
    except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
        raise MtaStsError(f"{url}{via}: {exc.__class__.__name__}: {exc}") from exc
    finally:
        conn.close()
    if 300 <= resp.status < 400:
        raise MtaStsError(f"{url}{via}: HTTP {resp.status} redirect to "
                          f"{resp.getheader('Location', '?')}: RFC 8461 forbids redirects")
    if resp.status != 200:
        raise MtaStsError(f"{url}{via}: HTTP {resp.status} {resp.reason}")
    ctype = (resp.getheader("Content-Type") or "").split(";")[0].strip().lower()
    if ctype != "text/plain":
        raise MtaStsError(f"{url}{via}: Content-Type {ctype or 'missing'}, must be text/plain")
    if len(body) > MAX_POLICY_BYTES:
        raise MtaStsError(f"{url}{via}: larger than {MAX_POLICY_BYTES} bytes")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MtaStsError(f"{url}{via}: not UTF-8 text") from exc


# --------------------------------------------------------------------------- check
def check(config: Config, domain: str, mx_names: Sequence[str], leaf: x509.Certificate, *,
          here: Sequence[str] | None = None, resolver: Resolver | None = None) -> MtaStsResult:
    """Check ``domain``'s MTA-STS policy against its MX names and the certificate.

    ``mx_names``: all the domain's MX host names (e.g. from :func:`daemon.renew_check.mx.coverage`);
    ``here``: those that point at this host and must be covered by ``leaf`` (default: all).
    """
    domain = domain.rstrip(".").lower()
    resolver = resolver or Resolver.from_config(config.dns)
    txt = resolver.lookup(f"_mta-sts.{domain}", "TXT")
    if not txt.ok:
        return MtaStsResult(domain, txt, problems=(Problem(
            Code.DNS_LOOKUP_FAILED, Status.WARNING, f"{domain}: {txt.describe()}",
            "senders cannot find the MTA-STS record either: fix the zone"),))
    sts = [r for r in txt.records if txt_strings(r).startswith("v=STSv1")]
    if not sts:
        return MtaStsResult(domain, txt, notes=(f"{domain}: no MTA-STS policy (no v=STSv1 TXT at "
                                                f"_mta-sts.{domain})",))
    url = f"https://mta-sts.{domain}{WELL_KNOWN}"
    if len(sts) > 1:
        return MtaStsResult(domain, txt, url=url, problems=(Problem(
            Code.MTA_STS_POLICY, Status.WARNING,
            f"{domain}: {len(sts)} v=STSv1 TXT records at _mta-sts.{domain}: senders treat "
            "that as no policy (RFC 8461 §3.1)", "keep exactly one"),))
    policy_id = parse_txt(sts[0]).get("id", "")
    problems: list[Problem] = []
    if not _ID.match(policy_id):
        problems.append(Problem(Code.MTA_STS_POLICY, Status.WARNING,
                                f"{domain}: _mta-sts TXT id {policy_id!r} is not 1-32 letters/digits",
                                "publish e.g. v=STSv1; id=20260101T0000;"))
    try:
        connect = parse_connect(config.dns.mta_sts_connect)
        text = fetch_policy(domain, cafile=config.dns.mta_sts_cafile, connect_to=connect,
                            timeout=config.dns.timeout)
        policy = parse_policy(text)
    except MtaStsError as exc:
        problems.append(Problem(
            Code.MTA_STS_POLICY, Status.WARNING, f"{domain}: MTA-STS policy: {exc}",
            "senders that cached the policy keep using it until max_age runs out; new senders "
            "ignore MTA-STS: fix the policy server"))
        return MtaStsResult(domain, txt, policy_id, url, None, tuple(problems))
    found, notes = _judge(domain, policy, mx_names, leaf, here)
    return MtaStsResult(domain, txt, policy_id, url, policy, tuple(problems + found), tuple(notes))


def check_all(config: Config, coverage: MxCoverage, leaf: x509.Certificate, *,
              resolver: Resolver | None = None) -> tuple[MtaStsResult, ...]:
    """:func:`check` for every accepted domain with an MX pointing at this host (the others
    are not this server's business); nothing when ``dns.mta_sts`` is off."""
    if not config.dns.mta_sts:
        return ()
    resolver = resolver or Resolver.from_config(config.dns)
    return tuple(check(config, d.domain, [h.name for h in d.hosts], leaf,
                       here=[h.name for h in d.here], resolver=resolver)
                 for d in coverage.domains if d.here)


def _judge(domain: str, policy: Policy, mx_names: Sequence[str], leaf: x509.Certificate,
           here: Sequence[str] | None) -> tuple[list[Problem], list[str]]:
    """The policy against the MX names and the certificate's names (pure)."""
    days = policy.max_age / 86400
    notes = [f"{domain}: MTA-STS mode {policy.mode}, max_age {policy.max_age} s ({days:g} days), "
             f"mx {', '.join(policy.mx) or '(none)'}"]
    if policy.mode is StsMode.NONE:
        notes.append(f"{domain}: mode none: the policy is being withdrawn, senders ignore it")
        return [], notes
    if policy.mode is StsMode.TESTING:
        notes.append(f"{domain}: mode testing: senders report failures (TLS-RPT) but deliver")
    if policy.max_age < SHORT_MAX_AGE and policy.mode is StsMode.ENFORCE:
        notes.append(f"{domain}: max_age below a week: RFC 8461 recommends weeks or more")
    severity = Status.CRITICAL if policy.mode is StsMode.ENFORCE else Status.WARNING
    effect = ("senders enforcing MTA-STS will not deliver" if policy.mode is StsMode.ENFORCE
              else "senders will report failures (mode testing)")
    patterns = ", ".join(policy.mx)
    problems: list[Problem] = []
    for name in mx_names:
        if not policy.matches(name):
            problems.append(Problem(
                Code.MTA_STS_MISMATCH, severity,
                f"{domain}: MX {name} matches none of the MTA-STS policy's mx patterns "
                f"({patterns}): {effect} to it",
                f"add 'mx: {name}' to the policy and change its id in the _mta-sts TXT record"))
    now = dt.datetime.now(dt.UTC)
    for name in (mx_names if here is None else here):
        if check_names(leaf, [name], Trust((), ()), now, "certificate"):
            problems.append(Problem(
                Code.MTA_STS_MISMATCH, severity,
                f"{domain}: the certificate does not cover MX {name} (it covers "
                f"{', '.join(names_of(leaf)) or 'no names'}): {effect} to it",
                f"add {name} to the certificate (certbot --expand -d {name})"))
    cert_names = [n for n in names_of(leaf) if not _is_ip(n)]
    # a certificate wildcard fits a pattern it covers (*.example.com ~ mx1.example.com)
    matched = [n for n in cert_names if any(mx_matches(p, n) or mx_matches(n, p) for p in policy.mx)]
    if cert_names and not matched:
        problems.append(Problem(
            Code.MTA_STS_MISMATCH, severity,
            f"{domain}: none of the certificate's names ({', '.join(cert_names)}) matches the "
            f"MTA-STS policy's mx patterns ({patterns})",
            "serve a certificate for a name the policy lists, or list its name in the policy"))
    elif matched:
        notes.append(f"{domain}: certificate names matching the policy: {', '.join(matched)}")
    return problems, notes


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
