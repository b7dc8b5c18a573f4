"""Every `python -m search COMMAND --flag ...` the README and docs/ show is a real command with real
flags: the commands in their code blocks and inline code are checked against the parser."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CALL = re.compile(r"python -m search ([a-z][a-z-]*)((?:[^`\n]|\\\n)*)")


def subcommands() -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def calls(page: Path) -> list[tuple[int, str, list[str]]]:
    """(line, command, its --flags) of every `python -m search ...` on the page."""
    text = page.read_text(encoding="utf-8").replace("\\\n", " ")
    found = []
    for match in CALL.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        rest = match.group(2).split("#")[0].split("|")[0]
        try:
            tokens = shlex.split(rest)
        except ValueError:  # an unbalanced quote in prose: take the words
            tokens = rest.split()
        found.append((line, match.group(1), [t.split("=")[0] for t in tokens if t.startswith("--")]))
    return found


def test_the_pages_show_commands_at_all():
    assert sum(len(calls(page)) for page in PAGES) > 40


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_command_and_flag_the_docs_name_exists(page):
    commands = subcommands()
    wrong = []
    for line, command, flags in calls(page):
        if command not in commands:
            wrong.append(f"{page.name}:{line}: no command {command!r}")
            continue
        known = commands[command]._option_string_actions
        wrong += [f"{page.name}:{line}: {command} has no {flag}" for flag in flags if flag not in known]
    assert not wrong, "\n".join(wrong)
