"""The peers metrics: counters from Postfix's TLS log lines and TLSRPT reports.

Kept apart from :mod:`daemon.renew_daemon.metrics` so that any exposition (the text
format here, or a ``prometheus_client`` collector) can take :func:`samples` as they are.
Label sets are bounded: directions, Postfix's four levels, the failure kinds of
:class:`hook.postfix.tlslog.Failure`, at most ``peers.domain_table_size`` domains (then
``other``), and TLSRPT's policy and result types.

=====================================================================  =====================================
metric (all counters, since the state file was created)                labels
=====================================================================  =====================================
``postfix_certwatch_peer_tls_sessions_total``                          direction, level
``postfix_certwatch_peer_tls_failures_total``                          direction, failure
``postfix_certwatch_peer_tls_outbound_domain_sessions_total``          domain, level
``postfix_certwatch_peer_tls_events_total``                            (none)
``postfix_certwatch_tlsrpt_sessions_total``                            policy_type, result (success|failure)
``postfix_certwatch_tlsrpt_failures_total``                            result_type
``postfix_certwatch_tlsrpt_reports_total``                             (none)
=====================================================================  =====================================
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.renew_daemon.peers import PeerState

P = "postfix_certwatch_"
HELP = {
    "peer_tls_sessions_total": "TLS sessions Postfix logged as established, by direction and "
                               "level (anonymous, untrusted, trusted, verified).",
    "peer_tls_failures_total": "TLS failures in Postfix's log, by direction and kind.",
    "peer_tls_outbound_domain_sessions_total": "Outbound TLS sessions by peer domain and level "
                                               "(a capped table; the rest is 'other').",
    "peer_tls_events_total": "TLS log lines read by the daemon.",
    "tlsrpt_sessions_total": "Sessions in the TLSRPT reports received, by policy type and result.",
    "tlsrpt_failures_total": "Failed sessions in the TLSRPT reports received, by result type.",
    "tlsrpt_reports_total": "TLSRPT reports received and read.",
}


@dataclass(frozen=True)
class Sample:
    name: str
    """Without the ``postfix_certwatch_`` prefix."""
    labels: dict[str, str]
    value: float


def samples(state: PeerState) -> list[Sample]:
    out: list[Sample] = []
    for key, n in sorted(state.levels.items()):
        direction, _, level = key.partition(" ")
        out.append(Sample("peer_tls_sessions_total", {"direction": direction, "level": level}, n))
    for key, n in sorted(state.failures.items()):
        direction, _, failure = key.partition(" ")
        out.append(Sample("peer_tls_failures_total", {"direction": direction, "failure": failure}, n))
    for key, n in sorted(state.domains.items()):
        domain, _, level = key.rpartition(" ")
        out.append(Sample("peer_tls_outbound_domain_sessions_total",
                          {"domain": domain, "level": level}, n))
    out.append(Sample("peer_tls_events_total", {}, state.lines))
    rpt = state.tlsrpt
    for key, n in sorted(rpt.get("sessions", {}).items()):
        policy, _, result = key.partition(" ")
        out.append(Sample("tlsrpt_sessions_total", {"policy_type": policy, "result": result}, n))
    for key, n in sorted(rpt.get("failures", {}).items()):
        out.append(Sample("tlsrpt_failures_total", {"result_type": key}, n))
    out.append(Sample("tlsrpt_reports_total", {}, int(rpt.get("reports", 0))))
    return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(state: PeerState) -> str:
    """The text exposition format of :func:`samples`."""
    by_name: dict[str, list[Sample]] = {}
    for s in samples(state):
        by_name.setdefault(s.name, []).append(s)
    out = []
    for name, rows in by_name.items():
        out.append(f"# HELP {P}{name} {HELP[name]}\n# TYPE {P}{name} counter\n")
        for s in rows:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in s.labels.items())
            out.append(f"{P}{name}{'{' + labels + '}' if labels else ''} {int(s.value)}\n")
    return "".join(out)
