"""The daemon's work: jobs on an APScheduler (3.x) scheduler, and what they decide.

::

    job          every                      does
    ───────────  ─────────────────────────  ──────────────────────────────────────────────
    first check  once, at start             expiry + records + probes, then READY=1
    probe        daemon.probe_interval      discover services, probe + judge each one
    expiry       daemon.expiry_interval     cert.pem of every lineage Postfix uses
    watch        daemon.watch_interval      new deploy records -> re-probe at once;
                                            cert.pem changed -> re-probe after settle_delay
    renew        daemon.renew_interval      optional: certbot renew (off by default)
    heartbeat    WATCHDOG_USEC / 3          WATCHDOG=1 while the scheduler is healthy

A served leaf other than ``cert.pem`` is ``stale``, unless the lineage's latest deploy
record refused or rolled back exactly that ``cert.pem``: then the previous leaf is
expected and one ``deploy`` check per lineage says the renewal was not deployed.

All work jobs run on one worker thread (so they never interleave and the state needs no
further locking); the heartbeat has its own thread so that a stuck probe stops it. Each
work job ends by saving the state, writing the metrics and updating systemd's STATUS=.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import os
import random
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from daemon.renew_daemon import metrics, peers_metrics, policy, sources
from daemon.renew_daemon import state as state_mod
from daemon.renew_daemon.notify import Notifier
from daemon.renew_daemon.peers import PeerWatch
from daemon.renew_daemon.state import Check, DeployInfo, Kind, key_of
from hook import alert as alert_mod
from hook.certs import Trust, load_trust
from hook.config import Config
from hook.errors import BundleError, ConfigError, Error, PostfixError
from hook.pipeline import target_for
from hook.postfix import host_name, postfix_for
from hook.tls import Thresholds, expiry_problems, judge, probe, thresholds_of
from hook.verdict import Code, Problem, Status, worst

RETRY_UNDELIVERED = 300.0
"""Seconds before an alert that could not be delivered (sendmail failed, the webhook is
down) is tried again: soon enough to matter, not a storm of attempts and error lines."""
FAILED_DEPLOYS = frozenset({"refused", "rolled_back", "rollback_failed", "refused_in_place"})
"""Deploy outcomes that leave a renewal on disk undeployed: always critical. certbot now
counts the lineage as renewed and will not try again until the refused certificate is
due, long after the one Postfix still serves has expired: nothing heals by itself (the
hook's alert mail says CRITICAL for the same reason)."""
SERVED_UNKNOWN = frozenset({"rollback_failed", "refused_in_place"})
"""Failed deploys after which what Postfix serves is unknown: a failed rollback, or
certbot's files read in place (new smtpd processes load the refused files)."""
DEPLOY_CODES = {"refused": Code.DEPLOY_REFUSED, "rolled_back": Code.DEPLOY_ROLLED_BACK,
                "rollback_failed": Code.DEPLOY_ROLLBACK_FAILED,
                "refused_in_place": Code.DEPLOY_REFUSED_IN_PLACE}
DEPLOY_FIX = {
    "refused": "fix what the deploy hook reported (see the detail), then run "
               "'postfix-deploy-hook --lineage {live}' (reloading Postfix cannot help: the "
               "renewed files are what is wrong)",
    "rolled_back": "Postfix did not serve the new certificate, so the previous one was put "
                   "back: read the deploy hook's log, fix, then run "
                   "'postfix-deploy-hook --lineage {live}'",
    "rollback_failed": "ACT NOW: the rollback failed too; check 'postfix check', the bundle and "
                       "what Postfix serves ('renew-check'), then run "
                       "'postfix-deploy-hook --lineage {live}'",
    "refused_in_place": "ACT NOW: Postfix reads {live} in place, so new smtpd processes already "
                        "load the refused files; point live/ back at the previous archive "
                        "files (see the detail), run 'postfix-deploy-hook --lineage {live}', "
                        "then 'renew-check adopt {live}' so a bad renewal never reaches "
                        "Postfix again",
}


PEER_PARAMS = ("maillog_file", "myhostname", "smtp_tls_CAfile", "smtp_tls_CApath",
               "smtpd_tls_exclude_ciphers", "smtp_tls_exclude_ciphers")
"""Postfix parameters the peers checks read (the log file, and what the findings name)."""


def thresholds(config: Config) -> Thresholds:
    """Expiry thresholds from ``[probe]``: ``renew-check`` and the daemon must agree."""
    return thresholds_of(config.probe)


def prepare(config: Config) -> Trust:
    """Everything derived from a configuration that can fail: refused on reload."""
    if config.metrics.listen:
        metrics.parse_listen(config.metrics.listen)
    return load_trust(config.probe.cafile, system=config.trust.system_store)


class Watcher:
    """Owns the scheduler, the state and the alert decisions."""

    def __init__(self, config: Config, log: Any, notifier: Notifier,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.trust = prepare(config)
        self.log = log
        self.notifier = notifier
        self.clock = clock
        self.thresholds = thresholds(config)
        self.host = host_name(config)  # Postfix's myhostname, never a resolver lookup
        self.state, note = state_mod.load(config.deploy.state_dir)
        if note:
            log.warning("state", note=note)
        self.work = threading.Lock()
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.busy_since: float | None = None
        self.failures = 0
        self.last_check = 0.0
        self.discovery: sources.Discovery | None = None
        self.signatures: dict[str, tuple[str, int, int]] = {}
        self.exposition = metrics.Exposition()
        self.exporter: metrics.Exporter | None = None
        self.summary = "starting"
        self._renew_proc: subprocess.Popen[str] | None = None
        self.peers = PeerWatch(config, log)
        self._peer_params_at = 0.0
        self._pending: list[tuple[str, policy.Reason]] = []
        self._undelivered: dict[str, float] = {}
        """Check key -> when its alert last failed to go out: retried after
        :data:`RETRY_UNDELIVERED`, not at every cycle (the peers job runs every 10 s); a
        change of status or codes is news and clears it."""
        self._batching = 0
        self.scheduler = BackgroundScheduler(
            timezone="UTC",
            executors={"default": ThreadPoolExecutor(1), "heartbeat": ThreadPoolExecutor(1),
                       "renew": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None})

    # ------------------------------------------------------------------ lifecycle
    def start(self, watchdog: float | None) -> None:
        self._open_exporter()
        if watchdog:
            self.scheduler.add_job(self.heartbeat, "interval", seconds=watchdog, id="heartbeat",
                                   executor="heartbeat", next_run_time=dt.datetime.now(dt.UTC))
        self.scheduler.add_job(self._job, args=("first", self.first_check), id="first",
                               next_run_time=dt.datetime.now(dt.UTC))
        self._schedule_regular()
        self.scheduler.start()

    def stop(self) -> None:
        self.stopping.set()
        self.notifier.stopping()
        proc = self._renew_proc
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.terminate()
        with contextlib.suppress(Exception):
            self.scheduler.shutdown(wait=True)
        with self.work:
            self._save()
            self.peers.close()
        if self.exporter:
            self.exporter.close()
        self.notifier.close()

    def reload(self, config: Config) -> None:
        """Switch to an already validated configuration (between two jobs)."""
        trust = prepare(config)
        with self.work:
            old = self.config
            if old.metrics.listen != config.metrics.listen:
                if self.exporter:  # free the port first: the new one may be the same
                    self.exporter.close()
                    self.exporter = None
                try:
                    self.exporter = metrics.Exporter(config.metrics.listen, self.exposition) \
                        if config.metrics.listen else None
                except ConfigError:
                    self.exporter = metrics.Exporter(old.metrics.listen, self.exposition) \
                        if old.metrics.listen else None
                    raise
            self.config, self.trust = config, trust
            self.peers.config, self.peers.choice, self._peer_params_at = config, None, 0.0
            self.thresholds = thresholds(config)
            self._schedule_regular()
        self.schedule_reprobe(0.0, "reload")

    def _open_exporter(self) -> None:
        if self.config.metrics.listen:
            self.exporter = metrics.Exporter(self.config.metrics.listen, self.exposition)
            self.log.info("metrics", listen=self.config.metrics.listen, port=self.exporter.port)

    def _schedule_regular(self) -> None:
        d = self.config.daemon
        jobs: list[tuple[str, float, float, Callable[[], None]]] = [
            ("probe", d.probe_interval, d.probe_interval * d.jitter, self.probe_all),
            ("expiry", d.expiry_interval, d.expiry_interval * d.jitter, self.check_expiry),
            ("watch", d.watch_interval, d.watch_interval * d.jitter, self.watch),
            ("peers", self.config.peers.interval, 0.0, self.peers_tick),
        ]
        start = dt.datetime.now(dt.UTC)
        for name, every, jitter, func in jobs:
            self.scheduler.add_job(self._job, "interval", args=(name, func), id=name,
                                   seconds=every, jitter=jitter or None, replace_existing=True,
                                   next_run_time=start + dt.timedelta(seconds=every))
        if d.renew:
            self.scheduler.add_job(self.renew, "interval", id="renew", executor="renew",
                                   seconds=d.renew_interval, jitter=d.renew_random_delay,
                                   replace_existing=True, next_run_time=start + dt.timedelta(
                                       seconds=random.uniform(0, d.renew_random_delay)))  # noqa: S311
        elif self.scheduler.get_job("renew"):
            self.scheduler.remove_job("renew")

    def schedule_reprobe(self, delay: float, trigger: str) -> None:
        when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay)
        self.scheduler.add_job(self._job, "date", run_date=when, id="reprobe",
                               args=("reprobe", lambda: self.probe_all(trigger)),
                               replace_existing=True)

    # ------------------------------------------------------------------ health
    def healthy(self) -> bool:
        """The scheduler runs, no job is stuck, and jobs do not keep failing."""
        if not self.scheduler.running or self.stopping.is_set():
            return False
        n = len(self.discovery.services) if self.discovery else 3
        # a cycle: discovery, one probe and perhaps one alert (sendmail, 30 s max) each
        stall = (self.config.probe.timeout + 30) * (n + 3) + 60
        busy = self.busy_since
        return (busy is None or self.clock() - busy < stall) and self.failures < 3

    def heartbeat(self) -> None:
        if self.healthy():
            self.notifier.watchdog()
        else:
            self.log.error("watchdog", healthy=False, failures=self.failures,
                           busy_for=round(self.clock() - self.busy_since, 1)
                           if self.busy_since else None)

    def _job(self, name: str, func: Callable[[], None]) -> None:
        if self.stopping.is_set():
            return
        with self.work:
            self.busy_since = self.clock()
            try:
                with self._batch():
                    func()
                self.failures = 0
            except Exception as exc:
                self.failures += 1
                self.log.exception("job_failed", job=name, error=str(exc), failures=self.failures)
            finally:
                self.busy_since = None
                self._publish()

    # ------------------------------------------------------------------ jobs
    def first_check(self) -> None:
        """The first full check; READY=1 follows it even if it failed (STATUS= says so),
        so that a broken Postfix is reported instead of a service that never starts."""
        try:
            self.check_expiry()
            self.watch()
            self.probe_all("start")
        finally:
            self.summary = status_line(self.state, self.last_check)
            self.ready.set()
            self.notifier.ready(self.summary)
            self.log.info("ready", status=self.summary)

    def _discover(self) -> sources.Discovery | None:
        """Discovery, or None (recorded as a ``postfix`` check and alerted) if postconf fails."""
        now = self.clock()
        try:
            self.discovery = sources.discover_all(self.config)
        except PostfixError as exc:
            self.log.error("discover", error=str(exc))
            self._record(Check(Kind.POSTFIX, "postfix",
                               status=Status.CRITICAL.value, codes=("postfix_config",),
                               detail=f"{self.config.postfix.config_directory}: {exc}",
                               last_run=now,
                               action="run 'postfix check' and fix main.cf / master.cf"), now)
            return None
        self._record(Check(Kind.POSTFIX, "postfix",
                           status=Status.OK.value, last_run=now, last_ok=now), now)
        return self.discovery

    def probe_all(self, trigger: str = "schedule") -> None:
        """Probe and judge every TLS service; one canonical ``probe`` event each."""
        started = self.clock()
        disc = self._discover()
        if disc is None:
            return
        now = self.clock()
        expected: dict[str, str | None] = {}
        deploying = self._deploy_in_progress()
        refusals: dict[str, DeployInfo] = {}
        for watched in disc.lineages:
            name = watched.lineage.name
            refusal = self._refusal(watched)
            if refusal is None:
                expected[name] = None if deploying else self._settled_sha(watched, now)
                continue
            # The hook refused (or rolled back) the leaf on disk: Postfix rightly serves the
            # previous one. Expect that; calling it stale ("postfix reload") would mislead.
            refusals[name] = refusal
            # what is served is unknown (SERVED_UNKNOWN): no stale check, the deploy check speaks
            expected[name] = None if deploying or refusal.outcome in SERVED_UNKNOWN else (
                refusal.old_sha256 or None)
        for svc in disc.services:
            if self.stopping.is_set():
                return
            if not self.ready.is_set():  # first check: one probe may take its full timeout
                self.notifier.send(EXTEND_TIMEOUT_USEC=str(int((self.config.probe.timeout + 30)
                                                               * 1e6)))
            mine = disc.lineages_of(svc)
            name = ",".join(w.lineage.name for w in mine)
            want = {sha for w in mine if (sha := expected.get(w.lineage.name))}
            # the names Postfix presents with this service's default certificate
            names = tuple(dict.fromkeys(n for w in mine for n in w.names)) or disc.names
            res = probe(target_for(svc), timeout=self.config.probe.timeout)
            # several leaves (RSA + ECDSA lineages on one service): the handshake picks one,
            # which must be one of them
            verdict = judge(res, trust=self.trust, now=dt.datetime.fromtimestamp(now, dt.UTC),
                            names=names, expected=tuple(sorted(want)),
                            thresholds=self.thresholds)
            problems = [self._stale_fix(p, mine) for p in verdict.problems]
            leaf = res.handshake.leaf if res.handshake and res.handshake.chain else None
            problems.sort(key=lambda p: -p.status.rank)
            check = Check(
                Kind.PROBE, svc.label, status=worst([p.status for p in problems]).value,
                codes=tuple(p.code.value for p in problems),
                detail="; ".join(p.detail for p in problems),
                action=next((p.fix for p in problems if p.fix), _default_fix(problems)),
                lineage=name, last_run=now, last_ok=now if leaf is not None else 0.0,
                sha256=verdict.leaf_sha256 or "",
                not_before=leaf.not_valid_before_utc.timestamp() if leaf else 0.0,
                not_after=leaf.not_valid_after_utc.timestamp() if leaf else 0.0)
            self.log.info("probe", service=svc.label, lineage=name or None, trigger=trigger,
                          status=check.status, codes=list(check.codes),
                          leaf_sha256=verdict.leaf_sha256, expected_sha256=sorted(want) or None,
                          not_after=_iso(check.not_after), lifetime_left=_round(
                              verdict.lifetime_left), protocol=verdict.protocol or None,
                          seconds=round(verdict.seconds, 4), detail=check.detail or None)
            self._record(check, now)
        for watched in disc.lineages:
            name = watched.lineage.name
            if name in refusals or key_of(Kind.DEPLOY, name) in self.state.checks:
                self._judge_deploy(name, now, refusals.get(name))
        self._forget(Kind.PROBE, {s.label for s in disc.services})
        self.last_check = now
        probes = [c for c in self.state.checks.values() if c.kind is Kind.PROBE]
        self.log.info("check", trigger=trigger, services=len(probes),
                      ok=sum(c.status == "ok" for c in probes),
                      seconds=round(self.clock() - started, 4))

    def _settled_sha(self, w: sources.Watched, now: float) -> str | None:
        """The leaf on disk to compare with what is served, unless it changed so recently
        that the deploy hook may still be at work (then: no stale check this time)."""
        sig = sources.signature(w.lineage)
        if not sig[0] or now - sig[1] / 1e9 < self.config.daemon.settle_delay:
            return None
        try:
            return sources.read_cert(w.lineage).sha256
        except BundleError:
            return None

    def _stale_fix(self, problem: Problem, mine: tuple[sources.Watched, ...]) -> Problem:
        """Staged lineages: a stale leaf means the hook never deployed the renewal (a
        reload would serve the old bundle again), so say to run it."""
        staged = [w for w in mine if w.mode == "staged"]
        if problem.code is not Code.STALE or not staged:
            return problem
        runs = " and ".join(f"'postfix-deploy-hook --lineage {w.lineage.live}'" for w in staged)
        return replace(problem, fix="the deploy hook has not deployed this renewal (is it in "
                                    f"certbot's renewal-hooks/deploy/?): run {runs}")

    def _refusal(self, w: sources.Watched) -> DeployInfo | None:
        """The lineage's latest deploy record if it refused or rolled back the leaf that is
        on disk now (a later renewal makes it history)."""
        info = self.state.deploys.get(w.lineage.name)
        if info is None or info.outcome not in FAILED_DEPLOYS:
            return None
        if info.new_sha256:
            try:
                return info if sources.read_cert(w.lineage).sha256 == info.new_sha256 else None
            except BundleError:
                return None
        # refused files the hook could not even parse: unchanged since the hook ran?
        real, mtime_ns, _ = sources.signature(w.lineage)
        return info if real and mtime_ns / 1e9 <= info.time else None

    def _judge_deploy(self, name: str, now: float, refusal: DeployInfo | None) -> None:
        """The ``deploy`` check of a lineage: ok, or "renewal not deployed" (one check, not a
        ``stale`` per service; critical: see :data:`FAILED_DEPLOYS`), saying when the
        certificate Postfix still serves expires."""
        info = self.state.deploys.get(name, DeployInfo())
        if refusal is None:
            self._record(Check(Kind.DEPLOY, name, status=Status.OK.value, detail=info.message,
                               lineage=name, last_run=now, last_ok=info.time), now)
            return
        detail = f"renewal not deployed: {refusal.message}"
        served = self._served(name, refusal.old_sha256)
        if served is not None and refusal.outcome not in SERVED_UNKNOWN:
            _, not_after = served
            end = dt.datetime.fromtimestamp(not_after, dt.UTC)
            detail += (f"; the certificate Postfix served last expires {end:%Y-%m-%d %H:%M} "
                       f"UTC ({(not_after - now) / 86400:.1f} days left)")
        live = self.config.certbot.config_dir / "live" / name
        self._record(Check(Kind.DEPLOY, name, status=Status.CRITICAL.value,
                           codes=(DEPLOY_CODES[refusal.outcome].value,), detail=detail,
                           action=DEPLOY_FIX[refusal.outcome].format(live=live), lineage=name,
                           last_run=now, last_ok=info.last_success), now)

    def _served(self, name: str, sha256: str) -> tuple[float, float] | None:
        """(notBefore, notAfter) of what the lineage's services last served: the leaf
        ``sha256`` if seen, else the one that expires first; None if none was seen."""
        seen = [c for c in self.state.checks.values() if c.kind is Kind.PROBE and c.not_after
                and name in c.lineage.split(",")]
        seen = [c for c in seen if c.sha256 == sha256] or seen
        first = min(seen, key=lambda c: c.not_after, default=None)
        return (first.not_before, first.not_after) if first else None

    def _deploy_in_progress(self) -> bool:
        try:
            fd = os.open(self.config.deploy.state_dir / "deploy.lock", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
        finally:
            os.close(fd)
        return False

    def check_expiry(self) -> None:
        """Judge the cert.pem of every lineage Postfix uses; one ``expiry`` event each."""
        disc = self._discover()
        if disc is None:
            return
        now = self.clock()
        for w in disc.lineages:
            self.signatures[w.lineage.name] = sources.signature(w.lineage)
            self._expiry_one(w, now)
        self._forget(Kind.EXPIRY, {w.lineage.name for w in disc.lineages})
        self.last_check = now

    def _expiry_one(self, w: sources.Watched, now: float) -> None:
        name = w.lineage.name
        try:
            cert = sources.read_cert(w.lineage)
        except BundleError as exc:
            check = Check(Kind.EXPIRY, name, status=Status.CRITICAL.value,
                          codes=(Code.UNREADABLE.value,), detail=str(exc), lineage=name,
                          action="restore the lineage's files or renew: certbot renew "
                                 f"--cert-name {name}", last_run=now)
            self.log.error("expiry", lineage=name, status=check.status, codes=list(check.codes),
                           detail=check.detail)
            self._record(check, now)
            return
        when = dt.datetime.fromtimestamp(now, dt.UTC)
        where = f"{name} ({w.lineage.cert})"
        if when >= cert.not_after:
            probs = [(Code.EXPIRED, Status.CRITICAL,
                      f"{where}: expired {cert.not_after:%Y-%m-%d %H:%M} UTC",
                      f"renew now: certbot renew --cert-name {name}")]
        elif when < cert.not_before:
            probs = [(Code.NOT_YET_VALID, Status.CRITICAL, f"{where}: not valid before "
                      f"{cert.not_before:%Y-%m-%d %H:%M} UTC", "check the system clock")]
        else:
            probs = [(p.code, p.status, p.detail, p.fix) for p in
                     expiry_problems(cert.not_before, cert.not_after, when, self.thresholds, where)]
        status = worst([p[1] for p in probs])
        check = Check(Kind.EXPIRY, name, status=status.value, codes=tuple(p[0].value for p in probs),
                      detail="; ".join(p[2] for p in probs), action=next((p[3] for p in probs), ""),
                      lineage=name, last_run=now, last_ok=now, sha256=cert.sha256,
                      not_before=cert.not_before.timestamp(), not_after=cert.not_after.timestamp())
        days = (cert.not_after.timestamp() - now) / 86400
        self.log.info("expiry", lineage=name, mode=w.mode, status=check.status,
                      codes=list(check.codes), sha256=cert.sha256, not_after=_iso(check.not_after),
                      days_left=round(days, 2), lifetime_left=_round(check.lifetime_left),
                      services=list(w.services))
        self._record(check, now)

    def watch(self) -> None:
        """A changed cert.pem schedules a re-probe after ``settle_delay``; a new deploy
        record (the hook has finished) schedules it at once."""
        now = self.clock()
        for w in self.discovery.lineages if self.discovery else ():
            sig = sources.signature(w.lineage)
            before = self.signatures.get(w.lineage.name)
            self.signatures[w.lineage.name] = sig
            if before is not None and sig != before:
                self.log.info("cert_changed", lineage=w.lineage.name, path=sig[0],
                              reprobe_in=self.config.daemon.settle_delay)
                self._expiry_one(w, now)
                self.schedule_reprobe(self.config.daemon.settle_delay, "cert_changed")
        names, new = sources.deploy_records(self.config.deploy.state_dir,
                                            set(self.state.seen_records))
        history = self.state.fresh  # first run ever: old records are history, not news
        news: list[str] = []
        for rec in new:
            info = self.state.deploys.setdefault(rec.lineage, DeployInfo())
            info.time, info.outcome, info.new_sha256, info.old_sha256, info.message = (
                rec.time, rec.outcome, rec.new_sha256, rec.old_sha256, rec.message)
            if rec.outcome == "deployed":
                info.last_success = rec.time
            if history:
                continue
            self.log.info("deploy_record", record=rec.name, lineage=rec.lineage,
                          outcome=rec.outcome, new_sha256=rec.new_sha256 or None,
                          old_sha256=rec.old_sha256 or None, message=rec.message)
            news.append(rec.lineage)
        watched = {w.lineage.name: w for w in self.discovery.lineages} if self.discovery else {}
        for name in dict.fromkeys(news):
            info = self.state.deploys[name]
            found = watched.get(name)
            # a lineage not discovered (yet): a brand-new record is taken at its word
            refusal = self._refusal(found) if found else (
                info if info.outcome in FAILED_DEPLOYS else None)
            self._judge_deploy(name, now, refusal)
        self.state.seen_records = names
        self.state.fresh = False
        if new and not history:
            self.schedule_reprobe(0.0, "deploy_record")

    def peers_tick(self) -> None:
        """Read Postfix's new log lines; judge what peers see (daemon.renew_daemon.peers)."""
        now = self.clock()
        if now - self._peer_params_at > 300:  # main.cf rarely changes: postconf every 5 min
            try:
                postfix = postfix_for(self.config)
                self.peers.set_params(postfix.parameters(*PEER_PARAMS), postfix.syslog_names())
            except PostfixError as exc:
                self.log.warning("peers", error=f"postconf: {exc}")
            self._peer_params_at = now
        events = self.peers.read(now)
        our_mx = {self.peers.params.get("myhostname", ""), *self.config.deploy.names,
                  *(n for w in (self.discovery.lineages if self.discovery else ()) for n in w.names)}
        reports = self.peers.read_reports(now, {n for n in our_mx if n})
        if events or reports:
            self.log.info("peers", events=events, reports=reports, source=self.peers.state.source)
        for check in self.peers.checks(now, self.state.deploys):
            self._record(check, now)

    def renew(self) -> None:
        """Run ``daemon.renew_command`` (certbot renew) and record the outcome.

        Runs on its own thread and holds no lock while certbot works (minutes, perhaps),
        so probes, the watch and the heartbeat go on; SIGTERM stops certbot too.
        """
        argv = list(self.config.daemon.renew_command)
        start = self.clock()
        try:
            self._renew_proc = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                text=True)
            try:
                out, _ = self._renew_proc.communicate(timeout=3600)
            except subprocess.TimeoutExpired:
                self._renew_proc.kill()
                out, _ = self._renew_proc.communicate()
                out += "\n(killed after 3600 s)"
            rc = self._renew_proc.returncode
        except OSError as exc:
            rc, out = -1, f"{argv[0]}: {exc.strerror or exc}"
        finally:
            self._renew_proc = None
        out = out.strip()[-2000:]
        if self.stopping.is_set():
            return
        self.log.info("renew", command=argv, returncode=rc, seconds=round(self.clock() - start, 1),
                      output=out or None)
        status = Status.OK if rc == 0 else Status.CRITICAL
        check = Check(Kind.DEPLOY, "certbot renew", status=status.value,
                      codes=() if rc == 0 else ("renew_failed",), detail=out,
                      action="run the renew command by hand and read its output",
                      last_run=start, last_ok=start if rc == 0 else 0.0)
        with self.work:
            self._record(check, self.clock())
            self._publish()

    # ------------------------------------------------------------------ decisions
    def _record(self, check: Check, now: float) -> None:
        prev = self.state.checks.get(check.key)
        merged, reason = policy.advance(prev, check, now, self.config.alert.repeat_interval)
        self.state.checks[merged.key] = merged
        if prev is not None and (prev.status, prev.codes) != (merged.status, merged.codes):
            self._undelivered.pop(merged.key, None)  # a new state is news: no pause
        failed_at = self._undelivered.get(merged.key)
        if reason is not None and (failed_at is None or now - failed_at >= RETRY_UNDELIVERED):
            self._pending.append((merged.key, reason))
        if self._batching == 0:
            self._flush_alerts(now)

    @contextlib.contextmanager
    def _batch(self) -> Iterator[None]:
        """Alerts decided inside go out together at the end: one mail per job."""
        self._batching += 1
        try:
            yield
        finally:
            self._batching -= 1
            if self._batching == 0:
                self._flush_alerts(self.clock())

    def _flush_alerts(self, now: float) -> None:
        pending, self._pending = self._pending, []
        items = [(self.state.checks[k], r) for k, r in pending if k in self.state.checks]
        for group in ([i for i in items if i[1] is not policy.Reason.RESOLVED],
                      [i for i in items if i[1] is policy.Reason.RESOLVED]):
            if group:
                self._alert(group, now)

    def _alert(self, items: list[tuple[Check, policy.Reason]], now: float) -> None:
        alert = policy.digest(items, host=self.host)
        deliveries = alert_mod.send(alert, self.config.alert,
                                    timeout=min(30.0, self.config.probe.timeout * 3))
        ok = any(d.ok for d in deliveries) or not deliveries
        getattr(self.log, "warning" if ok else "error")(
            "alert", checks=[c.key for c, _ in items], reason=items[0][1].value,
            status=alert.severity, problem=alert.problem, lineage=alert.lineage or None,
            summary=alert.summary, deliveries=[f"{d.channel}:{'ok' if d.ok else 'failed'} {d.detail}"
                                               for d in deliveries] or ["none configured"])
        for check, _ in items:
            if ok:
                self.state.checks[check.key] = replace(check, last_alert=now)
                self._undelivered.pop(check.key, None)
            else:
                self._undelivered[check.key] = now

    def _forget(self, kind: Kind, current: set[str]) -> None:
        for key, check in list(self.state.checks.items()):
            if check.kind is kind and check.subject not in current:
                self.log.info("forget", check=kind.value, subject=check.subject)
                del self.state.checks[key]

    # ------------------------------------------------------------------ output
    def _publish(self) -> None:
        now = self.clock()
        self.summary = status_line(self.state, self.last_check)
        self.exposition.update([*metrics.families(self.state, now, self.last_check),
                                *peers_metrics.families(self.peers.state)])
        if self.config.metrics.textfile:
            try:
                metrics.write_textfile(self.config.metrics.textfile, self.exposition.text())
            except OSError as exc:
                self.log.error("metrics", textfile=str(self.config.metrics.textfile), error=str(exc))
        self._save()
        if self.ready.is_set():
            self.notifier.status(self.summary)

    def _save(self) -> None:
        try:
            state_mod.save(self.config.deploy.state_dir, self.state)
            self.peers.save()
        except (OSError, Error) as exc:
            self.log.error("state", error=f"cannot save: {exc}")


def status_line(state: state_mod.State, last_check: float) -> str:
    """One line for ``systemctl status``: counts, the worst problem, and when."""
    probes = [c for c in state.checks.values() if c.kind is Kind.PROBE]
    certs = [c for c in state.checks.values() if c.kind is Kind.EXPIRY]
    bad = sorted((c for c in state.checks.values() if c.status != "ok"),
                 key=lambda c: -Status(c.status).rank)
    ok_probes = sum(c.status == "ok" for c in probes)
    soonest = min((c.not_after for c in certs if c.not_after), default=0.0)
    parts = [f"{ok_probes}/{len(probes)} TLS services ok", f"{len(certs)} lineage(s)"]
    if soonest:
        parts[-1] += f", next expiry {time.strftime('%Y-%m-%d', time.gmtime(soonest))}"
    if last_check:
        parts.append(f"checked {time.strftime('%H:%M:%S', time.gmtime(last_check))} UTC")
    head = (f"{bad[0].status.upper()} {bad[0].subject}: {', '.join(bad[0].codes) or bad[0].status}"
            f"{f' (+{len(bad) - 1} more)' if len(bad) > 1 else ''}; ") if bad else ""
    return head + "; ".join(parts)


def _default_fix(problems: Any) -> str:
    return "probe it by hand: renew-check probe HOST:PORT" if problems else ""


def _iso(ts: float) -> str | None:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat() if ts else None


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
