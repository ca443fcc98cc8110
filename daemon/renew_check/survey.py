"""``renew-check`` with no arguments: find every certificate Postfix uses and every TLS
service it runs, and check them all. Models only: rendering is :mod:`daemon.renew_check.render`.

Per certificate (a certbot lineage, the deploy hook's bundle of one, or a plain file):
expiry against its own lifetime; for a lineage, the deploy hook's own validation
(:func:`hook.pipeline.validate_lineage`: one validator, never two) with the names the hook
requires (:func:`hook.postfix.tls_files.required_names`: ``myhostname`` and ``deploy.names``, the
SNI names); for a bundle, whether it still matches the lineage; and what senders see in
DNS (:mod:`daemon.renew_check.dnsstatus`: DANE, MX coverage, MTA-STS; skipped with ``dns=False`` or
when ``[dns]`` turns both DANE and MTA-STS off). Per TLS service: a probe (and the deep
checks) compared with what is on disk (``stale``). Plus the Postfix TLS configuration
audit (:mod:`daemon.renew_check.audit`). The daemon can reuse :func:`survey` as is.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509

from daemon.renew_check import audit as audit_mod
from daemon.renew_check.dnsstatus import DnsStatus
from daemon.renew_check.dnsstatus import check as dns_check
from hook.certs import (
    Lineage,
    Trust,
    check_chain,
    fingerprint,
    load_trust,
    names_of,
    pair,
    parse_chain,
    read_reuse_key,
)
from hook.config import Config, DaneMode
from hook.dns import tlsa_names
from hook.errors import BundleError, Error, PostfixError
from hook.files import PEM_MAX, read_bounded
from hook.pipeline import validate_lineage
from hook.postfix import (
    CertFile,
    Mode,
    Postfix,
    Service,
    Side,
    Usage,
    faces_port_25,
    files_of,
    postfix_for,
    required_names,
    usage,
)
from hook.tls import (
    DeepResult,
    ProbeResult,
    Target,
    Thresholds,
    Verdict,
    expiry_problems,
    judge,
    lifetime_left,
    map_bounded,
    probe_bounded,
    role_for,
)
from hook.tls import thresholds_of as judge_thresholds
from hook.verdict import Code, Problem, Status, worst


@dataclass(frozen=True)
class CertCheck:
    """One certificate Postfix reads, judged on disk."""

    name: str
    """The lineage name, or the file path for a certificate certbot does not manage."""
    lineage: str | None
    """The lineage directory (``live/NAME``), when there is one."""
    files: tuple[str, ...]
    used_by: tuple[str, ...]
    """``main.cf: smtpd_tls_chain_files`` style references."""
    leaf_sha256: str | None
    names: tuple[str, ...]
    not_before: dt.datetime | None
    not_after: dt.datetime | None
    lifetime_left: float | None
    status: Status
    problems: tuple[Problem, ...]
    dns: DnsStatus | None = None
    """DANE, MX coverage, MTA-STS (None: not checked); its problems are not in ``problems``
    and its status not in ``status``: the survey adds them."""

    @property
    def days_left(self) -> float | None:
        if self.not_after is None:
            return None
        return (self.not_after - dt.datetime.now(dt.UTC)).total_seconds() / 86400

    @property
    def lifetime_days(self) -> float | None:
        if self.not_after is None or self.not_before is None:
            return None
        return (self.not_after - self.not_before).total_seconds() / 86400


@dataclass(frozen=True)
class ServiceCheck:
    """One TLS service, probed and compared with the certificate on disk."""

    service: str
    """The master.cf service name (``submission``, ``127.0.0.1:25``, ...)."""
    verdict: Verdict
    expected_sha256: tuple[str, ...]


@dataclass(frozen=True)
class Survey:
    status: Status
    checked_at: dt.datetime
    postfix: str
    certificates: tuple[CertCheck, ...]
    services: tuple[ServiceCheck, ...]
    audit: tuple[Problem, ...]

    @property
    def problems(self) -> tuple[Problem, ...]:
        return (*(p for c in self.certificates for p in c.problems),
                *(p for c in self.certificates if c.dns for p in c.dns.problems),
                *(p for s in self.services for p in s.verdict.problems), *self.audit)


def thresholds_of(config: Config) -> Thresholds:
    return judge_thresholds(config.probe)


def dns_enabled(config: Config) -> bool:
    """DNS checks run unless ``[dns]`` turns off both DANE and MTA-STS."""
    return config.dns.dane is not DaneMode.OFF or config.dns.mta_sts


def survey(config: Config, *, lineages: Sequence[str] = (), deep: bool | None = None,
           now: dt.datetime | None = None, dns: bool = True,
           thresholds: Thresholds | None = None,
           progress: Callable[[str], None] | None = None) -> Survey:
    """Check everything; never raises for Postfix, files or the network (UNKNOWN instead).

    ``dns``: False skips the DNS checks (``renew-check --no-dns``); ``thresholds``:
    expiry thresholds (default: ``[probe]`` of the configuration). ``progress`` is told
    the name of each stage as it starts (renew-check's overall deadline says which did
    not finish)."""
    stage = progress or (lambda _name: None)
    now = now or dt.datetime.now(dt.UTC)
    limits = thresholds or thresholds_of(config)
    stage("reading the Postfix configuration")
    postfix = postfix_for(config)
    where = str(config.postfix.config_directory)
    try:
        tls = audit_mod.snapshot(postfix)
        trust = load_trust(config.probe.cafile, system=config.trust.system_store)
    except Error as exc:
        problem = Problem(Code.UNREADABLE, Status.UNKNOWN, f"cannot read the configuration: {exc}")
        return Survey(Status.UNKNOWN, now, where, (), (), (problem,))
    files = tls.cert_files()
    wanted = {os.path.basename(os.path.normpath(p)) for p in lineages}
    groups: dict[str, list[CertFile]] = {}
    for f in files:
        if f.side is Side.SERVER:
            groups.setdefault(_group_of(f.path, config), []).append(f)
    if wanted:
        groups = {k: v for k, v in groups.items() if k in wanted}
        if not groups:
            problem = Problem(Code.UNREADABLE, Status.UNKNOWN,
                              f"Postfix ({where}) uses no server certificate from lineage "
                              f"{', '.join(sorted(wanted))}")
            return Survey(Status.UNKNOWN, now, where, (), (), (problem,))
    myhostname = tls.params.get("myhostname", "")
    stage(f"checking {len(groups)} certificate(s)" + (" and their DNS records" if dns else ""))
    uses = {name: _usage(name, fs, config, postfix, myhostname) for name, fs in groups.items()}
    certs = tuple(_check_cert(name, fs, config, trust, now, uses[name], postfix,
                              dns and dns_enabled(config), limits)
                  for name, fs in sorted(groups.items()))
    stage("probing the TLS services")
    services = _check_services(tls, groups, config, trust, now, myhostname,
                               config.probe.deep if deep is None else deep,
                               {n: required_names(config, u) for n, u in uses.items()}, limits)
    roots = [config.certbot.config_dir / "live", config.certbot.config_dir / "archive",
             config.deploy.bundle_dir]
    stage("auditing the Postfix TLS configuration")
    findings = tuple(audit_mod.audit(tls, files, lineage_roots=roots,
                                     renewal_conf=lambda p: _renewal_conf(p, config),
                                     certbot_dir=config.certbot.config_dir))
    if any(s.verdict.deep is not None for s in services):
        # The deep probe says what the servers really accept, with the severity: the
        # configuration lines stay as advice naming the parameter to change.
        findings = tuple(replace(p, status=Status.OK) if p.code is Code.WEAK_PROTOCOL else p
                         for p in findings)
    if not groups:
        findings += (Problem(Code.UNREADABLE, Status.UNKNOWN,
                             f"Postfix ({where}) uses no server certificate"),)
    statuses = [c.status for c in certs] + [c.dns.status for c in certs if c.dns] + \
        [s.verdict.status for s in services] + [p.status for p in findings]
    return Survey(worst(statuses), now, where, certs, services, findings)


def _group_of(path: str, config: Config) -> str:
    """The lineage a file belongs to (live/, archive/ or the hook's bundle), else the path."""
    real = Path(os.path.realpath(path))
    for base in ("live", "archive"):
        root = Path(os.path.realpath(config.certbot.config_dir / base))
        if real.is_relative_to(root) and real != root:
            return real.relative_to(root).parts[0]
    bundle_root = Path(os.path.realpath(config.deploy.bundle_dir))
    if real.parent == bundle_root and real.suffix == ".pem":
        return real.stem
    return path


def _lineage_dir(name: str, config: Config) -> Path | None:
    """``live/NAME`` when it exists (a monitoring user may not look inside: it counts)."""
    if "/" in name:
        return None
    live = config.certbot.config_dir / "live" / name
    try:
        return live if live.is_dir() else None
    except PermissionError:
        return live


def _renewal_conf(path: str, config: Config) -> Path | None:
    name = _group_of(path, config)
    conf = config.certbot.config_dir / "renewal" / f"{name}.conf"
    try:
        return conf if conf.is_file() else None
    except OSError:
        return None


def _usage(name: str, files: list[CertFile], config: Config, postfix: Postfix,
           myhostname: str) -> Usage:
    """How Postfix uses a lineage, found the way the deploy hook finds it; for a file
    certbot does not manage (or if that fails), the services that read it."""
    if _lineage_dir(name, config) is not None:
        try:
            return usage(postfix, Lineage(config.certbot.config_dir, name), config.deploy.bundle_dir)
        except PostfixError:
            pass
    services = tuple(dict.fromkeys(svc for f in files for svc in f.services))
    return Usage(Mode.IN_PLACE, Path(files[0].path), (), services, myhostname=myhostname)


def _check_cert(name: str, files: list[CertFile], config: Config, trust: Trust,
                now: dt.datetime, use: Usage, postfix: Postfix, dns: bool,
                thresholds: Thresholds) -> CertCheck:
    paths = tuple(dict.fromkeys(f.path for f in files))
    uses = tuple(dict.fromkeys(f"{f.use} = {f.path}" for f in files))
    lineage = _lineage_dir(name, config)
    label = f"certificate {name}"
    problems: list[Problem] = []
    names = required_names(config, use)
    try:
        chain = parse_chain(_read(paths[0]), paths[0])
    except BundleError as exc:
        # Not allowed to read it (a monitoring user: certbot's live/ is 0700) is UNKNOWN:
        # we cannot tell. A file that is missing or broken is CRITICAL: Postfix can't either.
        no_access = isinstance(exc, _NoAccess)
        problem = Problem(Code.UNREADABLE, Status.UNKNOWN if no_access else Status.CRITICAL,
                          str(exc), "run renew-check as root (or via sudo) to check the files"
                          if no_access else "")
        return CertCheck(name, str(lineage) if lineage else None, paths, uses, None, (), None,
                         None, None, problem.status, (problem,))
    leaf = chain[0]
    hooked = lineage is not None and os.access(lineage / "privkey.pem", os.R_OK)
    if lineage is not None and hooked:
        # The lineage on disk, judged by the deploy hook's own validation.
        found = validate_lineage(config, Lineage(config.certbot.config_dir, name), use, now)
        problems += found.problems
    else:
        problems += check_chain(chain, trust=trust, now=now, names=names, where=label)
    problems += expiry_problems(leaf.not_valid_before_utc, leaf.not_valid_after_utc, now,
                                thresholds, label)
    if not hooked or use.mode is not Mode.IN_PLACE:  # in place: validated above
        problems += _pair_problems(files[0].key_path, paths[0])
    sha = fingerprint(leaf)
    on_disk: tuple[x509.Certificate, ...] | None = None
    if lineage is not None:
        try:
            on_disk = parse_chain(_read(str(lineage / "fullchain.pem")),
                                             str(lineage / "fullchain.pem"))
            live = fingerprint(on_disk[0])
        except BundleError:
            live = sha
        if live != sha:
            problems.append(Problem(
                Code.STALE, Status.CRITICAL,
                f"{label}: Postfix reads {paths[0]} ({sha[:16]}) but the lineage now holds "
                f"{live[:16]}: the last renewal was not deployed",
                f"postfix-deploy-hook --lineage {lineage} (or: renew-check --dry-run to see why)"))
    dns_status = None
    if dns:
        reuse = read_reuse_key(config.certbot.config_dir / "renewal" / f"{name}.conf") \
            if lineage is not None else None
        dns_status = dns_check(config, postfix, served=chain, on_disk=on_disk,
                               names=tlsa_names(names, leaf), port_25=faces_port_25(use),
                               reuse_key=reuse)
    return CertCheck(name, str(lineage) if lineage else None, paths, uses, sha, names_of(leaf),
                     leaf.not_valid_before_utc, leaf.not_valid_after_utc,
                     lifetime_left(leaf.not_valid_before_utc, leaf.not_valid_after_utc, now),
                     worst([p.status for p in problems]), tuple(problems), dns_status)


def _pair_problems(key_path: str, cert_path: str) -> list[Problem]:
    """Does the key Postfix reads belong to the certificate it reads?"""
    try:
        pair(_read(key_path), key_path, _read(cert_path), cert_path)
    except _NoAccess as exc:
        return [Problem(Code.UNREADABLE, Status.OK, f"{exc}: key checks skipped",
                        "run renew-check as root to check the private key too")]
    except BundleError as exc:
        code = Code.KEY_MISMATCH if "does not match" in exc.problem else Code.UNREADABLE
        return [Problem(code, Status.CRITICAL, str(exc),
                        "Postfix answers 454 to STARTTLS with this pair: fix the files "
                        "before the next reload")]
    return []


def _check_services(tls: audit_mod.PostfixTLS, groups: dict[str, list[CertFile]],
                    config: Config, trust: Trust, now: dt.datetime, myhostname: str,
                    deep: bool, names_of_group: dict[str, tuple[str, ...]],
                    thresholds: Thresholds) -> tuple[ServiceCheck, ...]:
    expected: dict[str, list[str]] = {}
    required: dict[str, list[str]] = {}
    for group, files in groups.items():
        for f in files:
            for svc in f.services:
                required.setdefault(svc.name, []).extend(names_of_group.get(group, ()))
            try:
                sha = fingerprint(parse_chain(_read(f.path), f.path)[0])
            except BundleError:
                continue
            for svc in f.services:
                expected.setdefault(svc.name, []).append(sha)
    users = {svc.name for files in groups.values() for f in files for svc in f.services}
    services = [s for s in tls.tls_services() if s.name in users or not groups]
    timeout = config.probe.timeout
    jobs = [(svc, target) for svc in services
            for target in targets_for(svc, tls, config.postfix.probe_host, myhostname)]

    def one(job: tuple[Service, Target]) -> tuple[ProbeResult, DeepResult | None]:
        return probe_bounded(job[1], timeout=timeout, deep=deep)

    results = map_bounded(one, jobs, host=lambda j: j[1].host, per_host=config.probe.per_host,
                          workers=config.probe.workers)
    out = []
    for (svc, _), (res, dr) in zip(jobs, results, strict=True):
        want = tuple(dict.fromkeys(expected.get(svc.name, ())))
        names = list(dict.fromkeys(required.get(svc.name, [myhostname] if myhostname else [])))
        verdict = judge(res, trust=trust, now=now, names=names, expected=want,
                        thresholds=thresholds, deep=dr,
                        role=role_for(res.target, tls.level(svc)))
        out.append(ServiceCheck(svc.name, verdict, want))
    return tuple(out)


def targets_for(svc: Service, tls: audit_mod.PostfixTLS, probe_host: str,
                servername: str = "") -> list[Target]:
    """Where to probe a service: its address, plus ``::1`` when it listens on every
    interface and Postfix speaks IPv6 too (``inet_protocols = all``), so that both
    address families are checked."""
    targets = [Target(svc.host, svc.port, svc.implicit_tls, servername or None)]
    explicit_host = svc.name.startswith("[") or ":" in svc.name
    protocols = files_of(tls.params.get("inet_protocols", "ipv4"))
    interfaces = files_of(tls.params.get("inet_interfaces", "all"))
    if (not explicit_host and not probe_host and svc.host != "::1"
            and any(p in ("all", "ipv6") for p in protocols)
            and any(i in ("all", "loopback-only", "[::1]", "::1") for i in interfaces)):
        targets.append(Target("::1", svc.port, svc.implicit_tls, servername or None))
    return targets


class _NoAccess(BundleError):
    """This user may not read the file (not: the file is broken)."""


def _read(path: str) -> bytes:
    try:
        return read_bounded(path, PEM_MAX)
    except PermissionError as exc:
        raise _NoAccess(path, f"cannot read as uid {os.geteuid()}: {exc.strerror}") from exc
    except OSError as exc:
        raise BundleError(path, f"cannot read: {exc.strerror}") from exc
