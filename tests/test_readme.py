"""README.md stays true: its two commands, its links, its command table, its length."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from mbr_bench.benchmark.cli import build_parser

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
MAX_LINES = 300
# The README's promise: one command sets up and runs the built-in default, one sets up and tests.
DEMO_COMMAND, TEST_COMMAND = "make demo", "make test"

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


@pytest.fixture(scope="module")
def text() -> str:
    return README.read_text(encoding="utf-8")


def fenced_blocks(markdown: str) -> list[str]:
    return FENCE.findall(markdown)


def command_lines(block: str) -> list[str]:
    """A fenced block's commands: its non-empty lines without trailing comments."""
    lines = []
    for line in block.splitlines():
        command = line.split("#", 1)[0].strip()
        if command:
            lines.append(command)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def command_table(markdown: str) -> list[str]:
    """The first cells of the table under '## Commands', without their backticks."""
    section = markdown.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    cells = []
    for line in section.splitlines():
        if line.startswith("| `"):
            cell = re.split(r"(?<!\\)\|", line)[1].strip()
            cells.append(cell.strip("`").replace("\\|", "|"))
    return cells


# -- the two commands ------------------------------------------------------------------------------


def test_exactly_the_two_commands_and_ci_runs_the_test_one(text):
    make_blocks = [command_lines(b) for b in fenced_blocks(text)
                   if any(c.startswith("make ") for c in command_lines(b))]
    assert make_blocks == [[DEMO_COMMAND, TEST_COMMAND]], (
        "README.md must hold one fenced block with exactly `make demo` and `make test`, and no other make command")
    two = text.split("\n## Two commands\n", 1)[1].split("\n## ", 1)[0]
    assert [command_lines(b) for b in fenced_blocks(two)] == [[DEMO_COMMAND, TEST_COMMAND]]
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    ci_commands = [line.strip() for line in ci.splitlines() if line.strip().startswith("make ")]
    assert ci_commands == [TEST_COMMAND], f".ci/run must call exactly {TEST_COMMAND!r}, found {ci_commands}"


def test_the_two_commands_are_make_targets_that_set_up_first():
    makefile = (REPO_ROOT / "Makefile").read_text()
    for command in (DEMO_COMMAND, TEST_COMMAND):
        target = command.split()[1]
        rule = re.search(rf"^{target}:(.*)$", makefile, re.M)
        assert rule, f"Makefile has no `{target}` target"
        assert "setup" in rule.group(1).split(), f"`make {target}` must depend on setup (a fresh machine)"


# -- links -----------------------------------------------------------------------------------------


def test_every_relative_link_points_to_an_existing_file(text):
    anchors = {slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}
    checked = 0
    for match in LINK.finditer(text):
        target = match.group(1) or match.group(2)
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        if not path:
            assert anchor in anchors, f"README.md links to #{anchor}, but no heading has that anchor"
            continue
        assert (REPO_ROOT / path).exists(), f"README.md links to {target}, which does not exist"
        checked += 1
    assert checked, "README.md should link to its docs/"


def test_docs_link_back_to_existing_files():
    for page in sorted((REPO_ROOT / "docs").glob("*.md")):
        for match in LINK.finditer(page.read_text(encoding="utf-8")):
            target = (match.group(1) or match.group(2)).partition("#")[0]
            if not target or re.match(r"[a-z][a-z0-9+.-]*:", target):
                continue
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


# -- the command table -----------------------------------------------------------------------------


def test_command_table_names_only_real_subcommands_and_options(text):
    commands = subparsers(build_parser())
    rows = command_table(text)
    assert len(rows) >= len(commands) - 1, "the command table lists (nearly) every subcommand"
    named = set()
    for row in rows:
        words = shlex.split(row.replace("[", " ").replace("]", " ").replace("|", " "))
        assert words[0] == "mbr-bench", row
        name = words[1]
        assert name in commands, f"README command table: `mbr-bench {name}` is not a subcommand"
        parser = commands[name]
        nested = subparsers(parser)
        if nested:
            assert words[2] in nested, f"README command table: `mbr-bench {name} {words[2]}` does not exist"
            parser = nested[words[2]]
        named.add(name)
        options = set(parser._option_string_actions)
        for option in re.findall(r"(?<![\w-])--[a-z][a-z-]*", row):
            assert option in options, f"README command table: `mbr-bench {name}` has no option {option}"
    assert named == set(commands), f"subcommands missing from the README's table: {sorted(set(commands) - named)}"


def test_readme_stays_short(text):
    lines = len(text.splitlines())
    assert lines < MAX_LINES, f"README.md has {lines} lines; move long material to docs/ (limit {MAX_LINES})"
