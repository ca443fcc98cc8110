"""Prometheus metrics from the daemon's state, rendered by ``prometheus_client``.

Written atomically to a node_exporter textfile-collector file and/or served over HTTP
(``metrics.listen``) by prometheus_client's own server, which also speaks OpenMetrics
to a scraper that asks for it. Every gauge is derived from
:class:`~daemon.renew_daemon.state.State`, which keeps the last certificate each check
saw: unlike blackbox_exporter, the expiry of a certificate that is expired, or of a
service that stopped answering, stays visible.

=================================================================  =============================
metric                                                             labels
=================================================================  =============================
``postfix_certwatch_cert_not_after_timestamp_seconds``             source (served|disk), service, lineage
``postfix_certwatch_cert_not_before_timestamp_seconds``            source, service, lineage
``postfix_certwatch_cert_lifetime_left_ratio``                     source, service, lineage
``postfix_certwatch_check_status`` (0 ok 1 warn 2 crit 3 unknown)  check, subject, lineage
``postfix_certwatch_problem`` (1 per active problem code)          check, subject, lineage, code
``postfix_certwatch_probe_success``                                service, lineage
``postfix_certwatch_probe_last_run_timestamp_seconds``             service
``postfix_certwatch_probe_last_success_timestamp_seconds``         service
``postfix_certwatch_deploy_last_timestamp_seconds``                lineage
``postfix_certwatch_deploy_last_success_timestamp_seconds``        lineage
``postfix_certwatch_deploy_failed`` (renewal on disk not deployed)  lineage
``postfix_certwatch_last_check_timestamp_seconds``                 (none)
=================================================================  =============================
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from prometheus_client.exposition import generate_latest, start_http_server
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from daemon.renew_daemon.state import Kind, State, key_of, lifetime_left
from hook import files
from hook.errors import ConfigError

P = "postfix_certwatch_"
STATUS_VALUE = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}

HELP = {
    "cert_not_after_timestamp_seconds": "Certificate notAfter (served: last leaf a service served; "
                                        "disk: the lineage's cert.pem).",
    "cert_not_before_timestamp_seconds": "Certificate notBefore.",
    "cert_lifetime_left_ratio": "Fraction of the certificate's lifetime left (0 when expired).",
    "check_status": "Latest status of a check: 0 ok, 1 warning, 2 critical, 3 unknown.",
    "problem": "1 for every problem code a check currently reports.",
    "probe_success": "1 if the last probe of the service completed a TLS handshake.",
    "probe_last_run_timestamp_seconds": "When the service was last probed.",
    "probe_last_success_timestamp_seconds": "When a probe of the service last completed a handshake.",
    "deploy_last_timestamp_seconds": "When the deploy hook last ran for the lineage.",
    "deploy_last_success_timestamp_seconds": "When the deploy hook last deployed the lineage.",
    "deploy_failed": "1 while the lineage's renewal on disk was refused or rolled back by the "
                     "deploy hook (Postfix serves the previous certificate).",
    "last_check_timestamp_seconds": "When the daemon last completed a check (staleness).",
}

LABELS: dict[str, tuple[str, ...]] = {
    "cert_not_after_timestamp_seconds": ("source", "service", "lineage"),
    "cert_not_before_timestamp_seconds": ("source", "service", "lineage"),
    "cert_lifetime_left_ratio": ("source", "service", "lineage"),
    "check_status": ("check", "subject", "lineage"),
    "problem": ("check", "subject", "lineage", "code"),
    "probe_success": ("service", "lineage"),
    "probe_last_run_timestamp_seconds": ("service",),
    "probe_last_success_timestamp_seconds": ("service",),
    "deploy_last_timestamp_seconds": ("lineage",),
    "deploy_last_success_timestamp_seconds": ("lineage",),
    "deploy_failed": ("lineage",),
    "last_check_timestamp_seconds": (),
}


def families(state: State, now: float, last_check: float) -> list[Metric]:
    """Every gauge family for ``state`` at time ``now`` (families without samples left out)."""
    out = {name: GaugeMetricFamily(P + name, HELP[name], labels=LABELS[name]) for name in HELP}

    def add(name: str, labels: Iterable[str], value: float) -> None:
        out[name].add_metric(list(labels), value)

    for check in sorted(state.checks.values(), key=lambda c: c.key):
        subject = (check.kind.value, check.subject, check.lineage)
        add("check_status", subject, STATUS_VALUE.get(check.status, 3))
        for code in check.codes:
            add("problem", (*subject, code), 1)
        if check.kind in (Kind.DEPLOY, Kind.POSTFIX):
            continue
        if check.kind is Kind.PROBE:
            cert = ("served", check.subject, check.lineage)
            add("probe_success", (check.subject, check.lineage),
                1 if check.last_ok and check.last_ok >= check.last_run else 0)
            add("probe_last_run_timestamp_seconds", (check.subject,), check.last_run)
            if check.last_ok:
                add("probe_last_success_timestamp_seconds", (check.subject,), check.last_ok)
        else:
            cert = ("disk", "", check.subject)
        if check.not_after:
            add("cert_not_after_timestamp_seconds", cert, check.not_after)
            add("cert_not_before_timestamp_seconds", cert, check.not_before)
            left = lifetime_left(check.not_before, check.not_after, now)
            if left is not None:
                add("cert_lifetime_left_ratio", cert, round(left, 6))
    for name, info in sorted(state.deploys.items()):
        add("deploy_last_timestamp_seconds", (name,), info.time)
        if info.last_success:
            add("deploy_last_success_timestamp_seconds", (name,), info.last_success)
        # the daemon's deploy check: a refusal stops counting once another leaf is on disk
        deploy = state.checks.get(key_of(Kind.DEPLOY, name))
        failed = deploy is not None and any(c.startswith("deploy_") for c in deploy.codes)
        add("deploy_failed", (name,), 1 if failed else 0)
    if last_check:
        add("last_check_timestamp_seconds", (), last_check)
    return [family for family in out.values() if family.samples]


class Exposition(Collector):
    """The latest families, in a registry of their own (no process or GC metrics).

    :meth:`update` swaps in a complete snapshot, so a scrape served by the HTTP thread
    never sees half a check cycle.
    """

    def __init__(self) -> None:
        self._families: tuple[Metric, ...] = ()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def update(self, snapshot: Iterable[Metric]) -> None:
        self._families = tuple(snapshot)

    def collect(self) -> Iterable[Metric]:
        return self._families

    def describe(self) -> Iterable[Metric]:
        return ()  # names vary with the state: nothing to reserve at registration

    def text(self) -> str:
        """The Prometheus text format (0.0.4), as node_exporter's textfile collector reads."""
        return generate_latest(self.registry).decode()


def render(state: State, now: float, last_check: float) -> str:
    """The whole exposition text for ``state`` at time ``now``."""
    exposition = Exposition()
    exposition.update(families(state, now, last_check))
    return exposition.text()


def write_textfile(path: Path, text: str) -> None:
    """Replace ``path`` atomically (node_exporter never reads half a file) with the hook's
    :func:`hook.files.atomic_write`; mode 0644, as node_exporter runs as another user.

    Not ``prometheus_client.write_to_textfile``: it creates the file with the process's
    umask, and the unit runs with ``UMask=0077`` (a 0600 file node_exporter cannot read);
    atomic_write also fsyncs before the rename.
    """
    files.atomic_write(path, text.encode(), mode=0o644)


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[::1]:PORT`` or ``PORT`` (127.0.0.1) -> (host, port), or ConfigError."""
    host, _, port = listen.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"metrics.listen = {listen!r}: expected HOST:PORT, e.g. 127.0.0.1:9469")
    return host.strip("[]") or "127.0.0.1", int(port)


class Exporter:
    """Serve ``exposition`` on ``http://HOST:PORT/metrics`` with prometheus_client's server
    (a daemon thread; like every client_python exporter it answers on any path, and in
    OpenMetrics when the scraper's Accept header asks for it)."""

    def __init__(self, listen: str, exposition: Exposition) -> None:
        host, port = parse_listen(listen)
        try:
            self.server, self.thread = start_http_server(port, addr=host,
                                                         registry=exposition.registry)
        except OSError as exc:
            raise ConfigError(f"metrics.listen = {listen!r}: cannot listen: "
                              f"{exc.strerror or exc}") from exc
        self.thread.name = "metrics"

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

