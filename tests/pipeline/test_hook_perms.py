"""Permission fixing stays inside the lineage, and lineage paths cannot be redirected."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hook.certs import perms
from hook.certs.lineage import Lineage, resolve
from hook.errors import BundleError, LineageError
from hook.postfix.tls_files import sni_entries


def _lineage(tmp_path: Path) -> Lineage:
    lin = Lineage(tmp_path / "le", "mail.example.test")
    lin.archive.mkdir(parents=True)
    lin.live.mkdir(parents=True)
    for kind in ("cert", "chain", "fullchain", "privkey"):
        (lin.archive / f"{kind}1.pem").write_text(kind)
        (lin.live / f"{kind}.pem").symlink_to(f"../../archive/{lin.name}/{kind}1.pem")
    return lin


def test_fixes_keys_and_dirs_but_never_follows_a_planted_symlink(tmp_path: Path) -> None:
    """A world-readable key and a group-writable directory are fixed with fchmod; a
    privkey symlink planted in archive/ pointing outside is neither reported nor touched."""
    lin = _lineage(tmp_path)
    outside = tmp_path / "shadow"
    outside.write_text("secret")
    outside.chmod(0o644)
    (lin.archive / "privkey9.pem").symlink_to(outside)
    (lin.archive / "privkey1.pem").chmod(0o644)
    lin.live.chmod(0o775)
    fixes = perms.inspect(lin)
    assert {f.path for f in fixes} == {lin.archive / "privkey1.pem", lin.live}
    exposed = perms.current_key_exposure(lin, fixes)
    assert exposed is not None and exposed.mode == 0o644 and exposed.want == 0o600
    perms.apply(lin, fixes)
    assert stat.S_IMODE((lin.archive / "privkey1.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE(lin.live.stat().st_mode) == 0o755
    assert stat.S_IMODE(outside.stat().st_mode) == 0o644
    assert perms.inspect(lin) == ()


def test_group_option_gives_0640_and_the_group(tmp_path: Path) -> None:
    """With a configured group the key becomes 0640 root:GROUP."""
    lin = _lineage(tmp_path)
    (lin.archive / "privkey1.pem").chmod(0o600)
    fixes = perms.inspect(lin, gid=5)
    perms.apply(lin, fixes)
    st = (lin.archive / "privkey1.pem").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o640, 5)


def test_symlinked_lineage_directories_are_refused(tmp_path: Path) -> None:
    """archive/NAME as a symlink elsewhere is refused for reading and for chmod, and
    --lineage must be a real directory right under live/."""
    lin = _lineage(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    lin.archive.rename(elsewhere)
    lin.archive.symlink_to(elsewhere)
    with pytest.raises(BundleError, match="lineage directory is a symlink"):
        lin.read(lin.privkey)
    with pytest.raises(BundleError, match="without following symlinks"):
        perms.inspect(lin)
    with pytest.raises(LineageError, match="not a lineage directory under"):
        resolve(tmp_path / "le" / "archive" / lin.name, lin.config_dir)
    with pytest.raises(LineageError, match="not a lineage directory under"):
        resolve(lin.live / "..", lin.config_dir)
    os.symlink(lin.live, tmp_path / "le" / "live" / "alias")
    with pytest.raises(LineageError, match="not a directory"):
        resolve(tmp_path / "le" / "live" / "alias", lin.config_dir)


def test_sni_source_parser_handles_continuations_and_comments() -> None:
    """postmap source syntax: comments, indented continuation lines, keys lower-cased."""
    text = ("# comment\nMail.Example.test /k.pem\n   /c.pem\n\n  # indented comment\n"
            "other.test /a.pem, /b.pem\n")
    assert sni_entries(text) == [("mail.example.test", ["/k.pem", "/c.pem"]),
                                 ("other.test", ["/a.pem", "/b.pem"])]
