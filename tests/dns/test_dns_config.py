"""The [dns] section: defaults, every key, and errors that name the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from hook import config
from hook.config import DaneMode
from hook.errors import ConfigError


def test_dns_defaults_are_safe() -> None:
    """Zero config: the system resolver, DANE gate refusing, MTA-STS checks on."""
    dns = config.Config().dns
    assert (dns.resolver, dns.resolver_port, dns.dane, dns.mta_sts) == ("", 53, DaneMode.REFUSE, True)
    assert dns.mta_sts_cafile is None and dns.mta_sts_connect == "" and dns.host_addresses == ()


def test_dns_section_parses_every_key(tmp_path: Path) -> None:
    """Every [dns] key is read with its type."""
    path = tmp_path / "c.toml"
    path.write_text('[dns]\nresolver = "127.0.0.1"\nresolver_port = 5353\ntimeout = 2\n'
                    'dane = "warn"\nhost_addresses = ["192.0.2.25"]\nmta_sts = false\n'
                    'mta_sts_cafile = "/etc/ssl/ca.pem"\nmta_sts_connect = "127.0.0.1:8443"\n')
    dns = config.load(path, {}).dns
    assert (dns.resolver, dns.resolver_port, dns.timeout, dns.dane) == ("127.0.0.1", 5353, 2.0,
                                                                        DaneMode.WARN)
    assert dns.host_addresses == ("192.0.2.25",) and dns.mta_sts is False
    assert dns.mta_sts_cafile == Path("/etc/ssl/ca.pem") and dns.mta_sts_connect == "127.0.0.1:8443"


def test_bad_dane_mode_names_key_file_and_choices(tmp_path: Path) -> None:
    """dane must be refuse, warn or off; the error says where and what is allowed."""
    path = tmp_path / "c.toml"
    path.write_text('[dns]\ndane = "strict"\n')
    with pytest.raises(ConfigError, match=rf"{path}: dns\.dane: expected one of refuse, warn, off"):
        config.load(path, {})
