"""The layout's import rules, read from the source (ast): front ends use the core's faces
only, ``hook/`` never imports ``daemon/``, and each face's ``__all__`` is real and cheap."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FRONT_ENDS = ("hook/deploy_hook", "daemon/renew_check", "daemon/renew_daemon", "bench")
CORE = ("certs", "tls", "postfix", "dns")
FACES = (*CORE, "pipeline")
"""Subpackages of ``hook`` whose ``__init__`` is their public face."""
CHEAP_FACES = ("hook.certs", "hook.tls", "hook.postfix")
HEAVY = ("dns", "apscheduler", "structlog")
"""dnspython, the scheduler, the logging framework: not on the ``renew-check probe`` path."""


def modules(*roots: str) -> Iterator[Path]:
    for root in roots:
        yield from sorted((ROOT / root).rglob("*.py"))


def imports(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """``(line, module, name)`` for every import in the file, nested ones included
    (``name`` is None for ``import a.b``)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                yield node.lineno, node.module, alias.name


def face_all(face: str) -> list[str] | None:
    """The face's ``__all__`` as written (None when it has none yet)."""
    tree = ast.parse((ROOT / "hook" / face / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return [ast.literal_eval(e) for e in node.value.elts]  # type: ignore[attr-defined]
    return None


def is_submodule(face: str, name: str) -> bool:
    base = ROOT / "hook" / face / name
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def test_front_ends_import_no_private_name_from_hook() -> None:
    """A front end uses the core's public names only: no ``from hook... import _name``."""
    bad = [f"{where(p, n)} {mod}.{name}" for p in modules(*FRONT_ENDS)
           for n, mod, name in imports(p)
           if mod.split(".")[0] == "hook" and any(part.startswith("_") for part in
                                                  (*mod.split("."), name or ""))]
    assert bad == []


def test_front_ends_import_core_subpackages_through_their_faces() -> None:
    """``from hook.certs import fingerprint``, never ``hook.certs.bundle``: not as a module
    path, not as a name imported from the face, and only names the face lists."""
    bad = []
    for p in modules(*FRONT_ENDS):
        for n, mod, name in imports(p):
            parts = mod.split(".")
            if parts[0] != "hook" or len(parts) < 2 or parts[1] not in FACES:
                continue
            if len(parts) > 2:
                bad.append(f"{where(p, n)} {mod} (a submodule of hook.{parts[1]})")
            elif name is not None and is_submodule(parts[1], name):
                bad.append(f"{where(p, n)} {mod}.{name} (a submodule, not a public name)")
            elif name is not None and (listed := face_all(parts[1])) is not None and name not in listed:
                bad.append(f"{where(p, n)} {mod}.{name} (not in {mod}.__all__)")
    assert bad == []


def test_core_subpackages_import_each_other_through_faces() -> None:
    """Inside ``hook.certs`` siblings import each other directly; ``hook.tls`` asks
    ``hook.certs`` for its public names only (and so on for every core subpackage)."""
    bad = []
    for face in CORE:
        for p in modules(f"hook/{face}"):
            for n, mod, _ in imports(p):
                parts = mod.split(".")
                if parts[0] == "hook" and len(parts) > 2 and parts[1] in FACES and parts[1] != face:
                    bad.append(f"{where(p, n)} {mod}")
    assert bad == []


def test_hook_never_imports_daemon() -> None:
    """One direction of dependency: ``daemon/`` uses ``hook/``, never the other way."""
    bad = [f"{where(p, n)} {mod}" for p in modules("hook")
           for n, mod, _ in imports(p) if mod.split(".")[0] == "daemon"]
    assert bad == []


@pytest.mark.parametrize("face", FACES)
def test_every_name_a_face_exports_exists(face: str) -> None:
    """Each name in a face's ``__all__`` is there once the face is imported, and is not
    a submodule (a submodule of the same name would shadow a re-exported function)."""
    listed = face_all(face)
    if listed is None:
        assert face == "pipeline", f"hook.{face} has no __all__"
        pytest.skip("hook.pipeline's face is written with the split into stage modules")
    module = importlib.import_module(f"hook.{face}")
    assert listed == module.__all__
    missing = [n for n in listed if not hasattr(module, n)]
    modules_named = [n for n in listed if isinstance(getattr(module, n, None), types.ModuleType)]
    assert (missing, modules_named) == ([], [])
    assert len(set(listed)) == len(listed)


def test_the_probe_faces_stay_cheap() -> None:
    """Importing ``hook.tls``, ``hook.certs`` and ``hook.postfix`` (the ``renew-check
    probe`` path) loads neither dnspython nor the scheduler nor structlog."""
    code = ("import sys\n"
            f"import {', '.join(CHEAP_FACES)}\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
