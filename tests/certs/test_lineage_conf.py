"""certbot's renewal/NAME.conf, read once for the hook, the DANE gate and the audit."""

from __future__ import annotations

from pathlib import Path

import pytest

from hook.certs.lineage import parse_reuse_key, read_reuse_key


@pytest.mark.parametrize(("text", "expected"), [
    ("version = 5.8.0\n[renewalparams]\nreuse_key = True\n", True),
    ("reuse_key=true\n", True),
    ("reuse_key = 'True'\n", True),
    ("reuse_key = False\n", False),
    ("# reuse_key = True\nkey_type = ecdsa\n", False),
    ("", False),
])
def test_reuse_key_as_certbot_writes_it(text: str, expected: bool) -> None:
    """The configobj line certbot writes (and hand edits of it) give one answer."""
    assert parse_reuse_key(text) is expected


def test_unreadable_renewal_conf_is_unknown(tmp_path: Path) -> None:
    """A missing renewal file is "unknown" (None), not "off"."""
    assert read_reuse_key(tmp_path / "missing.conf") is None
