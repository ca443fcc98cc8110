"""Configuration: zero-config defaults, overrides, and errors that name key and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from hook import config
from hook.errors import ConfigError


def test_missing_default_file_means_defaults() -> None:
    """No file at the default path and no override: every default applies."""
    cfg = config.load(None, {})
    assert cfg.postfix.config_directory == Path("/etc/postfix")
    assert cfg.certbot.config_dir == Path("/etc/letsencrypt")
    assert cfg.source is None or cfg.source == config.DEFAULT_PATH


def test_env_var_and_explicit_path(tmp_path: Path) -> None:
    """$POSTFIX_CERTWATCH_CONFIG is used, and --config wins over it."""
    a = tmp_path / "a.toml"
    a.write_text('[postfix]\nconfig_directory = "/srv/pf"\n')
    b = tmp_path / "b.toml"
    b.write_text('[deploy]\nproof_timeout = 5\nproof_consecutive = 2\n')
    env = {config.ENV_VAR: str(a)}
    assert config.load(None, env).postfix.config_directory == Path("/srv/pf")
    cfg = config.load(b, env)
    assert cfg.postfix.config_directory == Path("/etc/postfix")
    assert (cfg.deploy.proof_timeout, cfg.deploy.proof_consecutive) == (5.0, 2)


@pytest.mark.parametrize(("text", "needle"), [
    ("[postfix]\nconfig_dir = '/x'\n", "postfix.config_dir: unknown key"),
    ("[nope]\n", "unknown section [nope]"),
    ("[deploy]\nproof_timeout = -1\n", "deploy.proof_timeout: expected a positive number"),
    ("[deploy]\nproof_consecutive = true\n", "deploy.proof_consecutive: expected a positive"),
    ("[postfix]\nreload_command = 'systemctl reload postfix'\n", "postfix.reload_command"),
    ("[postfix\n", "invalid TOML"),
    ("postfix = 1\n", "[postfix] must be a table"),
])
def test_bad_values_name_key_and_file(tmp_path: Path, text: str, needle: str) -> None:
    """Each bad file is refused with a message naming the file and the key."""
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        config.load(path, {})
    assert str(path) in str(err.value)
    assert needle in str(err.value)


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    """A file asked for by name must exist."""
    with pytest.raises(ConfigError, match="configuration file not found"):
        config.load(tmp_path / "missing.toml", {})


@pytest.mark.parametrize("text", [
    "[daemon]\njitter = 0\nrenew_random_delay = 0\n",
    "[probe]\nwarning_days = 0\ncritical_days = 0\n",
])
def test_zero_is_accepted_where_it_means_none(tmp_path: Path, text: str) -> None:
    """No jitter, no random delay, no absolute expiry floor: 0 is a meaningful value."""
    path = tmp_path / "zero.toml"
    path.write_text(text)
    config.load(path, {})


@pytest.mark.parametrize(("text", "needle"), [
    ("[probe]\nwarning_fraction = 0.1\ncritical_fraction = 0.2\n",
     "probe.critical_fraction (0.2) must not be above probe.warning_fraction (0.1)"),
    ("[probe]\ncritical_days = 5\n", "probe.critical_days (5) must not be above"),
    ("[deploy]\nproof_timeout = 3600\n", "deploy.proof_timeout: at most 300"),
    ("[deploy]\nproof_timeout = 0\n", "deploy.proof_timeout: expected a positive number"),
])
def test_inconsistent_or_out_of_range_values(tmp_path: Path, text: str, needle: str) -> None:
    """Thresholds in the wrong order and a proof that would hold the lock too long are refused."""
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        config.load(path, {})
    assert needle in str(err.value)
    assert str(path) in str(err.value)
