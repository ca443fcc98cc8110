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
- :func:`probe_bounded` keeps a target's deep checks inside its timeout. The input
  checks at the edge (hosts, ports, server names, timeouts) are :mod:`hook.endpoint`.

Importing this package must stay cheap (``renew-check probe`` start-up): no DNS
library, no scheduler, no logging framework.
"""

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
    "DeepResult",
    "Extra",
    "Failure",
    "Handshake",
    "ProbeResult",
    "Role",
    "Target",
    "Thresholds",
    "Verdict",
    "default_context",
    "expiry_problems",
    "judge",
    "lifetime_left",
    "map_bounded",
    "per_address",
    "probe",
    "probe_bounded",
    "probe_deep",
    "probe_many",
    "role_for",
    "thresholds_of",
    "worth_going_deep",
]
