"""Audit Postfix's TLS configuration, server and client side: the mistakes that bite at
renewal time or that checkers report, each with the ``postconf`` line that fixes it.

Server side (``smtpd``): a certificate file that is the leaf alone (certbot's
``cert.pem``, not ``fullchain.pem``), ``smtpd_tls_security_level = encrypt`` on a public
port 25 (RFC 3207: a public MX must not require TLS), protocols below TLS 1.2 allowed,
``smtpd_tls_loglevel``, private keys that other users can read, ``tls_server_sni_maps``
tables that other users can read (``postmap -F`` copies the keys into them), and a
certbot lineage that Postfix reads in place (a renewal reaches new smtpd processes
before the deploy hook can validate it: ``renew-check adopt``).

Client side (``smtp``): ``smtp_tls_security_level``, a CA file when the level or
``smtp_tls_policy_maps`` asks for verification, and a Let's Encrypt lineage used as the
client certificate (no clientAuth EKU; fingerprint pins break at every renewal).

The snapshot (:func:`snapshot`) is the only part that runs ``postconf``; the checks
read certificate and key files (through :func:`_read`) and are otherwise pure.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from hook import files
from hook.certs import parse_reuse_key
from hook.postfix import (
    DB_SUFFIX,
    READER_PARAMS,
    CertFile,
    Postfix,
    Service,
    Side,
    cert_files,
    files_of,
    tls_enabled,
    tls_level,
)
from hook.verdict import Code, Problem, Status

AUDIT_PARAMS = (*READER_PARAMS,
                "smtpd_tls_protocols", "smtpd_tls_mandatory_protocols", "smtpd_tls_loglevel",
                "inet_interfaces", "inet_protocols", "smtpd_tls_CAfile", "myhostname",
                "tls_server_sni_maps",
                "smtp_tls_security_level", "smtp_tls_CAfile", "smtp_tls_CApath",
                "smtp_tls_policy_maps", "tls_append_default_CA")
PROTOCOLS = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
WEAK = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1")
LOOPBACK = ("127.0.0.1", "::1", "localhost", "loopback-only")
MX_PORT = 25


@dataclass(frozen=True)
class PostfixTLS:
    """Postfix's TLS settings: effective main.cf values and the SMTP services."""

    params: Mapping[str, str]
    services: tuple[Service, ...] = ()
    config_directory: str = "/etc/postfix"

    def value(self, name: str, service: Service | None = None) -> str:
        if service is not None and name in service.overrides:
            return service.overrides[name]
        return self.params.get(name, "")

    def level(self, service: Service) -> str:
        """The service's effective ``smtpd_tls_security_level`` (legacy knobs included)."""
        return tls_level(service, self.params)

    def tls_services(self) -> tuple[Service, ...]:
        return tuple(s for s in self.services if tls_enabled(s, self.params))

    def cert_files(self) -> list[CertFile]:
        """Every certificate file Postfix reads (:func:`hook.postfix.cert_files`)."""
        return cert_files(self.params, self.services)


def snapshot(postfix: Postfix) -> PostfixTLS:
    """Read the settings once: ``postconf -x`` for main.cf, ``postconf -M`` for services."""
    return PostfixTLS(postfix.parameters(*AUDIT_PARAMS), postfix.services(),
                      str(postfix.config_directory))


# ------------------------------------------------------------------------- the audit
def audit(tls: PostfixTLS, files: Sequence[CertFile] | None = None, *,
          lineage_roots: Sequence[Path] = (), renewal_conf: Callable[[str], Path | None] | None = None,
          certbot_dir: Path | None = None) -> list[Problem]:
    """Every finding, server side then client side. ``lineage_roots``: certbot's ``live``
    and ``archive`` directories (and the hook's bundle dir), to spot a lineage used as
    the client certificate; ``renewal_conf(path)`` finds its ``renewal/NAME.conf``;
    ``certbot_dir``: certbot's configuration directory, to spot lineages read in place."""
    files = tls.cert_files() if files is None else files
    problems = []
    for f in files:
        if f.side is Side.SERVER:
            cafile = tls.value("smtpd_tls_CAfile", f.services[0] if f.services else None)
            problems += check_fullchain(f, cafile)
    problems += check_mx_level(tls)
    problems += check_protocols(tls)
    problems += check_loglevel(tls)
    seen: set[str] = set()
    for f in files:
        if f.key_path not in seen:
            seen.add(f.key_path)
            problems += check_key_permissions(f)
    problems += check_sni_tables(tls)
    if certbot_dir is not None:
        problems += check_in_place(files, certbot_dir)
    problems += check_client(tls, files, lineage_roots, renewal_conf)
    return problems


def check_in_place(files: Sequence[CertFile], certbot_dir: Path) -> list[Problem]:
    """Server files read straight from certbot's ``live/``/``archive/``: certbot swaps the
    ``live/`` links at renewal, and every smtpd process started after that loads the new
    pair, before the deploy hook has validated it and whether or not it is good."""
    roots = [os.path.realpath(certbot_dir / d) for d in ("live", "archive")]
    uses: dict[str, list[str]] = {}
    for f in files:
        if f.side is not Side.SERVER:
            continue
        for path in dict.fromkeys((f.key_path, f.path)):
            real = os.path.realpath(path)
            for root in roots:
                if real.startswith(root + os.sep):
                    name = Path(real).relative_to(root).parts[0]
                    uses.setdefault(name, []).append(f"{f.use} = {path}")
                    break
    live = certbot_dir / "live"
    return [Problem(
        Code.LINEAGE_IN_PLACE, Status.WARNING,
        f"lineage {name}: Postfix reads certbot's files in place ({'; '.join(dict.fromkeys(u))}): "
        "the moment certbot renews, every new smtpd process loads the new pair, before the "
        "deploy hook can validate it; a bad renewal cannot be held back or rolled back",
        f"renew-check adopt {live / name} (Postfix then reads a copy the hook validates, "
        "installs and proves; renew-check adopt --undo reverts)")
        for name, u in sorted(uses.items())]


def check_sni_tables(tls: PostfixTLS) -> list[Problem]:
    """``postmap -F`` copies the key files (base64) into the SNI table, and the table
    takes the mode of its source file (often 0644): it must be as private as a key."""
    out = []
    for spec in files_of(tls.params.get("tls_server_sni_maps", "")):
        kind, _, name = spec.partition(":")
        suffix = DB_SUFFIX.get(kind)
        if suffix is None or not name.startswith("/"):
            continue
        db = name + suffix
        try:
            mode = stat.S_IMODE(os.stat(db).st_mode)
        except OSError:
            continue
        if mode & 0o004 and _others_can_reach(Path(db)):
            out.append(Problem(
                Code.SNI_TABLE_EXPOSED, Status.CRITICAL,
                f"SNI table {db} (tls_server_sni_maps = {spec}) is readable by every local "
                f"user (mode {mode:04o}): postmap -F copied the private keys into it",
                f"chmod 600 {db} (the deploy hook keeps it 0600 from then on); the keys may "
                "have been copied: re-issue them"))
    return out


def check_fullchain(f: CertFile, cafile: str = "") -> list[Problem]:
    """A server certificate file must hold the leaf and its intermediate(s).

    Measured with Postfix 3.7 / OpenSSL 3: a leaf-only file still gets its issuer sent
    when ``smtpd_tls_CAfile`` holds it (OpenSSL completes the chain from the CA file):
    fine while that file follows the lineage (certbot's ``chain.pem``), a time bomb when
    it is a copy: Let's Encrypt rotates intermediates (R10/R11, E5/E6, ...).
    """
    data = _read(f.path)
    if data is None:
        return []
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        return []
    leaf = certs[0]
    if len(certs) > 1 or leaf.issuer == leaf.subject:
        return []
    fix_to = f.path[: -len("cert.pem")] + "fullchain.pem" if f.path.endswith("/cert.pem") else \
        "a file with the leaf followed by its intermediate"
    fix = (f"use {fix_to} (smtpd_tls_chain_files = privkey.pem, fullchain.pem); with the deploy "
           "hook: renew-check adopt /etc/letsencrypt/live/NAME")
    issuer = leaf.issuer.rfc4514_string()
    completed = False
    if cafile:
        try:
            completed = any(c.subject == leaf.issuer
                            for c in x509.load_pem_x509_certificates(_read(cafile) or b""))
        except ValueError:
            completed = False
    if completed:
        same_lineage = os.path.dirname(os.path.realpath(cafile)) == \
            os.path.dirname(os.path.realpath(f.path))
        if same_lineage:
            return [Problem(Code.CERT_NOT_FULLCHAIN, Status.OK,
                            f"{f.use} = {f.path} holds the leaf only; OpenSSL completes the "
                            f"chain from smtpd_tls_CAfile = {cafile} (same lineage, so it "
                            "follows renewals); one fullchain file is simpler", fix)]
        return [Problem(Code.CERT_NOT_FULLCHAIN, Status.WARNING,
                        f"{f.use} = {f.path} holds the leaf only; its issuer ({issuer}) is sent "
                        f"only because smtpd_tls_CAfile = {cafile} holds it: when Let's Encrypt "
                        "issues the next certificate from another intermediate, clients get an "
                        "incomplete chain (missing_intermediate)", fix)]
    return [Problem(
        Code.CERT_NOT_FULLCHAIN, Status.CRITICAL,
        f"{f.use} = {f.path} holds the leaf only, without the intermediate that issued it "
        f"({issuer}): clients that do not have it cached see an untrusted chain "
        "(missing_intermediate)", fix)]


def _public_port25(tls: PostfixTLS, svc: Service) -> bool:
    if svc.port != MX_PORT or svc.implicit_tls:
        return False
    bound = svc.name.rpartition(":")[0].strip("[]") if ":" in svc.name else ""
    if bound:
        return bound not in LOOPBACK
    names = files_of(tls.params.get("inet_interfaces", "all"))
    return not all(n.strip("[]") in LOOPBACK for n in names)


def check_mx_level(tls: PostfixTLS) -> list[Problem]:
    """RFC 3207: a publicly referenced MX must not require TLS (senders that cannot do it
    bounce or defer). ``encrypt`` belongs on 587/465."""
    out = []
    for svc in tls.services:
        if _public_port25(tls, svc) and tls.level(svc) == "encrypt":
            out.append(Problem(
                Code.MX_TLS_REQUIRED, Status.WARNING,
                f"service {svc.name} (port 25) requires TLS (smtpd_tls_security_level = encrypt): "
                "senders without TLS cannot deliver to this MX (RFC 3207 forbids it for a "
                "public MX)",
                "postconf -e 'smtpd_tls_security_level = may' and put "
                "'-o smtpd_tls_security_level=encrypt' on the submission service in master.cf"))
    return out


def enabled_protocols(value: str) -> tuple[str, ...]:
    """Which protocols a Postfix protocol list allows: ``>=TLSv1.2``, ``!SSLv3, !TLSv1``,
    ``TLSv1.2 TLSv1.3``, ``<=TLSv1.1`` (Postfix 3.6 syntax and the older ones)."""
    items = [i for i in value.replace(",", " ").replace(":", " ").split() if i]
    low, high = 0, len(PROTOCOLS) - 1
    included: set[str] = set()
    excluded: set[str] = set()
    for item in items:
        if item.startswith(">="):
            low = max(low, _index(item[2:], low))
        elif item.startswith("<="):
            high = min(high, _index(item[2:], high))
        elif item.startswith("!"):
            excluded.add(item[1:])
        else:
            included.add(item)
    allowed = PROTOCOLS[low:high + 1]
    if included:
        allowed = tuple(p for p in allowed if p in included)
    return tuple(p for p in allowed if p not in excluded)


def _index(name: str, default: int) -> int:
    return PROTOCOLS.index(name) if name in PROTOCOLS else default


def check_protocols(tls: PostfixTLS) -> list[Problem]:
    """Protocols below TLS 1.2 that a service's configuration allows (what the server
    actually accepts is the probe's deep check; OpenSSL may refuse some on its own)."""
    out = []
    for svc in tls.tls_services():
        mandatory = svc.implicit_tls or tls.level(svc) == "encrypt"
        param = "smtpd_tls_mandatory_protocols" if mandatory else "smtpd_tls_protocols"
        weak = [p for p in enabled_protocols(tls.value(param, svc)) if p in WEAK]
        if not weak:
            continue
        mx = not mandatory  # opportunistic (may): the MX role
        out.append(Problem(
            Code.WEAK_PROTOCOL, Status.OK if mx else Status.WARNING,
            f"service {svc.name}: {param} = {tls.value(param, svc) or '(default)'} allows "
            f"{', '.join(weak)}" + (" (on an opportunistic MX this is a choice: old "
                                    "senders otherwise fall back to clear text)" if mx else ""),
            f"postconf -e '{param} = >=TLSv1.2'"))
    return out


def check_loglevel(tls: PostfixTLS) -> list[Problem]:
    """``smtpd_tls_loglevel``: 0 hides handshake failures, 3+ dumps every session."""
    raw = tls.params.get("smtpd_tls_loglevel", "0") or "0"
    level = int(raw) if raw.isdigit() else 0
    if level == 0:
        return [Problem(Code.TLS_LOGLEVEL, Status.OK,
                        "smtpd_tls_loglevel = 0: failed TLS handshakes are not logged, so a "
                        "broken certificate leaves no trace in the mail log",
                        "postconf -e 'smtpd_tls_loglevel = 1'")]
    if level >= 3:
        return [Problem(Code.TLS_LOGLEVEL, Status.WARNING,
                        f"smtpd_tls_loglevel = {level}: hex dumps of every TLS session fill "
                        "the log (meant for debugging only)",
                        "postconf -e 'smtpd_tls_loglevel = 1'")]
    return []


def check_key_permissions(f: CertFile) -> list[Problem]:
    """A private key must not be readable by other users (group ``root``/``ssl-cert`` at most)."""
    path = f.key_path
    try:
        st = os.stat(path)
    except OSError:
        return []
    mode = stat.S_IMODE(st.st_mode)
    problems = []
    if mode & 0o002 or mode & 0o020:
        problems.append(f"writable by {'anyone' if mode & 0o002 else 'its group'} (mode {mode:04o})")
    if mode & 0o004 and _others_can_reach(Path(path)):
        problems.append(f"readable by every local user (mode {mode:04o})")
    if st.st_uid != 0:
        problems.append(f"owned by uid {st.st_uid}, not root")
    if not problems:
        return []
    return [Problem(Code.KEY_PERMISSIONS, Status.CRITICAL if mode & 0o006 else Status.WARNING,
                    f"private key {path} ({f.use}): {'; '.join(problems)}",
                    f"chown root:root {path} && chmod 600 {path}")]


def _others_can_reach(path: Path) -> bool:
    """Can a user who is neither owner nor group traverse every parent directory?"""
    for parent in Path(os.path.realpath(path)).parents:
        try:
            if not os.stat(parent).st_mode & 0o001:
                return False
        except OSError:
            return False
    return True


CLIENT_VERIFY = ("verify", "secure")


def policy_verify_destinations(text: str) -> list[str]:
    """Destinations in an ``smtp_tls_policy_maps`` source file that need a CA: level
    ``verify``/``secure`` without their own ``tafile=``."""
    out = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[1] in CLIENT_VERIFY and \
                not any(f.startswith("tafile=") for f in fields[2:]):
            out.append(fields[0])
    return out


def _policy_sources(value: str, config_directory: str) -> list[Path]:
    paths = []
    for item in files_of(value):
        kind, _, rest = item.partition(":")
        if kind in ("hash", "btree", "lmdb", "cdb", "dbm", "texthash", "inline") and rest:
            if kind == "inline":
                continue
            path = Path(rest if rest.startswith("/") else f"{config_directory}/{rest}")
            paths.append(path)
    return paths


def check_client(tls: PostfixTLS, files: Sequence[CertFile], lineage_roots: Sequence[Path],
                 renewal_conf: Callable[[str], Path | None] | None) -> list[Problem]:
    out = []
    level = tls.params.get("smtp_tls_security_level", "") or "none"
    has_ca = bool(tls.params.get("smtp_tls_CAfile") or tls.params.get("smtp_tls_CApath")
                  or tls.params.get("tls_append_default_CA") == "yes")
    if level == "none":
        out.append(Problem(Code.CLIENT_TLS_LEVEL, Status.WARNING,
                           "smtp_tls_security_level = none: mail this server sends to other "
                           "servers goes out in clear text even when they offer STARTTLS",
                           "postconf -e 'smtp_tls_security_level = may'"))
    if level in CLIENT_VERIFY and not has_ca:
        out.append(Problem(Code.CLIENT_NO_CAFILE, Status.CRITICAL,
                           f"smtp_tls_security_level = {level} but neither smtp_tls_CAfile nor "
                           "smtp_tls_CApath is set: no server certificate can be verified, "
                           "every delivery is deferred",
                           "postconf -e 'smtp_tls_CAfile = /etc/ssl/certs/ca-certificates.crt'"))
    if not has_ca:
        for src in _policy_sources(tls.params.get("smtp_tls_policy_maps", ""),
                                   tls.config_directory):
            text = _read(str(src))
            dests = policy_verify_destinations(text.decode("utf-8", "replace")) if text else []
            if dests:
                out.append(Problem(
                    Code.CLIENT_NO_CAFILE, Status.CRITICAL,
                    f"smtp_tls_policy_maps ({src}) asks to verify {', '.join(dests[:5])}"
                    f"{' ...' if len(dests) > 5 else ''} but no CA file is set: deliveries "
                    "there are deferred",
                    "postconf -e 'smtp_tls_CAfile = /etc/ssl/certs/ca-certificates.crt' "
                    "(or tafile= in the policy entry)"))
    roots = [os.path.realpath(r) for r in lineage_roots]
    for f in files:
        if f.side is not Side.CLIENT:
            continue
        real = os.path.realpath(f.path)
        if not any(real == r or real.startswith(r + os.sep) for r in roots):
            continue
        out.append(_client_cert_warning(f, renewal_conf))
    return out


def _client_cert_warning(f: CertFile, renewal_conf: Callable[[str], Path | None] | None) -> Problem:
    data = _read(f.path) or b""
    eku = "unknown"
    try:
        leaf = x509.load_pem_x509_certificates(data)[0]
        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        eku = "yes" if ExtendedKeyUsageOID.CLIENT_AUTH in usages else "no"
    except (ValueError, IndexError, x509.ExtensionNotFound):
        pass
    reuse = None
    conf = renewal_conf(f.path) if renewal_conf else None
    if conf is not None:
        text = _read(str(conf))
        if text is not None:
            reuse = parse_reuse_key(text.decode("utf-8", "replace"))
    detail = (f"{f.use} = {f.path}: a Let's Encrypt certificate is Postfix's client "
              "certificate. Let's Encrypt no longer includes the clientAuth EKU "
              f"(this one: {'has it' if eku == 'yes' else 'lacks it' if eku == 'no' else 'unknown'}), "
              "so peers that check it refuse it; peers that pin its fingerprint "
              "(relay_clientcerts, check_ccert_access) break at every renewal unless they pin "
              "the public key and the key is reused")
    if reuse is not None:
        detail += f" (reuse_key is {'on' if reuse else 'off'} in {conf})"
    return Problem(Code.CLIENT_CERT_EKU, Status.WARNING, detail,
                   "use a client certificate from a CA that issues clientAuth, or ask peers to "
                   "pin the public key (smtpd_tls_fingerprint_digest + pubkey) and renew with "
                   "certbot --reuse-key")


def _read(path: str) -> bytes | None:
    try:
        return files.read_bounded(path, files.PEM_MAX)
    except OSError:
        return None
