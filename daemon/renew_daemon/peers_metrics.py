"""The peers metrics: counters from Postfix's TLS log lines and TLSRPT reports.

Kept apart from :mod:`daemon.renew_daemon.metrics`, which serves them beside its own:
:func:`families` turns :func:`samples` into ``prometheus_client`` counter families.
Label sets are bounded: directions, Postfix's four levels, the failure kinds of
:class:`hook.postfix.Failure`, at most ``peers.domain_table_size`` domains (then
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

from prometheus_client.metrics_core import CounterMetricFamily, Metric

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
LABELS = {
    "peer_tls_sessions_total": ["direction", "level"],
    "peer_tls_failures_total": ["direction", "failure"],
    "peer_tls_outbound_domain_sessions_total": ["domain", "level"],
    "peer_tls_events_total": [],
    "tlsrpt_sessions_total": ["policy_type", "result"],
    "tlsrpt_failures_total": ["result_type"],
    "tlsrpt_reports_total": [],
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


def families(state: PeerState) -> list[Metric]:
    """The peers metrics as counter families (those with samples, as for the others)."""
    out = {name: CounterMetricFamily(P + name, HELP[name], labels=LABELS[name]) for name in HELP}
    for s in samples(state):
        out[s.name].add_metric([s.labels[k] for k in LABELS[s.name]], s.value)
    return [family for family in out.values() if family.samples]
