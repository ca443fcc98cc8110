"""The TLS probe and its verdicts: a careful SMTP client, STARTTLS / implicit TLS
probes, and the judgement of what was served.

What other packages use:

- probing (``starttls``): a :class:`Target` in, a :class:`ProbeResult` out (a failed
  probe is a result with a :class:`Failure`, never an exception): :func:`probe`,
  :func:`probe_deep` (:class:`DeepResult`: protocols, anonymous ciphers, :class:`Extra`),
  :func:`probe_many`, :func:`per_address` (one target per resolved address),
  :func:`map_bounded` (a bounded pool, per-host limits), :func:`worth_going_deep`,
  :func:`default_context`; :class:`Handshake` is what a successful probe saw;
- judging (``judgement``): :func:`judge` a result into a :class:`Verdict` for a
  :class:`Role` (:func:`role_for`), with :class:`Thresholds` (:func:`thresholds_of`)
  and :func:`expiry_problems` / :func:`lifetime_left` for certificates on disk;
- input checks at the edge (``endpoint``): :func:`parse_target` (``HOST:PORT``,
  ``[IPv6]:PORT``, ``HOST``), :func:`check_host`, :func:`check_servername`,
  :func:`check_timeout` (finite, above 0, at most :data:`MAX_TIMEOUT`), :func:`shown`
  (a hostile string cut to a printable length); :func:`probe_bounded` keeps a target's
  deep checks inside its timeout.

Importing this package must stay cheap (``renew-check probe`` start-up): no DNS
library, no scheduler, no logging framework.
"""

from hook.tls.endpoint import (
    MAX_TIMEOUT,
    check_host,
    check_servername,
    check_timeout,
    parse_target,
    shown,
)
from hook.tls.judgement import (
    Role,
    Thresholds,
    Verdict,
    expiry_problems,
    judge,
    lifetime_left,
    role_for,
    thresholds_of,
)
from hook.tls.starttls import (
    DeepResult,
    Extra,
    Failure,
    Handshake,
    ProbeResult,
    Target,
    default_context,
    map_bounded,
    per_address,
    probe,
    probe_bounded,
    probe_deep,
    probe_many,
    worth_going_deep,
)

__all__ = [
    "MAX_TIMEOUT",
    "DeepResult",
    "Extra",
    "Failure",
    "Handshake",
    "ProbeResult",
    "Role",
    "Target",
    "Thresholds",
    "Verdict",
    "check_host",
    "check_servername",
    "check_timeout",
    "default_context",
    "expiry_problems",
    "judge",
    "lifetime_left",
    "map_bounded",
    "parse_target",
    "per_address",
    "probe",
    "probe_bounded",
    "probe_deep",
    "probe_many",
    "role_for",
    "shown",
    "thresholds_of",
    "worth_going_deep",
]
