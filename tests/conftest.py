"""Fixtures: the real stack (pebble + certbot + a private Postfix), see tests/harness."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.harness.stack import Pebble, Stack, running_pebble, running_stack


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
