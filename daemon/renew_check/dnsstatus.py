"""DNS status of one certificate for ``renew-check`` (the daemon runs no DNS checks): DANE per host name,
MX coverage, MTA-STS. Models only; rendering is :mod:`daemon.renew_check.render`.

Uses the hook's own checks (:mod:`hook.dns.dane`, :mod:`daemon.renew_check.mx`,
:mod:`daemon.renew_check.mtasts`) with
the same names the deploy gate looks up (:func:`hook.dns.dane.tlsa_names`). Two chains
are compared with the published TLSA records:

* **served**: the file Postfix reads (the probe says whether each service serves it:
  ``stale`` otherwise). No published record matching it is CRITICAL: DANE senders defer
  mail to that host now.
* **on disk**: the lineage's current chain, the one the next deploy installs. A mismatch
  there (while the served chain still matches) is a WARNING: the deploy will be refused.

A bogus TLSA answer is CRITICAL here (DANE senders cannot verify the host at all); a
failed lookup is a WARNING. MX coverage and MTA-STS are checked for a certificate that
Postfix presents on port 25; MTA-STS only with ``dns.mta_sts``, DANE only unless
``dns.dane = "off"``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from cryptography import x509

from daemon.renew_check import mtasts, mx
from hook.certs import fingerprint
from hook.config import Config, DaneMode
from hook.dns import DaneResult, HostDane, HostState, Resolver, Security, recommended, tlsa
from hook.dns import check as check_dane
from hook.postfix import Postfix
from hook.verdict import Code, Problem, Status, worst


@dataclass(frozen=True)
class DnsStatus:
    """What senders see in DNS for one certificate."""

    dane: DaneResult | None = None
    """TLSA per host (``None``: ``dns.dane = "off"`` or no host names)."""
    mx: mx.MxCoverage | None = None
    """MX coverage (``None``: not presented on port 25)."""
    mta_sts: tuple[mtasts.MtaStsResult, ...] = ()
    problems: tuple[Problem, ...] = ()
    """Everything found, with renew-check's severities (see the module docstring)."""
    notes: tuple[str, ...] = ()

    @property
    def status(self) -> Status:
        return worst(tuple(p.status for p in self.problems))

    def as_record(self) -> dict[str, Any]:
        """Plain data for ``renew-check --json`` (the certificate's ``dns`` key)."""
        dane_record: dict[str, Any] | None = None
        if self.dane is not None:
            dane_record = self.dane.as_record()
            hosts = cast("list[dict[str, Any]]", dane_record["hosts"])
            for host, out in zip(self.dane.hosts, hosts, strict=True):
                out["match_served"] = out["match_old"]
                out["match_on_disk"] = out["match_new"]
                out["add_for_rollover"] = list(rollover_additions(host))
        return {
            "status": self.status.value,
            "dane": dane_record,
            "mx": self.mx.as_record() if self.mx is not None else None,
            "uncovered_domains": list(self.mx.uncovered_domains) if self.mx is not None else [],
            "mta_sts": [r.as_record() for r in self.mta_sts],
            "problems": [{"code": p.code.value, "status": p.status.value, "detail": p.detail,
                          "fix": p.fix} for p in self.problems],
            "notes": list(self.notes),
        }


def rollover_additions(host: HostDane) -> tuple[str, ...]:
    """The recommended records (3 1 1 for the on-disk leaf, 2 1 1 per issuer) that are not
    published yet: with them in place, a key rollover (the 2 1 1 keep matching) or an
    intermediate change (the 3 1 1 keeps matching) does not break DANE. Only for hosts
    that use DANE (validated usable records)."""
    if host.answer.security is not Security.SECURE or not any(r.usable for r in host.records):
        return ()
    published = {str(r) for r in host.records}
    return tuple(line for line in host.rollover if line.split(" IN TLSA ", 1)[-1] not in published)


def check(config: Config, postfix: Postfix, *, served: Sequence[x509.Certificate],
          on_disk: Sequence[x509.Certificate] | None, names: Sequence[str], port_25: bool,
          reuse_key: bool | None = None, resolver: Resolver | None = None) -> DnsStatus:
    """DANE for ``names`` (served and on-disk chains), MX coverage and MTA-STS for the
    served leaf when ``port_25``; never raises for DNS or HTTPS trouble."""
    resolver = resolver or Resolver.from_config(config.dns)
    disk = on_disk or served
    same = fingerprint(disk[0]) == fingerprint(served[0])
    problems: list[Problem] = []
    notes: list[str] = []
    gate = None
    if config.dns.dane is not DaneMode.OFF and names:
        warn = dataclasses.replace(config, dns=dataclasses.replace(config.dns, dane=DaneMode.WARN))
        gate = check_dane(warn, disk, served, names, reuse_key=reuse_key, resolver=resolver)
        problems += _dane_problems(gate, served, same)
        notes += gate.notes
    coverage = None
    sts: tuple[mtasts.MtaStsResult, ...] = ()
    if port_25:
        coverage = mx.coverage(config, served[0], postfix, resolver=resolver)
        sts = mtasts.check_all(config, coverage, served[0], resolver=resolver)
        problems += coverage.problems
        notes += coverage.notes
        for result in sts:
            problems += result.problems
            notes += result.notes
    return DnsStatus(gate, coverage, sts, tuple(problems), tuple(notes))


def _dane_problems(gate: DaneResult, served: Sequence[x509.Certificate],
                   same: bool) -> list[Problem]:
    """The gate judged the on-disk chain (warn mode); add what the served chain means now."""
    out: list[Problem] = []
    for p in gate.problems:
        if p.code is Code.DANE_BOGUS:
            out.append(dataclasses.replace(p, status=Status.CRITICAL))
        elif p.code is Code.DANE_MISMATCH and same and p.status is Status.WARNING and any(
                h.owner in p.detail and h.state is HostState.MISMATCH for h in gate.hosts):
            continue  # said below, as CRITICAL, for the served chain
        else:
            out.append(p)
    for h in gate.hosts:
        usable = [r for r in h.records if r.usable]
        if h.state not in (HostState.MATCH, HostState.MISMATCH) or not usable or h.match_old:
            continue
        published = {str(r) for r in h.records}
        publish = [r.rr(h.host) for r in recommended(served) if str(r) not in published]
        out.append(Problem(
            Code.DANE_MISMATCH, Status.CRITICAL,
            f"{h.owner} has {len(usable)} DNSSEC-validated TLSA record(s) "
            f"({', '.join(r.params + ' ' + r.data.hex()[:16] + '...' for r in usable)}) and none "
            f"matches the certificate Postfix serves now (leaf key "
            f"{tlsa(served[0], 3, 1, 1).data.hex()[:16]}...): DANE senders defer all mail "
            f"to {h.host}",
            "publish: " + " | ".join(publish) if publish else "check the served chain"))
    return out
