"""DNS: lookups that say how far their answer can be trusted (DNSSEC), and DANE for
SMTP (TLSA records, the deploy's DANE gate, where DANE was seen in use).

What other packages use:

- lookups (``resolver``): :class:`Resolver` returns an :class:`Answer` with its
  :class:`Security` (secure, insecure, bogus, unknown);
- DANE (``dane``): :func:`check` looks up a certificate's TLSA records for the MX names
  and returns a :class:`DaneResult` (one :class:`HostDane` per name, in a
  :class:`HostState`); :func:`tlsa` and :func:`recommended` make :class:`Tlsa` records.

Importing this package imports dnspython (~70 ms): the deploy pipeline imports it only
when DANE is on, and nothing under :mod:`hook.tls`, :mod:`hook.certs` or
:mod:`hook.postfix` imports it.
"""

from hook.dns.dane import DaneResult, HostDane, HostState, Tlsa, check, recommended, tlsa, tlsa_names
from hook.dns.resolver import Answer, Resolver, Security

__all__ = [
    "Answer",
    "DaneResult",
    "HostDane",
    "HostState",
    "Resolver",
    "Security",
    "Tlsa",
    "check",
    "recommended",
    "tlsa",
    "tlsa_names",
]
