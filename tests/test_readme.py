"""The README against the code: configuration keys and defaults, exit codes, commands and
their options, size, and links into docs/.

No Postfix, no network: it reads README.md, docs/*.md, pyproject.toml, the typed
configuration (:mod:`hook.config`), the exit-code tables (:mod:`hook.exits`) and the
argparse parsers of the console scripts.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import re
import tomllib
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from hook import config as config_mod
from hook.exits import PROGRAMS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_BYTES = 15_000

def readme() -> str:
    return README.read_text(encoding="utf-8")


def section(text: str, heading: str) -> str:
    """The body of the markdown section titled ``heading`` (any level), up to the next
    heading of the same or a higher level."""
    match = re.search(rf"^(#+) {re.escape(heading)}\s*$", text, re.M)
    assert match, f"README has no section {heading!r}"
    level = len(match.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.M).search(text, match.end())
    return text[match.end():end.start() if end else len(text)]


def table_rows(text: str) -> list[list[str]]:
    """The cells of every markdown table row in ``text``, header and rule rows dropped."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if all(re.fullmatch(r":?-+:?", c) for c in cells):
            continue
        rows.append(cells)
    return rows[1:] if rows else rows  # the first row is the header


def code_spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


# -- configuration ------------------------------------------------------------------


def config_defaults() -> dict[str, Any]:
    """Every ``section.key`` of the typed configuration, with its default as TOML
    would spell it (paths as strings, None as "", tuples as lists, enums as values)."""
    keys: dict[str, Any] = {}
    root = config_mod.Config()
    for sec in dataclasses.fields(config_mod.Config):
        if sec.name == "source":
            continue
        obj = getattr(root, sec.name)
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if value is None:
                value = ""
            elif isinstance(value, Enum):
                value = value.value
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            keys[f"{sec.name}.{f.name}"] = value
    return keys


def documented_config() -> dict[str, str]:
    """README configuration table: key -> the default cell."""
    rows = table_rows(section(readme(), "Configuration"))
    out = {}
    for cells in rows:
        spans = code_spans(cells[0])
        assert spans, f"configuration row without a `key`: {cells}"
        assert spans[0] not in out, f"{spans[0]} is documented twice"
        out[spans[0]] = cells[1]
    return out


def test_every_config_key_is_documented_and_every_documented_key_exists() -> None:
    code, doc = set(config_defaults()), set(documented_config())
    assert not code - doc, f"config keys missing from the README's table: {sorted(code - doc)}"
    assert not doc - code, f"README documents keys that do not exist: {sorted(doc - code)}"


def test_documented_defaults_match_the_code() -> None:
    """The first `literal` of the default cell, read as a TOML value, is the default."""
    defaults = config_defaults()
    wrong = []
    for key, cell in documented_config().items():
        if key not in defaults:
            continue  # reported by the test above
        spans = code_spans(cell)
        assert spans, f"{key}: the default cell has no `literal`: {cell!r}"
        try:
            value = tomllib.loads(f"v = {spans[0]}")["v"]
        except tomllib.TOMLDecodeError:
            wrong.append(f"{key}: default `{spans[0]}` is not a TOML value")
            continue
        want = defaults[key]
        same = (value == want if not isinstance(want, float) or isinstance(value, bool)
                else isinstance(value, int | float) and abs(value - want) < 1e-9)
        if not same or isinstance(value, bool) != isinstance(want, bool):
            wrong.append(f"{key}: README says {spans[0]}, the code {want!r}")
    assert not wrong, "\n".join(wrong)


# -- exit codes ---------------------------------------------------------------------


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_exit_code_table_matches_hook_exits(program: str) -> None:
    body = section(section(readme(), "Exit codes"), f"`{program}`")
    rows = table_rows(body)
    documented = set()
    for cells in rows:
        assert cells[0].isdigit(), f"{program}: exit-code row does not start with a code: {cells}"
        names = code_spans(cells[1])
        assert names, f"{program}: row {cells[0]} names no member"
        assert cells[2], f"{program}: code {cells[0]} has no meaning"
        documented.add((int(cells[0]), names[0]))
    actual = {(int(m), m.name) for m in PROGRAMS[program]}
    assert not actual - documented, f"{program}: missing or misnumbered: {sorted(actual - documented)}"
    assert not documented - actual, f"{program}: not in hook/exits.py: {sorted(documented - actual)}"


def test_every_exit_code_has_a_meaning() -> None:
    for program, codes in PROGRAMS.items():
        for member in codes:
            assert member.meaning, f"{program}: {member.name} has no meaning"


# -- commands -----------------------------------------------------------------------


def console_scripts() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    scripts: dict[str, str] = data["project"]["scripts"]
    return scripts


def parser_of(entry_point: str) -> argparse.ArgumentParser:
    module = importlib.import_module(entry_point.partition(":")[0])
    parser: argparse.ArgumentParser = module.build_parser()
    return parser


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings
            if s.startswith("--") and s != "--help"}


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def actual_commands() -> dict[str, set[str]]:
    """"program" and "program sub" -> their long options, from the parsers."""
    out = {}
    for script, entry in console_scripts().items():
        parser = parser_of(entry)
        out[script] = options(parser)
        for name, sub in subparsers(parser).items():
            out[f"{script} {name}"] = options(sub)
    return out


def documented_commands() -> dict[str, set[str]]:
    out = {}
    for cells in table_rows(section(readme(), "Commands")):
        spans = code_spans(cells[0])
        assert spans, f"command row without a `command`: {cells}"
        out[spans[0]] = set(re.findall(r"--[a-z][a-z-]*", cells[1]))
    return out


def test_console_scripts_match_the_parsers() -> None:
    """Each console script's entry point has a ``build_parser`` whose prog is its name."""
    for script, entry in console_scripts().items():
        assert parser_of(entry).prog == script


def test_every_command_and_option_is_documented_and_exists() -> None:
    actual, documented = actual_commands(), documented_commands()
    assert not set(actual) - set(documented), \
        f"commands missing from the README: {sorted(set(actual) - set(documented))}"
    assert not set(documented) - set(actual), \
        f"README documents commands that do not exist: {sorted(set(documented) - set(actual))}"
    for command, opts in actual.items():
        assert opts == documented[command], (
            f"{command}: options missing from the README: {sorted(opts - documented[command])}; "
            f"documented but gone: {sorted(documented[command] - opts)}")


def test_subcommands_mentioned_anywhere_exist() -> None:
    """`renew-check WORD` in any code span or block of the README names a real subcommand."""
    subs = {c.split()[1] for c in actual_commands() if " " in c}
    text = readme()
    code = "\n".join(re.findall(r"```.*?```", text, re.S) + re.findall(r"`[^`\n]+`", text))
    for script in console_scripts():
        for word in re.findall(rf"(?<![\w/-]){re.escape(script)} ([a-z][a-z-]*)", code):
            assert word in subs, f"README mentions '{script} {word}', which is no subcommand"


# -- size and links -----------------------------------------------------------------


def test_readme_is_at_most_15_kb() -> None:
    size = len(README.read_bytes())
    assert size <= MAX_BYTES, f"README.md is {size} bytes; keep it <= {MAX_BYTES} (move detail to docs/)"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _links() -> list[tuple[str, str, str]]:
    """(page, target file relative to the project, anchor) for every relative .md link
    of the README and the manual."""
    found = []
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            path, _, anchor = target.partition("#")
            if "://" in path or not path.endswith(".md"):
                continue
            resolved = (page.parent / path).resolve().relative_to(ROOT).as_posix()
            found.append((page.relative_to(ROOT).as_posix(), resolved, anchor))
    return found


def test_readme_links_the_manual() -> None:
    targets = {t for page, t, _ in _links() if page == "README.md"}
    expected = {"docs/README.md", "docs/install.md", "docs/deploy-hook.md", "docs/renew-check.md",
                "docs/daemon.md", "docs/dns.md", "docs/testing.md", "docs/benchmarks.md"}
    assert expected <= targets, f"README does not link {sorted(expected - targets)}"


def test_links_point_to_existing_pages_and_headings() -> None:
    broken: list[str] = []
    for page, target, anchor in _links():
        path = ROOT / target
        if not path.is_file():
            broken.append(f"{page} -> {target}")
            continue
        if anchor:
            headings = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.M)
            if anchor not in {_slug(h) for h in headings}:
                broken.append(f"{page} -> {target}#{anchor}: no such heading")
    assert not broken, "broken links:\n" + "\n".join(broken)
