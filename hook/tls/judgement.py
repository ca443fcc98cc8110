"""Turn what a probe observed into a verdict an admin can act on.

One verdict per service: a status (the worst of its problems) and the problems
(:class:`hook.verdict.Problem`). Uses the one validator (:mod:`hook.certs.validate`) for the
served chain, so the probe, the deploy hook and the daemon agree.

Severity depends on the service's role (:class:`Role`): on an opportunistic port 25 an
anonymous cipher or TLS 1.0 is a warning (a sender that cannot do better would otherwise
send in clear text), on submission and implicit TLS, where clients log in, it is critical.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from hook.certs import Trust, check_chain, fingerprint
from hook.tls.starttls import DeepResult, Failure, ProbeResult, Target
from hook.verdict import Code, Problem, Status, worst

if TYPE_CHECKING:
    from hook.config import ProbeConfig

FAILURE_STATUS = {
    Failure.BUSY: Status.WARNING,
    Failure.TIMEOUT: Status.CRITICAL,
    Failure.UNREACHABLE: Status.CRITICAL,
    Failure.NO_STARTTLS: Status.CRITICAL,
    Failure.STARTTLS_REFUSED: Status.CRITICAL,
    Failure.HANDSHAKE_FAILED: Status.CRITICAL,
    Failure.PROTOCOL_ERROR: Status.CRITICAL,
    Failure.WRONG_MODE: Status.CRITICAL,
    Failure.NAME_UNRESOLVED: Status.CRITICAL,
}

CERTBOT_RENEW_FRACTION = 1 / 3
"""certbot renews a certificate when a third of its lifetime is left."""


class Role(StrEnum):
    """What a TLS service is for, which decides how bad a weakness is."""

    MX = "mx"
    """Port 25: opportunistic STARTTLS between servers (RFC 3207 / RFC 7435)."""
    SUBMISSION = "submission"
    """Port 587: STARTTLS, clients authenticate."""
    SUBMISSIONS = "submissions"
    """Port 465: implicit TLS (RFC 8314), clients authenticate."""

    @property
    def opportunistic(self) -> bool:
        return self is Role.MX


def role_for(target: Target, security_level: str = "") -> Role:
    """Implicit TLS is ``submissions``; port 25 or a ``may`` level is ``mx``; else submission."""
    if target.implicit_tls:
        return Role.SUBMISSIONS
    if target.port == 25 or security_level == "may":
        return Role.MX
    if target.port == 587 or security_level in ("encrypt", "dane", "verify", "secure"):
        return Role.SUBMISSION
    return Role.MX


@dataclass(frozen=True)
class Thresholds:
    """Expiry warnings as fractions of the certificate's own lifetime, with a floor.

    Let's Encrypt issues 90-, 64-, 45- and 6-day certificates and certbot renews at a
    third of the lifetime left, so a certificate with less than ``warning_fraction``
    (default 1/4) left missed renewals; ``critical`` below ``critical_fraction``.
    ``*_days`` are absolute floors: warn anyway with fewer days than that left, so a
    human has time to act. A floor never reaches past half of certbot's renewal window
    (1/6 of the lifetime): a 6-day certificate is not in permanent warning.

    ==========  ===============  ===============
    lifetime    warning below    critical below
    ==========  ===============  ===============
    90 days     22.5 days        9 days
    45 days     11.25 days       4.5 days
    6 days      1.5 days         1 day (floor)
    ==========  ===============  ===============

    ``warning_at_days`` / ``critical_at_days`` (``renew-check -w/-c DAYS``, as in
    check_ssl_cert) replace the fraction and floor with a fixed number of days.
    """

    warning_fraction: float = 0.25
    critical_fraction: float = 0.10
    warning_days: float = 3.0
    critical_days: float = 1.0
    warning_at_days: float | None = None
    critical_at_days: float | None = None

    def limits(self, lifetime_days: float) -> tuple[float, float]:
        """(warning, critical) thresholds in days left for a certificate of this lifetime."""
        cap = lifetime_days * CERTBOT_RENEW_FRACTION / 2
        warn = max(self.warning_fraction * lifetime_days, min(self.warning_days, cap))
        crit = max(self.critical_fraction * lifetime_days, min(self.critical_days, cap))
        if self.warning_at_days is not None:
            warn = self.warning_at_days
        if self.critical_at_days is not None:
            crit = self.critical_at_days
            if self.warning_at_days is None:
                warn = max(warn, crit)  # a warning always comes before the critical
        return warn, min(crit, warn)


def thresholds_of(probe_config: ProbeConfig) -> Thresholds:
    """The thresholds configured in ``[probe]``."""
    p = probe_config
    return Thresholds(p.warning_fraction, p.critical_fraction, p.warning_days, p.critical_days)


def lifetime_left(not_before: dt.datetime, not_after: dt.datetime, now: dt.datetime) -> float:
    """Fraction of the lifetime left (1.0 fresh, 0.0 expired)."""
    total = (not_after - not_before).total_seconds()
    if total <= 0:
        return 0.0
    return max(0.0, min(1.0, (not_after - now).total_seconds() / total))


def expiry_problems(not_before: dt.datetime, not_after: dt.datetime, now: dt.datetime,
                    thresholds: Thresholds, where: str) -> list[Problem]:
    if now >= not_after or now < not_before:
        return []  # expired / not yet valid are reported by the validator
    frac = lifetime_left(not_before, not_after, now)
    days = (not_after - now).total_seconds() / 86400
    lifetime = (not_after - not_before).total_seconds() / 86400
    warn_at, crit_at = thresholds.limits(lifetime)
    status = None
    if days < crit_at:
        status = Status.CRITICAL
    elif days < warn_at:
        status = Status.WARNING
    if status is None:
        return []
    return [Problem(Code.EXPIRING_SOON, status,
                    f"{where}: expires {not_after:%Y-%m-%d %H:%M} UTC, in {days:.1f} days "
                    f"({frac:.0%} of its {lifetime:.0f}-day lifetime left; certbot renews at 33%)",
                    "certbot should have renewed already: check its timer with 'systemctl "
                    "list-timers \"*certbot*\" postfix-certwatch-renew.timer' (certbot.timer on "
                    "Debian/Ubuntu, certbot-renew.timer from EPEL, snap.certbot.renew.timer "
                    "with snap) and 'certbot renew' in /var/log/letsencrypt/")]


# The postconf lines that fix the weaknesses the deep checks find. Both the opportunistic
# (may) and the mandatory (encrypt) parameter, since a service may use either.
FIX_ANONYMOUS = ("postconf -e 'smtpd_tls_exclude_ciphers = aNULL' "
                 "'smtpd_tls_mandatory_exclude_ciphers = aNULL' && postfix reload")
FIX_PROTOCOLS = ("postconf -e 'smtpd_tls_protocols = >=TLSv1.2' "
                 "'smtpd_tls_mandatory_protocols = >=TLSv1.2' && postfix reload")


def deep_problems(deep: DeepResult, role: Role, where: str) -> list[Problem]:
    """Problems from the extra handshakes, with a severity that fits the role."""
    problems = []
    bad = Status.WARNING if role.opportunistic else Status.CRITICAL
    if deep.anonymous_cipher:
        why = ("harmless to opportunistic delivery, which verifies nothing anyway" if
               role.opportunistic else f"on {role.value} clients send passwords")
        problems.append(Problem(
            Code.ANONYMOUS_CIPHERS, bad,
            f"{where}: accepts the anonymous cipher {deep.anonymous_cipher}: the server then "
            "sends no certificate, so a client that offers anonymous ciphers first sees none "
            "(checkers call a correct certificate 'Untrusted') and cannot tell the server "
            f"from an interceptor; {why}", FIX_ANONYMOUS))
    if deep.weak_protocols:
        why = ("on port 25 disabling them makes a sender that cannot do better fall back to "
               "clear text; many operators accept that" if role.opportunistic else
               "submission clients that need them are long obsolete")
        problems.append(Problem(
            Code.WEAK_PROTOCOL, bad,
            f"{where}: accepts {' and '.join(deep.weak_protocols)} (deprecated by RFC 8996); "
            f"{why}", FIX_PROTOCOLS))
    return problems


@dataclass(frozen=True)
class Verdict:
    """The judgement on one probed service."""

    target: Target
    status: Status
    problems: tuple[Problem, ...]
    leaf_sha256: str | None
    not_after: dt.datetime | None
    lifetime_left: float | None
    protocol: str
    cipher: str
    seconds: float
    role: Role | None = None
    deep: DeepResult | None = None
    starttls_advertised: bool | None = None
    not_before: dt.datetime | None = None

    @property
    def codes(self) -> tuple[Code, ...]:
        return tuple(p.code for p in self.problems)


def judge(result: ProbeResult, *, trust: Trust, now: dt.datetime | None = None,
          names: Sequence[str] = (), expected_sha256: str | None = None,
          thresholds: Thresholds = Thresholds(), deep: DeepResult | None = None,
          role: Role | None = None, expected: Sequence[str] = ()) -> Verdict:
    """Judge one probe result.

    ``expected_sha256`` (or several in ``expected``: an RSA and an ECDSA leaf): the leaf
    on disk; a different served leaf is ``stale`` (without them, no stale check).
    ``deep``: the extra handshakes of :func:`hook.tls.starttls.probe_deep`, judged for ``role``
    (default: guessed from the target, :func:`role_for`).
    """
    now = now or dt.datetime.now(dt.UTC)
    role = role or role_for(result.target)
    where = result.target.label
    hs = result.handshake
    extra = deep_problems(deep, role, where) if deep is not None else []
    if hs is None or not hs.chain:
        code = Code(result.failure.value) if result.failure else Code.HANDSHAKE_FAILED
        status = FAILURE_STATUS.get(result.failure, Status.UNKNOWN) if result.failure else \
            Status.UNKNOWN
        failure = Problem(code, status, result.detail, _failure_fix(code))
        weak = deep.weak_handshake if deep is not None else None
        if code is not Code.HANDSHAKE_FAILED or weak is None:
            return Verdict(result.target, status, (failure, *extra), None, None, None, "", "",
                           result.seconds, role, deep, None)
        # Only TLS 1.0/1.1 works: say so, and judge the chain seen over the old protocol.
        only = Problem(Code.WEAK_PROTOCOL, Status.CRITICAL,
                       f"{where}: speaks only {' and '.join(deep.weak_protocols if deep else ())}; "
                       "clients on OpenSSL 3 defaults (TLS 1.2+) cannot connect at all",
                       FIX_PROTOCOLS)
        hs = weak
        extra = [failure, only, *(p for p in extra if p.code is not Code.WEAK_PROTOCOL)]
    leaf = hs.leaf
    problems = check_chain(hs.chain, trust=trust, now=now, names=names, where=where)
    problems += expiry_problems(leaf.not_valid_before_utc, leaf.not_valid_after_utc, now,
                                thresholds, where)
    sha = fingerprint(leaf)
    wanted = [e for e in (expected_sha256, *expected) if e]
    if wanted and sha not in wanted:
        problems.append(Problem(Code.STALE, Status.CRITICAL,
                                f"{where}: serves {sha[:16]}, the certificate on disk is "
                                f"{' or '.join(w[:16] for w in wanted)}",
                                "postfix reload (idle smtpd processes keep the old "
                                "certificate), or check which file this service reads"))
    problems += extra
    return Verdict(result.target, worst([p.status for p in problems]), tuple(problems), sha,
                   leaf.not_valid_after_utc,
                   lifetime_left(leaf.not_valid_before_utc, leaf.not_valid_after_utc, now),
                   hs.protocol, hs.cipher, result.seconds, role, deep, hs.starttls_advertised,
                   leaf.not_valid_before_utc)


def _failure_fix(code: Code) -> str:
    return {
        Code.NO_STARTTLS: "smtpd_tls_security_level = may (port 25) or encrypt (587), and "
                          "smtpd_tls_chain_files set; for one service: -o in master.cf",
        Code.STARTTLS_REFUSED: "Postfix cannot load its key/certificate: check the maillog "
                               "for 'cannot load' and that the key matches the certificate",
        Code.BUSY: "the server said 421 (busy or postscreen): retry later",
        Code.HANDSHAKE_FAILED: "check smtpd_tls_protocols / ciphers and the maillog",
        Code.TIMEOUT: "is the port filtered, or the server overloaded?",
        Code.UNREACHABLE: "is Postfix running and listening there (postconf -M, ss -ltn)?",
        Code.WRONG_TLS_MODE: "probe it the other way (--implicit / --starttls); on the "
                             "server: master.cf '-o smtpd_tls_wrappermode=yes' is implicit TLS",
        Code.DNS_LOOKUP_FAILED: "check the name (dig HOST A; dig HOST AAAA) and the resolver "
                                "in /etc/resolv.conf; or probe the address",
    }.get(code, "")
