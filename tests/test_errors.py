"""The exception tree drawn in :mod:`hook.errors` is the one in the code: every class
deriving from ``BaseException`` defined under ``hook/`` or ``daemon/`` is drawn, under
its real base, in its real module, and nothing drawn is gone."""

from __future__ import annotations

import builtins
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import daemon
import hook
from hook import errors

ROW = re.compile(r"(?P<name>[A-Za-z_]\w*)(?:\s+\[(?P<module>[\w.]+)\])?")


def defined() -> dict[str, type[BaseException]]:
    """Every exception class defined at module level in hook/ and daemon/."""
    found: dict[str, type[BaseException]] = {}
    for package in (hook, daemon):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            module = importlib.import_module(info.name)
            for name, obj in vars(module).items():
                if inspect.isclass(obj) and issubclass(obj, BaseException) and \
                        obj.__module__ == module.__name__:
                    assert name not in found, f"two exception classes named {name}"
                    found[name] = obj
    return found


def drawn() -> dict[str, tuple[str, str | None]]:
    """``name -> (parent, module)`` from the drawing in hook/errors.py's docstring."""
    doc = errors.__doc__ or ""
    block = doc.split("::\n", 1)[1].strip("\n").split("\n\n", 1)[0]
    tree: dict[str, tuple[str, str | None]] = {}
    stack: list[tuple[int, str]] = []
    for line in block.splitlines():
        row = ROW.search(line)
        assert row, line
        depth = (row.start() - 4) // 4  # "    " then four columns per level
        while stack and stack[-1][0] >= depth:
            stack.pop()
        tree[row["name"]] = (stack[-1][1] if stack else "", row["module"])
        stack.append((depth, row["name"]))
    return tree


def test_every_exception_class_is_drawn_and_every_drawn_one_exists() -> None:
    """Add an exception class anywhere, or remove one: this fails until hook/errors.py's
    drawing says so."""
    classes = defined()
    roots = {n for n, (parent, _) in drawn().items() if not parent}
    assert set(drawn()) - roots == set(classes)
    assert all(isinstance(getattr(builtins, r, None), type) for r in roots)


def test_the_drawing_shows_each_class_under_its_base_and_in_its_module() -> None:
    """The tree's shape is the inheritance; ``[module]`` is where the class lives (the
    classes of hook/errors.py go without)."""
    classes = defined()
    for name, (parent, module) in drawn().items():
        if name not in classes:
            continue
        cls = classes[name]
        assert [b.__name__ for b in cls.__bases__] == [parent], name
        assert cls.__module__ == (module or "hook.errors"), name


def test_the_drawing_lives_where_it_says() -> None:
    """The tree is in the module docstring of hook/errors.py, the one place to look."""
    assert Path(errors.__file__).name == "errors.py"
    assert "Exception\n    ├── Error" in (errors.__doc__ or "")
