"""Turn what a probe observed into a verdict an admin can act on.

One verdict per service: a status (the worst of its problems) and the problems
(:class:`hook.verdict.Problem`). Uses the one validator (:mod:`hook.validate`) for the
served chain, so the probe, the deploy hook and the daemon agree.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from hook.bundle import fingerprint
from hook.probe import Failure, ProbeResult, Target
from hook.validate import Trust, check_chain
from hook.verdict import Code, Problem, Status, worst

FAILURE_STATUS = {
    Failure.BUSY: Status.WARNING,
    Failure.TIMEOUT: Status.CRITICAL,
    Failure.UNREACHABLE: Status.CRITICAL,
    Failure.NO_STARTTLS: Status.CRITICAL,
    Failure.STARTTLS_REFUSED: Status.CRITICAL,
    Failure.HANDSHAKE_FAILED: Status.CRITICAL,
    Failure.PROTOCOL_ERROR: Status.CRITICAL,
}


@dataclass(frozen=True)
class Thresholds:
    """Expiry warnings as fractions of the certificate's own lifetime, with a floor.

    certbot renews when a third of the lifetime is left, so a certificate with less than
    ``warning_fraction`` (default 1/4) left missed at least one renewal; ``critical``
    below ``critical_fraction``. ``*_days`` are absolute floors: warn anyway with fewer
    days left than that (6-day certificates make fractions alone too tight).
    """

    warning_fraction: float = 0.25
    critical_fraction: float = 0.10
    warning_days: float = 7.0
    critical_days: float = 2.0


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
    status = None
    if frac < thresholds.critical_fraction or days < thresholds.critical_days:
        status = Status.CRITICAL
    elif frac < thresholds.warning_fraction or days < thresholds.warning_days:
        status = Status.WARNING
    if status is None:
        return []
    return [Problem(Code.EXPIRING_SOON, status,
                    f"{where}: expires {not_after:%Y-%m-%d %H:%M} UTC, in {days:.1f} days "
                    f"({frac:.0%} of its lifetime left)",
                    "certbot should have renewed at 1/3 left: check certbot.timer / "
                    "'certbot renew' logs")]


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

    @property
    def codes(self) -> tuple[Code, ...]:
        return tuple(p.code for p in self.problems)


def judge(result: ProbeResult, *, trust: Trust, now: dt.datetime | None = None,
          names: Sequence[str] = (), expected_sha256: str | None = None,
          thresholds: Thresholds = Thresholds()) -> Verdict:
    """Judge one probe result. ``expected_sha256``: the leaf on disk (else no stale check)."""
    now = now or dt.datetime.now(dt.UTC)
    where = result.target.label
    hs = result.handshake
    if hs is None or not hs.chain:
        code = Code(result.failure.value) if result.failure else Code.HANDSHAKE_FAILED
        status = FAILURE_STATUS.get(result.failure, Status.UNKNOWN) if result.failure else \
            Status.UNKNOWN
        return Verdict(result.target, status, (Problem(code, status, result.detail),), None,
                       None, None, "", "", result.seconds)
    leaf = hs.leaf
    problems = check_chain(hs.chain, trust=trust, now=now, names=names, where=where)
    problems += expiry_problems(leaf.not_valid_before_utc, leaf.not_valid_after_utc, now,
                                thresholds, where)
    sha = fingerprint(leaf)
    if expected_sha256 and sha != expected_sha256:
        problems.append(Problem(Code.STALE, Status.CRITICAL,
                                f"{where}: serves {sha[:16]}, the certificate on disk is "
                                f"{expected_sha256[:16]}",
                                "reload Postfix (postfix reload) or run the deploy hook"))
    return Verdict(result.target, worst([p.status for p in problems]), tuple(problems), sha,
                   leaf.not_valid_after_utc,
                   lifetime_left(leaf.not_valid_before_utc, leaf.not_valid_after_utc, now),
                   hs.protocol, hs.cipher, result.seconds)
