"""Prometheus metrics, rendered from the daemon's state in the text exposition format.

Written atomically to a node_exporter textfile-collector file and/or served on
``/metrics``. Every gauge is derived from :class:`~daemon.renew_daemon.state.State`, which keeps the
last certificate each check saw: unlike blackbox_exporter, the expiry of a certificate
that is expired, or of a service that stopped answering, stays visible.

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

import http.server
import threading
from collections.abc import Iterable
from pathlib import Path

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


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}" if labels else ""


def _num(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


def render(state: State, now: float, last_check: float) -> str:
    """The whole exposition text for ``state`` at time ``now``."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {name: [] for name in HELP}

    def add(name: str, labels: dict[str, str], value: float) -> None:
        samples[name].append((labels, value))

    for check in sorted(state.checks.values(), key=lambda c: c.key):
        subject = {"check": check.kind.value, "subject": check.subject, "lineage": check.lineage}
        add("check_status", subject, STATUS_VALUE.get(check.status, 3))
        for code in check.codes:
            add("problem", {**subject, "code": code}, 1)
        if check.kind in (Kind.DEPLOY, Kind.POSTFIX):
            continue
        if check.kind is Kind.PROBE:
            cert = {"source": "served", "service": check.subject, "lineage": check.lineage}
            svc = {"service": check.subject, "lineage": check.lineage}
            add("probe_success", svc, 1 if check.last_ok and check.last_ok >= check.last_run else 0)
            add("probe_last_run_timestamp_seconds", {"service": check.subject}, check.last_run)
            if check.last_ok:
                add("probe_last_success_timestamp_seconds", {"service": check.subject},
                    check.last_ok)
        else:
            cert = {"source": "disk", "service": "", "lineage": check.subject}
        if check.not_after:
            add("cert_not_after_timestamp_seconds", cert, check.not_after)
            add("cert_not_before_timestamp_seconds", cert, check.not_before)
            left = lifetime_left(check.not_before, check.not_after, now)
            if left is not None:
                add("cert_lifetime_left_ratio", cert, round(left, 6))
    for name, info in sorted(state.deploys.items()):
        add("deploy_last_timestamp_seconds", {"lineage": name}, info.time)
        if info.last_success:
            add("deploy_last_success_timestamp_seconds", {"lineage": name}, info.last_success)
        # the daemon's deploy check: a refusal stops counting once another leaf is on disk
        deploy = state.checks.get(key_of(Kind.DEPLOY, name))
        failed = deploy is not None and any(c.startswith("deploy_") for c in deploy.codes)
        add("deploy_failed", {"lineage": name}, 1 if failed else 0)
    if last_check:
        add("last_check_timestamp_seconds", {}, last_check)
    return "".join(_family(name, rows) for name, rows in samples.items() if rows)


def _family(name: str, rows: Iterable[tuple[dict[str, str], float]]) -> str:
    head = f"# HELP {P}{name} {HELP[name]}\n# TYPE {P}{name} gauge\n"
    return head + "".join(f"{P}{name}{_labels(lab)} {_num(val)}\n" for lab, val in rows)


def write_textfile(path: Path, text: str) -> None:
    """Replace ``path`` atomically (node_exporter never reads half a file) with the hook's
    :func:`hook.files.atomic_write`; mode 0644, as node_exporter runs as another user."""
    files.atomic_write(path, text.encode(), mode=0o644)


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[::1]:PORT`` or ``PORT`` (127.0.0.1) -> (host, port), or ConfigError."""
    host, _, port = listen.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"metrics.listen = {listen!r}: expected HOST:PORT, e.g. 127.0.0.1:9469")
    return host.strip("[]") or "127.0.0.1", int(port)


class Exporter:
    """Serve the latest rendered text on ``http://HOST:PORT/metrics`` (a daemon thread)."""

    def __init__(self, listen: str) -> None:
        host, port = parse_listen(listen)
        self.text = ""
        exporter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics here")
                    return
                body = exporter.text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        try:
            self.server = http.server.ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise ConfigError(f"metrics.listen = {listen!r}: cannot listen: "
                              f"{exc.strerror or exc}") from exc
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics",
                                       daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
