"""The configuration: one TOML file, one typed, frozen object built from it.

Zero configuration works for a standard Debian or RHEL server; every key is optional.
The file is found from ``--config``, else ``$POSTFIX_CERTWATCH_CONFIG``, else
:data:`DEFAULT_PATH` (a missing default file means "all defaults"; a missing file that
was asked for explicitly is an error). Unknown keys and values of the wrong type are
errors that name the key and the file. No module reads the environment or the file on
its own: entry points call :func:`load` once and pass the object down.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from hook.errors import ConfigError

DEFAULT_PATH = Path("/etc/postfix-certwatch/config.toml")
ENV_VAR = "POSTFIX_CERTWATCH_CONFIG"


@dataclass(frozen=True)
class PostfixConfig:
    """How to reach the Postfix instance whose certificates we manage."""

    config_directory: Path = Path("/etc/postfix")
    """Passed as ``postfix -c`` / ``postconf -c``; a private instance in tests."""
    reload_command: tuple[str, ...] = ()
    """Empty: ``postfix -c DIR reload``. Else e.g. ``["systemctl", "reload", "postfix"]``."""
    probe_host: str = ""
    """Address to probe for services bound to all interfaces (default 127.0.0.1)."""


@dataclass(frozen=True)
class CertbotConfig:
    """Where certbot keeps its lineages."""

    config_dir: Path = Path("/etc/letsencrypt")


@dataclass(frozen=True)
class DeployConfig:
    """What the deploy hook writes and where."""

    bundle_dir: Path = Path("/etc/postfix-certwatch/bundles")
    """One key+fullchain file per lineage, for ``smtpd_tls_chain_files``."""
    state_dir: Path = Path("/var/lib/postfix-certwatch")
    """Deploy records and the lock."""
    proof_timeout: float = 20.0
    """Seconds to wait for every TLS service to serve the new certificate."""
    proof_consecutive: int = 3
    """How many consecutive probes per service must show the new leaf."""


@dataclass(frozen=True)
class ProbeConfig:
    """The STARTTLS / implicit TLS probe."""

    timeout: float = 10.0
    """Per connection: connect, each read, and the handshake."""
    cafile: Path | None = None
    """Extra trust anchors (a private CA); the system store is used as well."""


@dataclass(frozen=True)
class AlertConfig:
    """Where alerts go: mail through the local sendmail, and/or a JSON webhook."""

    mail_to: tuple[str, ...] = ()
    """Recipients; empty: no mail."""
    mail_from: str = ""
    """Envelope and From: address (default: root@ the host name)."""
    sendmail_command: tuple[str, ...] = ("/usr/sbin/sendmail", "-i")
    """The local sendmail; ``-f FROM -- TO...`` is appended."""
    webhook_url: str = ""
    """POST one JSON document per alert; empty: no webhook."""
    repeat_interval: float = 86400.0
    """Seconds before the daemon repeats an alert for a problem that persists."""


@dataclass(frozen=True)
class DaemonConfig:
    """``renew-daemon``: how often it looks, and the optional ``certbot renew`` job."""

    probe_interval: float = 3600.0
    """Seconds between regular probes of every Postfix TLS service."""
    expiry_interval: float = 3600.0
    """Seconds between expiry checks of every certificate Postfix uses (on disk)."""
    watch_interval: float = 30.0
    """Seconds between looks for new deploy records and changed certificates on disk."""
    settle_delay: float = 120.0
    """After a certificate changed on disk, wait this long before the re-probe (and
    before a served old leaf counts as stale): time for the deploy hook, and longer than
    Postfix's ``max_idle`` (100 s), after which idle smtpd processes holding the old
    certificate are gone. A new deploy record triggers the re-probe at once."""
    jitter: float = 0.1
    """Random delay added to each regular job, as a fraction of its interval."""
    renew: bool = False
    """Run ``renew_command`` twice a day (for hosts without certbot.timer)."""
    renew_command: tuple[str, ...] = ("certbot", "renew", "--quiet", "--no-random-sleep-on-renew")
    renew_interval: float = 43200.0
    """Seconds between ``renew_command`` runs (twice a day)."""
    renew_random_delay: float = 3600.0
    """Up to this many seconds of random delay before each ``renew_command``."""


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus metrics: a node_exporter textfile and/or an HTTP ``/metrics``."""

    textfile: Path | None = None
    """E.g. ``/var/lib/prometheus/node-exporter/postfix_certwatch.prom``; empty: none."""
    listen: str = ""
    """``HOST:PORT`` to serve ``/metrics`` on (e.g. ``127.0.0.1:9469``); empty: none."""


@dataclass(frozen=True)
class Config:
    """The whole configuration; ``source`` is the file it came from (or None)."""

    postfix: PostfixConfig = field(default_factory=PostfixConfig)
    certbot: CertbotConfig = field(default_factory=CertbotConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    alert: AlertConfig = field(default_factory=AlertConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    source: Path | None = None


def resolve_path(explicit: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> tuple[Path, bool]:
    """Return the config path to use and whether it was asked for explicitly."""
    if explicit:
        return Path(explicit), True
    if environ.get(ENV_VAR):
        return Path(environ[ENV_VAR]), True
    return DEFAULT_PATH, False


def load(
    explicit: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Load the configuration (see the module docstring for the search order)."""
    path, required = resolve_path(explicit, os.environ if environ is None else environ)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        if required:
            raise ConfigError(f"{path}: configuration file not found") from exc
        return Config()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc.strerror}") from exc
    return parse(raw, path)


def parse(raw: bytes, path: Path) -> Config:
    """Build a :class:`Config` from TOML bytes; errors name ``path`` and the key."""
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    sections = {f.name: f for f in dataclasses.fields(Config) if f.name != "source"}
    built: dict[str, Any] = {}
    for name, value in data.items():
        if name not in sections:
            raise ConfigError(f"{path}: unknown section [{name}] (known: {', '.join(sections)})")
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: [{name}] must be a table")
        section_type = get_type_hints(Config)[name]
        built[name] = _build_section(section_type, value, path, name)
    return Config(**built, source=path)


def _build_section(cls: type[Any], table: dict[str, Any], path: Path, section: str) -> Any:
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        where = f"{path}: {section}.{key}"
        if key not in known:
            raise ConfigError(f"{where}: unknown key (known in [{section}]: {', '.join(sorted(known))})")
        kwargs[key] = _coerce(hints[key], value, where)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: expected a non-empty path string, got {value!r}")
        return Path(value)
    if hint == (Path | None):
        if value == "":
            return None
        return _coerce(Path, value, where)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"{where}: expected a positive number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{where}: expected a positive integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint == tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{where}: expected a list of non-empty strings, got {value!r}")
        return tuple(value)
    raise ConfigError(f"{where}: unsupported setting type {hint!r}")  # pragma: no cover
