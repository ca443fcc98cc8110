"""Verdict data: statuses, problem codes and problems. Models only, no rendering.

Status follows the Nagios plugin convention (its ``exit_code``, from :mod:`hook.exits`). Problem codes are a
stable, documented vocabulary shared by the deploy hook (on-disk validation), the probe
(what a service serves), ``renew-check --json`` and the daemon's metrics and alerts.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from hook.exits import RenewCheckExit


class Status(StrEnum):
    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"
    UNKNOWN = "unknown"

    @property
    def exit_code(self) -> RenewCheckExit:
        """The Nagios exit code: :class:`hook.exits.RenewCheckExit` of the same name."""
        return RenewCheckExit[self.name]

    @property
    def rank(self) -> int:
        """Severity order for "worst of": ok < unknown < warning < critical."""
        return {"ok": 0, "unknown": 1, "warning": 2, "critical": 3}[self.value]


def worst(statuses: list[Status] | tuple[Status, ...]) -> Status:
    return max(statuses, key=lambda s: s.rank, default=Status.OK)


class Code(StrEnum):
    # -- what a probe of a service can show -------------------------------------------
    BAD_INPUT = "bad_input"
    """The target as given cannot be probed (bad host, port, brackets): UNKNOWN."""
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    BUSY = "busy"
    NO_STARTTLS = "no_starttls"
    STARTTLS_REFUSED = "starttls_refused"
    HANDSHAKE_FAILED = "handshake_failed"
    PROTOCOL_ERROR = "protocol_error"
    WRONG_TLS_MODE = "wrong_tls_mode"
    UNTRUSTED = "untrusted"
    SELF_SIGNED = "self_signed"
    MISSING_INTERMEDIATE = "missing_intermediate"
    NAME_MISMATCH = "name_mismatch"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRING_SOON = "expiring_soon"
    STALE = "stale"
    ANONYMOUS_CIPHERS = "anonymous_ciphers"
    WEAK_PROTOCOL = "weak_protocol"
    # -- what on-disk validation of a lineage can show --------------------------------
    UNREADABLE = "unreadable"
    CHAIN_ORDER = "chain_order"
    BAD_SIGNATURE = "bad_signature"
    WEAK_KEY = "weak_key"
    KEY_MISMATCH = "key_mismatch"
    ENCRYPTED_KEY = "encrypted_key"
    KEY_CHANGED = "key_changed"
    LINEAGE_INCONSISTENT = "lineage_inconsistent"
    """cert/chain/fullchain/privkey.pem disagree or hold more than PEM blocks (not what
    certbot writes)."""
    # -- what the DNS-aware checks can show (DANE, MX coverage, MTA-STS) --
    DANE_MISMATCH = "dane_mismatch"
    DANE_BOGUS = "dane_bogus"
    DANE_UNVERIFIED = "dane_unverified"
    ISSUER_CHANGED = "issuer_changed"
    DNS_LOOKUP_FAILED = "dns_lookup_failed"
    MX_NOT_COVERED = "mx_not_covered"
    MTA_STS_MISMATCH = "mta_sts_mismatch"
    MTA_STS_POLICY = "mta_sts_policy"
    # -- what the Postfix TLS configuration audit can show (daemon.renew_check.audit) -----------------
    CERT_NOT_FULLCHAIN = "cert_not_fullchain"
    MX_TLS_REQUIRED = "mx_tls_required"
    TLS_LOGLEVEL = "tls_loglevel"
    KEY_PERMISSIONS = "key_permissions"
    CLIENT_TLS_LEVEL = "client_tls_level"
    CLIENT_NO_CAFILE = "client_no_cafile"
    CLIENT_CERT_EKU = "client_cert_eku"
    LINEAGE_IN_PLACE = "lineage_in_place"
    SNI_TABLE_EXPOSED = "sni_table_exposed"
    # -- what the daemon concludes from the deploy hook's records (daemon.renew_daemon.watch) -------
    DEPLOY_REFUSED = "deploy_refused"
    """The renewal on disk was refused by the hook: Postfix still serves the previous leaf."""
    DEPLOY_ROLLED_BACK = "deploy_rolled_back"
    """The renewal was deployed, not served, and rolled back: the previous leaf is served."""
    DEPLOY_REFUSED_IN_PLACE = "deploy_refused_in_place"
    """Refused, but Postfix reads certbot's files in place: new smtpd processes load them."""
    DEPLOY_ROLLBACK_FAILED = "deploy_rollback_failed"
    """The rollback failed too: what Postfix serves is unknown."""
    # -- what peers see: Postfix's TLS log lines and TLSRPT reports (hook.peers.tlsdiag) --
    PEER_FAILURES_AFTER_RENEWAL = "peer_failures_after_renewal"
    """More inbound TLS handshakes fail since a renewal than before it."""
    PEER_ANONYMOUS_CIPHER = "peer_anonymous_cipher"
    """Sessions used an anonymous (aNULL) cipher: no certificate was sent or checked."""
    PEER_UNTRUSTED = "peer_untrusted"
    """Outbound sessions were Untrusted although the server's certificate can verify."""
    LOG_UNREADABLE = "log_unreadable"
    """Postfix's log (file or journal) cannot be read."""
    TLSRPT_FAILURE = "tlsrpt_failure"
    """A TLSRPT report (RFC 8460) says senders failed to reach our MX over TLS."""
    TLSRPT_MISSING = "tlsrpt_missing"
    """Advice: a domain publishes no ``_smtp._tls`` record, so senders send no reports."""


@dataclass(frozen=True)
class Problem:
    """One finding: a code, how bad it is, what was seen, and what to do about it.

    A problem with status ``ok`` is advice: shown and exported, never raising the exit code.
    """

    code: Code
    status: Status
    detail: str
    fix: str = ""

    def __str__(self) -> str:
        return f"{self.code.value}: {self.detail}" + (f" (fix: {self.fix})" if self.fix else "")
