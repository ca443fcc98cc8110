"""``scripts/install.sh`` into a staging root: hook symlink, units, commented config,
commands in /usr/local/bin, the system's certbot, a Python >= 3.11, certbot's timer."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from pathlib import Path

from hook import config
from tests.harness.stack import VENV_BIN

REPO = Path(__file__).resolve().parent.parent


def run_install(root: Path, *args: str, path: str | None = None
                ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path} if path else None
    return subprocess.run(["/bin/bash", str(REPO / "scripts" / "install.sh"), "--root", str(root),
                           *args], capture_output=True, text=True, check=False, timeout=60,
                          env=env)


def install(root: Path, *extra: str) -> str:
    proc = run_install(root, "--prefix", str(VENV_BIN.parent), "--no-venv",
                       "--certbot", str(VENV_BIN / "certbot"), *extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "warning" not in proc.stderr, proc.stderr
    return proc.stdout


def script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)
    return path


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
    for tool in ("renew-check", "postfix-deploy-hook", "renew-daemon"):  # on PATH
        assert (tmp_path / "usr/local/bin" / tool).readlink() == VENV_BIN / tool
    for needle in ("systemctl enable --now postfix-certwatch.service",
                   "postfix-certwatch-renew.timer", "disable --now certbot.timer", "not both",
                   "certbot-renew.timer", "snap.certbot.renew.timer"):
        assert needle in out


def test_install_names_the_certbot_timer_it_finds(tmp_path: Path) -> None:
    """On RHEL (EPEL) certbot's timer is certbot-renew.timer: the next steps name it."""
    (tmp_path / "usr/lib/systemd/system").mkdir(parents=True)
    (tmp_path / "usr/lib/systemd/system/certbot-renew.timer").write_text("[Timer]\n")
    out = install(tmp_path)
    assert "keep certbot-renew.timer" in out and "disable --now certbot-renew.timer" in out
    assert "disable --now certbot.timer" not in out


def test_renew_unit_gets_the_system_certbot_not_the_venvs(tmp_path: Path) -> None:
    """Without --certbot, the renew unit runs the first certbot on PATH outside the
    venv (--prefix), even when the venv's bin, or a link to its certbot, comes first."""
    venv = tmp_path / "venv"
    for tool in ("certbot", "renew-daemon", "postfix-deploy-hook", "renew-check"):
        script(venv / "bin" / tool, "exit 0\n")
    linked = tmp_path / "local/bin"
    linked.mkdir(parents=True)
    (linked / "certbot").symlink_to(venv / "bin/certbot")
    system = script(tmp_path / "usr/bin/certbot", "exit 0\n")
    proc = run_install(tmp_path / "root", "--prefix", str(venv), "--no-venv",
                       path=f"{venv}/bin:{linked}:{system.parent}:/usr/bin:/bin")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    renew = (tmp_path / "root/etc/systemd/system/postfix-certwatch-renew.service").read_text()
    assert f"ExecStart={system} renew" in renew


def test_install_needs_python_3_11_and_finds_one(tmp_path: Path) -> None:
    """RHEL 8/9's python3 is 3.6/3.9: install.sh then uses python3.13/3.12/3.11 if there,
    and otherwise stops with what to install; --python is checked the same way."""
    fake = tmp_path / "fakebin"
    script(fake / "python3", 'echo 3.6\n')  # answers the version question only
    path = f"{fake}:/usr/bin:/bin"
    tools = tmp_path / "tools"  # a PATH without this machine's python3.11
    tools.mkdir()
    (tools / "dirname").symlink_to("/usr/bin/dirname")
    refused = run_install(tmp_path / "root", path=f"{fake}:{tools}")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "needs Python >= 3.11, and python3 is 3.6" in refused.stderr
    assert "dnf install python3.11" in refused.stderr
    old = run_install(tmp_path / "root", "--python", str(fake / "python3"), path=path)
    assert old.returncode == 1, old.stdout + old.stderr
    assert "--python" in old.stderr and "is 3.6" in old.stderr and ">= 3.11" in old.stderr
    assert not (tmp_path / "root/opt").exists()  # stopped before anything was installed
    # a python3.12 that makes a "venv" whose pip installs the three commands
    script(fake / "python3.12", f"""case "$1" in
  -c) echo 3.12 ;;
  -m) mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && echo "venv $3 by $0" >> {tmp_path}/log
      printf '#!/bin/sh\\nfor t in renew-daemon postfix-deploy-hook renew-check; do
        printf "#!/bin/sh\\\\n" > "$(dirname "$0")/$t"; chmod +x "$(dirname "$0")/$t"; done\\n' \
        > "$3/bin/pip" && chmod +x "$3/bin/pip" ;;
esac
""")
    proc = run_install(tmp_path / "root", "--certbot", "/usr/bin/certbot", path=path)
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stdout + proc.stderr
    assert (tmp_path / "log").read_text() == \
        f"venv {tmp_path}/root/opt/postfix-certwatch by {fake}/python3.12\n"
    assert "(3.12)" in proc.stdout


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
