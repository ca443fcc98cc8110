"""``scripts/install.sh`` into a staging root: hook symlink, units, commented config."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

from hook import config
from tests.harness.stack import VENV_BIN

REPO = Path(__file__).resolve().parent.parent


def install(root: Path, *extra: str) -> str:
    proc = subprocess.run(["bash", str(REPO / "scripts" / "install.sh"), "--root", str(root),
                           "--prefix", str(VENV_BIN.parent), "--no-venv",
                           "--certbot", str(VENV_BIN / "certbot"), *extra],
                          capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "warning" not in proc.stderr, proc.stderr
    return proc.stdout


def test_install_places_hook_units_config_and_says_what_to_enable(tmp_path: Path) -> None:
    """The hook is a symlink in renewal-hooks/deploy/ to the venv's postfix-deploy-hook,
    the units point at the venv, the config is the commented defaults, and the output
    tells the admin what to enable (and not to run both renewal timers)."""
    out = install(tmp_path)
    hook = tmp_path / "etc/letsencrypt/renewal-hooks/deploy/postfix-certwatch"
    assert hook.is_symlink() and Path(hook.readlink()) == VENV_BIN / "postfix-deploy-hook"
    unit = (tmp_path / "etc/systemd/system/postfix-certwatch.service").read_text()
    assert f"ExecStart={VENV_BIN}/renew-daemon --config /etc/postfix-certwatch/config.toml" in unit
    renew = (tmp_path / "etc/systemd/system/postfix-certwatch-renew.service").read_text()
    assert f"ExecStart={VENV_BIN}/certbot renew" in renew
    assert (tmp_path / "etc/systemd/system/postfix-certwatch-renew.timer").is_file()
    assert (tmp_path / "usr/local/share/postfix-certwatch/prometheus/"
            "postfix-certwatch.rules.yml").is_file()
    cfg = tmp_path / "etc/postfix-certwatch/config.toml"
    assert config.load(cfg, {}) == config.Config(source=cfg)  # all commented: defaults
    for needle in ("systemctl enable --now postfix-certwatch.service",
                   "postfix-certwatch-renew.timer", "disable --now certbot.timer", "not both"):
        assert needle in out


def test_install_again_keeps_the_admins_config(tmp_path: Path) -> None:
    """A second run replaces units and hook but never overwrites an edited config."""
    install(tmp_path)
    cfg = tmp_path / "etc/postfix-certwatch/config.toml"
    cfg.write_text('[alert]\nmail_to = ["postmaster@example.org"]\n')
    out = install(tmp_path)
    assert "kept" in out
    assert config.load(cfg, {}).alert.mail_to == ("postmaster@example.org",)
    assert (cfg.parent / "config.toml.example").is_file()


def test_commented_example_lists_the_defaults() -> None:
    """Uncommenting every key of the example config gives exactly the defaults, and the
    [alert], [daemon] and [metrics] sections list every key they have."""
    text = (REPO / "scripts" / "config.example.toml").read_text()
    active = "\n".join(re.sub(r"^# (\w+ = )", r"\1", line) for line in text.splitlines())
    active = "\n".join(line.split("  #")[0] if " = " in line else line
                       for line in active.splitlines())
    cfg = config.parse(active.encode(), Path("example.toml"))
    assert dataclasses.replace(cfg, source=None) == config.Config()
    for section in ("alert", "daemon", "metrics"):
        for f in dataclasses.fields(getattr(config.Config(), section)):
            assert re.search(rf"^# {f.name} = ", text, re.M), f"{section}.{f.name} missing"
