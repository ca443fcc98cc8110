"""Fixtures: the real stack (pebble + certbot + a private Postfix), see tests/harness."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator

import pytest

from hook.config import Config, DnsConfig
from tests.harness.dns import DnsStack, running_dns
from tests.harness.policy import PolicyServer, running_policy_server
from tests.harness.stack import LO, Certbot, Pebble, Stack, new_base, running_pebble, running_stack


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.geteuid() != 0:
        raise pytest.UsageError("the test suite runs a private Postfix instance: run it as root "
                                "(the README's test command does)")


@pytest.fixture(scope="session")
def pebble() -> Iterator[Pebble]:
    """One pebble ACME server for the whole session (its roots change on every start)."""
    with running_pebble() as p:
        yield p


@pytest.fixture
def stack(pebble: Pebble) -> Iterator[Stack]:
    """A fresh certbot lineage and a fresh private Postfix reading it in place (~1.5 s)."""
    with running_stack(pebble) as s:
        yield s


@pytest.fixture(scope="module")
def module_stack(pebble: Pebble) -> Iterator[Stack]:
    """Like ``stack`` but shared by a module's read-only tests."""
    with running_stack(pebble) as s:
        yield s


@pytest.fixture(scope="session")
def dns_stack() -> Iterator[DnsStack]:
    """Knot (signed + unsigned + bogus zones) and a validating Unbound on loopback (~0.2 s).

    Shared by the session: tests that change records set every RRset they rely on."""
    with running_dns() as d:
        yield d


@pytest.fixture
def dns_config(dns_stack: DnsStack) -> Config:
    """A configuration whose [dns] resolver is the test stack's validating Unbound."""
    return Config(dns=DnsConfig(resolver=LO, resolver_port=dns_stack.resolver_port, timeout=2.0))


@pytest.fixture(scope="session")
def policy_server() -> Iterator[PolicyServer]:
    """An MTA-STS policy server (HTTPS, trustme certificate) on loopback; tests set the
    policies they rely on with ``serve()``."""
    with running_policy_server() as server:
        yield server


@contextlib.contextmanager
def _issued(pebble: Pebble) -> Iterator[Certbot]:
    base = new_base("certwatch-certbot-")
    try:
        cb = Certbot(base, pebble)
        cb.issue()
        yield cb
    finally:
        if not os.environ.get("CERTWATCH_KEEP_STACK"):
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def certbot(pebble: Pebble) -> Iterator[Certbot]:
    """certbot with private directories and one issued lineage (``DOMAIN``), no Postfix:
    real certificates and real renewals for library tests (~1-3 s)."""
    with _issued(pebble) as cb:
        yield cb


@pytest.fixture(scope="module")
def module_certbot(pebble: Pebble) -> Iterator[Certbot]:
    """Like ``certbot`` but shared by a module's tests that do not renew."""
    with _issued(pebble) as cb:
        yield cb
