"""Certificates and certbot lineages: parsing, pairing, chain validation, key
permissions and the OS trust anchors.

What other packages use:

- reading PEM: :func:`parse_chain`, :func:`pair` (key + chain into a :class:`Bundle`),
  :func:`fingerprint` (a leaf's SHA-256), :func:`spki` (its public key, for DANE);
- certbot lineages: :class:`Lineage`, :func:`resolve` (a path given by an admin),
  :func:`previous_version`, :func:`reuses_key`, :func:`read_reuse_key`,
  :func:`parse_reuse_key` (``reuse_key`` in ``renewal/NAME.conf``);
- validation: :class:`Trust` and :func:`load_trust` (the CA store), :func:`check_chain`
  (order, dates, trust, names, key), :func:`check_names`, :func:`names_of`;
- permissions: :func:`key_mode` (the mode a staged private key gets).

The deploy pipeline also drives ``perms`` (inspect/apply) and ``trust`` (the anchors
imported into the OS store) as modules of their own.
"""

from typing import TYPE_CHECKING, Any

from hook.certs.bundle import Bundle, fingerprint, pair, parse_chain, spki
from hook.certs.validate import Trust, check_chain, check_names, load_trust, names_of

if TYPE_CHECKING:
    from hook.certs.lineage import (
        Lineage,
        parse_reuse_key,
        previous_version,
        read_reuse_key,
        resolve,
        reuses_key,
    )
    from hook.certs.perms import key_mode

# Lineages and permissions load on first use: ``renew-check probe`` judges a served
# chain (bundle, validate) and never reads a lineage.
_LAZY = {"Lineage": "lineage", "parse_reuse_key": "lineage", "previous_version": "lineage",
         "read_reuse_key": "lineage", "resolve": "lineage", "reuses_key": "lineage",
         "key_mode": "perms"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib  # noqa: PLC0415

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value

__all__ = [
    "Bundle",
    "Lineage",
    "Trust",
    "check_chain",
    "check_names",
    "fingerprint",
    "key_mode",
    "load_trust",
    "names_of",
    "pair",
    "parse_chain",
    "parse_reuse_key",
    "previous_version",
    "read_reuse_key",
    "resolve",
    "reuses_key",
    "spki",
]
