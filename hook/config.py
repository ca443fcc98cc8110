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
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, get_type_hints

from hook import files
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
    command_timeout: float = 60.0
    """Seconds ``postfix check``, the reload command and ``postmap`` may take; a reload
    that hangs longer counts as failed (and is rolled back)."""


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
    names: tuple[str, ...] = ()
    """Host names the certificate must cover besides ``myhostname`` (e.g. the MX names)."""
    require_myhostname: bool = True
    """Refuse a certificate that does not cover Postfix's ``myhostname``."""
    group: str = ""
    """Empty: bundles and private keys are 0600 root. A group name: 0640 root:GROUP."""
    hook_deadline: float = 240.0
    """Seconds one hook run may take in all (lock wait included); then it rolls back what
    it changed, alerts and exits 8, so that certbot (which waits for its hooks) goes on."""


@dataclass(frozen=True)
class ProbeConfig:
    """The STARTTLS / implicit TLS probe."""

    timeout: float = 10.0
    """Per connection: connect, each read, and the handshake."""
    cafile: Path | None = None
    """Extra trust anchors (a private CA); the system store is used as well."""
    deep: bool = True
    """``renew-check``: also try an anonymous cipher and TLS 1.0/1.1 (3 extra handshakes)."""
    per_host: int = 4
    """At most this many connections to one host at a time (postscreen/anvil count them)."""
    workers: int = 32
    """At most this many probes in flight overall."""
    warning_fraction: float = 0.25
    """Warn when less than this fraction of a certificate's lifetime is left."""
    critical_fraction: float = 0.10
    """Critical when less than this fraction of its lifetime is left."""
    warning_days: float = 3.0
    """Floor: warn with fewer days left than this (capped at 1/6 of the lifetime)."""
    critical_days: float = 1.0
    """Floor: critical with fewer days left than this (capped at 1/6 of the lifetime)."""


@dataclass(frozen=True)
class TrustConfig:
    """Which roots validation trusts, and the opt-in import of intermediates into the OS."""

    system_store: bool = True
    """Validate against the system store too; false: only ``probe.cafile`` (a private CA)."""
    import_anchors: bool = False
    """Import the chain's intermediate CA certificates into the OS trust anchors."""
    flavor: str = "auto"
    """``auto`` (detect), ``debian`` (update-ca-certificates) or ``rhel`` (update-ca-trust)."""
    anchors_dir: Path | None = None
    """Default: /usr/local/share/ca-certificates (Debian), /etc/pki/ca-trust/source/anchors (RHEL)."""
    update_command: tuple[str, ...] = ()
    """Default: ``update-ca-certificates`` (``--fresh`` added after removals) or
    ``update-ca-trust extract``."""


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


class DaneMode(StrEnum):
    """What the deploy hook does when no DNSSEC-validated TLSA record matches a new chain."""

    REFUSE = "refuse"
    """Keep the current certificate, exit "refused", print the TLSA records to publish."""
    WARN = "warn"
    """Deploy anyway; the problems are warnings."""
    OFF = "off"
    """No TLSA lookups at all."""


@dataclass(frozen=True)
class DnsConfig:
    """The DNS-aware checks: DANE gate (hook), DANE status, MX coverage and MTA-STS (renew-check)."""

    resolver: str = ""
    """IP address of a DNSSEC-validating resolver; empty: the nameservers of /etc/resolv.conf.
    Only its AD bit makes records trusted, so it should be local (127.0.0.1, ::1)."""
    resolver_port: int = 53
    timeout: float = 5.0
    """Seconds per DNS query and per MTA-STS policy fetch."""
    dane: DaneMode = DaneMode.REFUSE
    """refuse | warn | off: see :class:`DaneMode`."""
    host_addresses: tuple[str, ...] = ()
    """Addresses that reach this host but are not on its interfaces (NAT, a load balancer):
    an MX whose address is one of these, or local, points at this host."""
    mta_sts: bool = True
    """Check MTA-STS policies (renew-check only; never the deploy hook or the daemon)."""
    mta_sts_cafile: Path | None = None
    """Extra trust anchors for the policy's HTTPS certificate; the system store is used too."""
    mta_sts_connect: str = ""
    """``HOST:PORT`` to connect to instead of ``mta-sts.DOMAIN:443`` (the name is still
    sent as SNI and verified); for tests and for fetching your own policy locally."""


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


class LogSource(StrEnum):
    """Where ``[peers]`` reads Postfix's log."""

    AUTO = "auto"
    """``maillog_file`` if Postfix has one, else /var/log/mail.log or /var/log/maillog, else
    the systemd journal."""
    FILE = "file"
    JOURNAL = "journal"
    OFF = "off"


@dataclass(frozen=True)
class PeersConfig:
    """What peers see: Postfix's own TLS log lines and TLSRPT reports (daemon, renew-check)."""

    log_source: LogSource = LogSource.AUTO
    """auto | file | journal | off: see :class:`LogSource`."""
    log_file: Path | None = None
    """The mail log to follow; empty: found automatically (see ``log_source``)."""
    journal_directory: Path | None = None
    """Read journal files from this directory (``journalctl --directory``); empty: the system
    journal."""
    syslog_names: tuple[str, ...] = ("postfix",)
    """Postfix's ``syslog_name`` values (journal matches ``NAME/smtpd``, ``NAME/smtp``, ...);
    add e.g. ``postfix-out`` for a second instance."""
    interval: float = 10.0
    """Seconds between two reads of the log (and of the report mailbox) by the daemon."""
    renewal_window: float = 3600.0
    """Seconds after a deploy in which inbound TLS failures are compared with the 24 h before."""
    min_failures: int = 3
    """Failed inbound TLS sessions after a renewal needed (at twice the rate before) for an alert."""
    domain_table_size: int = 100
    """Outbound peer domains counted one by one in the metrics; the rest count as ``other``."""
    tlsrpt_mailbox: Path | None = None
    """Maildir (a directory with ``new/`` and ``cur/``) or mbox file where TLSRPT reports
    (``rua=mailto:``) arrive; empty: none."""
    ignore_clients: tuple[str, ...] = ("127.0.0.1", "::1")
    """Inbound client addresses that are not peers: our own probes (renew-check's deep probe
    offers an anonymous cipher on purpose), local monitoring. ``[]``: count every client."""


@dataclass(frozen=True)
class Config:
    """The whole configuration; ``source`` is the file it came from (or None)."""

    postfix: PostfixConfig = field(default_factory=PostfixConfig)
    certbot: CertbotConfig = field(default_factory=CertbotConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    trust: TrustConfig = field(default_factory=TrustConfig)
    alert: AlertConfig = field(default_factory=AlertConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    peers: PeersConfig = field(default_factory=PeersConfig)
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
        raw = files.read_bounded(path, files.CONFIG_MAX)
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


ZERO_ALLOWED = frozenset({"daemon.jitter", "daemon.renew_random_delay", "probe.warning_days",
                          "probe.critical_days"})
"""Numbers for which 0 is meaningful ("no jitter", "no absolute floor"); others must be > 0."""
MAXIMUM = {"deploy.proof_timeout": 300.0, "postfix.command_timeout": 300.0,
           "probe.timeout": 300.0, "dns.timeout": 60.0, "deploy.hook_deadline": 3600.0,
           "peers.domain_table_size": 10000, "peers.renewal_window": 7 * 86400.0}
"""Upper bounds: a proof longer than this holds the deploy lock for too long; a probe or
DNS timeout longer than this outlives any monitoring check."""


HOSTS = frozenset({"postfix.probe_host", "dns.resolver"})
"""Keys holding an address or host name: checked like a command-line host."""


def _build_section(cls: type[Any], table: dict[str, Any], path: Path, section: str) -> Any:
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        where = f"{path}: {section}.{key}"
        if key not in known:
            raise ConfigError(f"{where}: unknown key (known in [{section}]: {', '.join(sorted(known))})")
        dotted = f"{section}.{key}"
        kwargs[key] = _coerce(hints[key], value, where, zero_ok=dotted in ZERO_ALLOWED)
        if key.endswith("_fraction") and kwargs[key] >= 1:
            raise ConfigError(f"{where}: expected a fraction below 1 (0.25 = a quarter), "
                              f"got {value!r}")
        if dotted == "peers.syslog_names" and not all(
                n.replace("-", "").replace("_", "").replace(".", "").isalnum() for n in value):
            raise ConfigError(f"{where}: expected syslog names like \"postfix\" (letters, digits, "
                              f"'-', '_', '.'), got {value!r}")
        if dotted in MAXIMUM and kwargs[key] > MAXIMUM[dotted]:
            raise ConfigError(f"{where}: at most {MAXIMUM[dotted]:g}, got {value!r}")
        if dotted in HOSTS and kwargs[key]:
            from hook.endpoint import check_host  # noqa: PLC0415

            try:
                check_host(kwargs[key])
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
    built = cls(**kwargs)
    for low, high in (("critical_fraction", "warning_fraction"), ("critical_days", "warning_days")):
        if low in table or high in table:
            lo, hi = getattr(built, low, None), getattr(built, high, None)
            if lo is not None and hi is not None and lo > hi:
                raise ConfigError(f"{path}: {section}.{low} ({lo:g}) must not be above "
                                  f"{section}.{high} ({hi:g})")
    return built


def _coerce(hint: Any, value: Any, where: str, *, zero_ok: bool = False) -> Any:
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
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok)):
            wanted = "a number, 0 or more" if zero_ok else "a positive number"
            raise ConfigError(f"{where}: expected {wanted} (finite), got {value!r}")
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
        if where.endswith(".ignore_clients") and value == []:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{where}: expected a list of non-empty strings, got {value!r}")
        return tuple(value)
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        allowed = [m.value for m in hint]
        if value not in allowed:
            raise ConfigError(f"{where}: expected one of {', '.join(allowed)}, got {value!r}")
        return hint(value)
    raise ConfigError(f"{where}: unsupported setting type {hint!r}")  # pragma: no cover
