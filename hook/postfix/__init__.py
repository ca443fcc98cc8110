"""Postfix: reading an instance's configuration and controlling it.

What other packages use:

- the instance (``instance``): :class:`Postfix` (``postconf`` queries, ``postfix
  check/reload``, ``postmap``; built from the config by :func:`postfix_for`), :func:`host_name` (for alerts),
  :func:`protect_db` (an SNI table's permissions), the :class:`Service` entries of
  master.cf, :func:`tls_level` (a service's effective STARTTLS level, from
  :data:`TLS_LEVEL_PARAMS`), :func:`run_on_pty` (a Postfix command whose errors reach
  us) and its :class:`CommandResult`;
- the one reader of its TLS file settings (``tls_files``): :func:`cert_settings` (per
  place: main.cf, a service's ``-o``, the client side; Postfix's precedence applied by
  :func:`effective_files`), :func:`cert_files` (one :class:`CertFile` per certificate
  file, with its key and services), :func:`usage` (how a certbot lineage is used: a
  :class:`Usage` in a :class:`Mode`, with its :class:`Staged` files of a :class:`Kind`
  and its :class:`SniMap` tables), :func:`tls_enabled`, :func:`own_files`,
  :func:`staged_paths`, :func:`belongs_to`, :func:`files_of`, :func:`sni_entries`;
  which names Postfix presents a lineage under (:func:`required_names`) and whether an
  MX-facing service presents it (:func:`faces_port_25`).
"""

from hook.postfix.instance import (
    TLS_LEVEL_PARAMS,
    CommandResult,
    Postfix,
    Service,
    host_name,
    postfix_for,
    protect_db,
    run_on_pty,
    tls_level,
)
from hook.postfix.tls_files import (
    DB_SUFFIX,
    READER_PARAMS,
    SERVER_FILE_PARAMS,
    CertFile,
    Kind,
    Mode,
    Settings,
    Side,
    SniMap,
    Staged,
    Usage,
    belongs_to,
    cert_files,
    cert_settings,
    effective_files,
    faces_port_25,
    files_of,
    merged,
    own_files,
    required_names,
    sni_entries,
    staged_paths,
    tls_enabled,
    usage,
)

__all__ = [
    "DB_SUFFIX",
    "READER_PARAMS",
    "SERVER_FILE_PARAMS",
    "TLS_LEVEL_PARAMS",
    "CertFile",
    "CommandResult",
    "Kind",
    "Mode",
    "Postfix",
    "Service",
    "Settings",
    "Side",
    "SniMap",
    "Staged",
    "Usage",
    "belongs_to",
    "cert_files",
    "cert_settings",
    "effective_files",
    "faces_port_25",
    "files_of",
    "host_name",
    "merged",
    "own_files",
    "postfix_for",
    "protect_db",
    "required_names",
    "run_on_pty",
    "sni_entries",
    "staged_paths",
    "tls_enabled",
    "tls_level",
    "usage",
]
