"""Every ``triage`` command line in the README and docs names a real command, action and flags.

The walkthrough test runs the "bring your own model" commands; this one checks every other
mention, so a renamed flag cannot leave the docs behind.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from triage.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _command_lines() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        text = path.read_text().replace("\\\n", " ")
        spans = re.findall(r"`(triage [^`]+)`", text) + re.findall(r"^\s*(triage [^\n#]+)", text, flags=re.M)
        found += [(path.name, span.replace("\\|", "|").strip()) for span in spans]
    return found


def test_the_docs_mention_commands() -> None:
    assert len(_command_lines()) > 30


@pytest.mark.parametrize("where,line", _command_lines())
def test_documented_command_and_flags_exist(where: str, line: str) -> None:
    commands = _subparsers(build_parser())
    words = line.split()
    if words[1].startswith("-") or not re.match(r"^[a-z-]+$", words[1]):
        return  # `triage --help`, prose like `triage: ...`
    assert words[1] in commands, f"{where}: `{line}`: no command {words[1]!r}"
    parser = commands[words[1]]
    actions = _subparsers(parser)
    named = [w for w in words[2:] if w in actions]
    targets = [actions[a] for a in named] or [parser]
    for word in words[2:]:
        flag = re.match(r"^(--[a-z0-9-]+)", word)
        if flag is None:
            continue
        known = any(flag.group(1) in p._option_string_actions for p in targets)
        assert known, f"{where}: `{line}`: {flag.group(1)} is not a flag of `triage {words[1]} {' '.join(named)}`"
