"""``scripts/install.sh`` into a staging root: hook symlink, units, commented config,
commands in /usr/local/bin, the system's certbot, a Python >= 3.11, certbot's timer."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

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


@pytest.fixture
def visible(tmp_path: Path) -> Iterator[Path]:
    """A directory the unit would see (under /run, not /tmp: PrivateTmp= hides /tmp)."""
    path = Path(tempfile.mkdtemp(prefix="certwatch-test-", dir="/run"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def fake_python(path: Path, version: str, home: str = "", venv: bool = True) -> Path:
    """A script that answers install.sh's questions like a Python would: its version,
    where its binary and standard library really are (``home``, default: next to it),
    and whether it has the venv module."""
    home = home or str(path.parent.parent)
    exe = f"{home}/bin/python{version}" if home != str(path.parent.parent) else str(path)
    return script(path, f"""case "$*" in
  *base_prefix*) printf '%s\\n%s\\n' '{exe}' '{home}' ;;
  *ensurepip*) exit {0 if venv else 1} ;;
  *version_info*) echo {version} ;;
  *) exit 1 ;;
esac
""")


def which_python(visible: Path, *args: str, path: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path, "CERTWATCH_PYTHON_DIRS": str(visible / "usr/bin")}
    return subprocess.run(["/bin/bash", str(REPO / "scripts" / "install.sh"), "--which-python",
                           *args], capture_output=True, text=True, check=False, timeout=60, env=env)


def tools_dir(base: Path) -> Path:
    """A PATH entry with what install.sh needs besides Python (and no python3)."""
    tools = base / "tools"
    tools.mkdir(exist_ok=True)
    for tool in ("dirname", "readlink"):
        (tools / tool).symlink_to(f"/usr/bin/{tool}")
    return tools


def test_install_prefers_the_distributions_python(visible: Path) -> None:
    """The distribution's python3 (/usr/bin) is chosen over a newer one earlier on PATH,
    and python3.12 there when python3 is too old (RHEL 8/9)."""
    distro = fake_python(visible / "usr/bin/python3", "3.11")
    local = fake_python(visible / "opt/bin/python3", "3.13")
    tools = tools_dir(visible)
    proc = which_python(visible, path=f"{local.parent}:{tools}")
    assert proc.returncode == 0 and proc.stdout.strip() == f"{distro} (3.11)", proc
    fake_python(distro, "3.6")
    newer = fake_python(visible / "usr/bin/python3.12", "3.12")
    proc = which_python(visible, path=f"{tools}")
    assert proc.returncode == 0 and proc.stdout.strip() == f"{newer} (3.12)", proc


def test_install_refuses_a_python_the_unit_cannot_see(visible: Path, tmp_path: Path) -> None:
    """A pyenv python3 (/root/.pyenv/...: ProtectHome=yes hides it) or one under /tmp
    (PrivateTmp=yes) is refused with the reason and the fix, also with --python: the
    venv's interpreter would be invisible to renew-daemon, which would not start (203/EXEC)."""
    fake_python(visible / "usr/bin/python3", "3.9")  # the distribution's: too old
    shim = fake_python(visible / "pyenv/shims/python3", "3.11", home="/root/.pyenv/versions/3.11.7")
    tools = tools_dir(visible)
    proc = which_python(visible, path=f"{shim.parent}:{tools}")
    assert proc.returncode == 1, proc
    for needle in ("/root/.pyenv/versions/3.11.7/bin/python3.11 is under /root", "ProtectHome=yes",
                   "203/EXEC", "apt install python3 python3-venv", "dnf install python3.11"):
        assert needle in proc.stderr, proc.stderr
    proc = which_python(visible, "--python", str(shim), path=str(tools))
    assert proc.returncode == 1 and "is under /root" in proc.stderr, proc.stderr
    in_tmp = fake_python(tmp_path / "bin/python3", "3.12")
    proc = which_python(visible, "--python", str(in_tmp), path=str(tools))
    assert proc.returncode == 1 and "under /tmp" in proc.stderr and "PrivateTmp=yes" in proc.stderr, proc


def test_install_needs_python_3_11(visible: Path) -> None:
    """RHEL 8/9's python3 is 3.6/3.9: without a python3.1x install.sh stops with what to
    install; --python is checked the same way."""
    old = fake_python(visible / "usr/bin/python3", "3.6")
    tools = tools_dir(visible)
    proc = which_python(visible, path=f"{old.parent}:{tools}")
    assert proc.returncode == 1, proc
    assert "needs Python >= 3.11, and python3 is 3.6" in proc.stderr
    assert "dnf install python3.11" in proc.stderr
    proc = which_python(visible, "--python", str(old), path=str(tools))
    assert proc.returncode == 1 and "is 3.6" in proc.stderr and ">= 3.11" in proc.stderr, proc


def test_install_names_the_missing_python3_venv(visible: Path) -> None:
    """Debian's python3 without the python3-venv package cannot make the venv: install.sh
    says which package to install instead of failing inside ``python3 -m venv``."""
    fake_python(visible / "usr/bin/python3", "3.11", venv=False)
    proc = which_python(visible, path=str(tools_dir(visible)))
    assert proc.returncode == 1 and "apt install python3-venv" in proc.stderr, proc


def test_root_staging_is_for_packaging_only(tmp_path: Path) -> None:
    """A venv built under --root would point at the staging path: --root needs --no-venv,
    and says so before writing anything."""
    proc = run_install(tmp_path)
    assert proc.returncode == 2 and "--no-venv" in proc.stderr, proc
    assert list(tmp_path.iterdir()) == []


def test_edited_units_are_kept_and_the_new_one_put_beside(tmp_path: Path) -> None:
    """Like dpkg's conffiles: a unit the admin edited survives a second run, the new one
    is written as UNIT.new and the output says so; an unedited unit (as recorded in the
    manifest) is replaced; the admin's own drop-ins are never touched."""
    install(tmp_path)
    units = tmp_path / "etc/systemd/system"
    edited = units / "postfix-certwatch-renew.timer"
    edited.write_text(edited.read_text().replace("RandomizedDelaySec=12h", "RandomizedDelaySec=1h"))
    mine = units / "postfix-certwatch.service.d/50-mine.conf"
    mine.write_text("[Service]\nEnvironment=TZ=UTC\n")
    # an older install.sh wrote a different service, unedited since (manifest matches)
    service = units / "postfix-certwatch.service"
    shipped = service.read_text()
    service.write_text(shipped + "# older version\n")
    manifest = tmp_path / "usr/local/share/postfix-certwatch/installed.sha256"
    digest = hashlib.sha256(service.read_bytes()).hexdigest()
    manifest.write_text(re.sub(r"^\w+(  /etc/systemd/system/postfix-certwatch.service)$",
                               rf"{digest}\1", manifest.read_text(), flags=re.M))
    out = install(tmp_path)
    assert "RandomizedDelaySec=1h" in edited.read_text()
    assert "RandomizedDelaySec=12h" in Path(f"{edited}.new").read_text()
    assert f"kept         {edited} (changed since install.sh wrote it" in out, out
    assert service.read_text() == shipped and not Path(f"{service}.new").exists()
    assert mine.read_text() == "[Service]\nEnvironment=TZ=UTC\n" and f"kept         {mine}" in out


def test_an_install_older_than_the_manifest_is_upgraded(tmp_path: Path) -> None:
    """An install made before install.sh kept a manifest: its units are replaced by the
    new ones (which may carry what the new version needs, AF_NETLINK for the alert mail
    say), each previous one kept as UNIT.old and named in the output; nothing is left as
    a stale unit with a .new beside it."""
    install(tmp_path)
    (tmp_path / "usr/local/share/postfix-certwatch/installed.sha256").unlink()
    service = tmp_path / "etc/systemd/system/postfix-certwatch.service"
    shipped = service.read_text()
    old = shipped.replace(" AF_NETLINK", "")
    service.write_text(old)
    out = install(tmp_path)
    assert service.read_text() == shipped and "AF_NETLINK" in shipped
    assert Path(f"{service}.old").read_text() == old
    assert not Path(f"{service}.new").exists()
    assert f"replaced     {service} (written by an install.sh older than its manifest)" in out


def test_uninstall_removes_exactly_what_install_put_there(tmp_path: Path) -> None:
    """--uninstall removes the units, the address drop-in, the command links, the hook
    symlink, the rules and the docs (as listed in install.sh's manifest), keeps the
    configuration, bundles, state and the admin's own drop-in and edited units; --purge
    then removes configuration and state too."""
    install(tmp_path)
    units = tmp_path / "etc/systemd/system"
    (units / "postfix-certwatch.service.d/50-mine.conf").write_text("[Service]\n")
    (units / "postfix-certwatch-renew.timer").write_text("[Timer]\n# mine now\n")
    bundles = tmp_path / "etc/postfix-certwatch/bundles"
    bundles.mkdir()
    (bundles / "mail.example.org.pem").write_text("key+chain")
    state = tmp_path / "var/lib/postfix-certwatch"
    state.mkdir(parents=True)
    (state / "daemon.json").write_text("{}")
    proc = run_install(tmp_path, "--uninstall")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for gone in ("etc/systemd/system/postfix-certwatch.service",
                 "etc/systemd/system/postfix-certwatch-renew.service",
                 "etc/systemd/system/postfix-certwatch.service.d/10-addresses.conf",
                 "etc/letsencrypt/renewal-hooks/deploy/postfix-certwatch",
                 "usr/local/bin/renew-check", "usr/local/share/postfix-certwatch",
                 "usr/local/share/doc/postfix-certwatch"):
        assert not (tmp_path / gone).exists() and not (tmp_path / gone).is_symlink(), gone
    for kept in ("etc/postfix-certwatch/config.toml", "etc/postfix-certwatch/bundles/mail.example.org.pem",
                 "var/lib/postfix-certwatch/daemon.json",
                 "etc/systemd/system/postfix-certwatch.service.d/50-mine.conf",
                 "etc/systemd/system/postfix-certwatch-renew.timer"):
        assert (tmp_path / kept).exists(), kept
    assert "edited since it was installed" in proc.stdout and "--purge" in proc.stdout
    assert VENV_BIN.is_dir()  # --no-venv: the venv was not install.sh's to remove
    # a link the admin pointed elsewhere since is theirs now: kept
    install(tmp_path)
    hook = tmp_path / "etc/letsencrypt/renewal-hooks/deploy/postfix-certwatch"
    hook.unlink()
    hook.symlink_to("/usr/local/sbin/my-own-hook")
    proc = run_install(tmp_path, "--uninstall")
    assert proc.returncode == 0 and hook.is_symlink(), proc.stdout + proc.stderr
    install(tmp_path)
    proc = run_install(tmp_path, "--uninstall", "--purge")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (tmp_path / "etc/postfix-certwatch").exists() and not state.exists()


def test_units_document_what_is_installed(tmp_path: Path) -> None:
    """Every file:// URL in the units' Documentation= exists after install."""
    install(tmp_path)
    for unit in (tmp_path / "etc/systemd/system").glob("postfix-certwatch*.service"):
        urls = re.findall(r"file://(\S+)", unit.read_text())
        assert urls, unit
        for url in urls:
            assert (tmp_path / url.lstrip("/")).is_file(), url


def test_install_again_keeps_the_admins_config(tmp_path: Path) -> None:
    """A second run replaces units and hook but never overwrites an edited config."""
    install(tmp_path)
    cfg = tmp_path / "etc/postfix-certwatch/config.toml"
    cfg.write_text('[alert]\nmail_to = ["postmaster@example.org"]\n')
    out = install(tmp_path)
    assert "kept" in out
    assert config.load(cfg, {}).alert.mail_to == ("postmaster@example.org",)
    assert (cfg.parent / "config.toml.example").is_file()


def test_commented_example_lists_every_key_with_its_default() -> None:
    """scripts/config.example.toml names every key of every section of hook/config.py,
    in its section, and uncommenting all of them gives exactly the defaults: the example
    cannot drift from the config module."""
    text = (REPO / "scripts" / "config.example.toml").read_text()
    active = "\n".join(re.sub(r"^# (\w+ = )", r"\1", line) for line in text.splitlines())
    active = "\n".join(line.split("  #")[0] if " = " in line else line
                       for line in active.splitlines())
    listed = tomllib.loads(active)
    cfg = config.parse(active.encode(), Path("example.toml"))
    assert dataclasses.replace(cfg, source=None) == config.Config()
    for section in dataclasses.fields(config.Config):
        if section.name == "source":
            continue
        keys = {f.name for f in dataclasses.fields(getattr(config.Config(), section.name))}
        assert set(listed.get(section.name, {})) == keys, section.name
