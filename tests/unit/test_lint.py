"""Lint in the fast tier: ``ruff check`` (pyproject.toml's [tool.ruff]: syntax errors and pyflakes)
over the code and the tests. The ruff binary comes with the ``test`` extra; it takes well under a
second here."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PATHS = ("triage", "consumers", "tests", "bench", "scripts")


def _ruff() -> str:
    # Next to this interpreter first (the venv's bin/), then PATH.
    here = Path(sys.executable).parent / "ruff"
    found = str(here) if here.exists() else shutil.which("ruff")
    assert found, "ruff is not installed: it is in the test extra (./scripts/setup.sh test)"
    return found


def test_ruff_check_finds_nothing() -> None:
    result = subprocess.run([_ruff(), "check", "--no-cache", "--output-format", "concise", *PATHS],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    if result.returncode:
        pytest.fail(f"ruff check found problems (`ruff check --fix` fixes the [*] ones):\n"
                    f"{result.stdout}{result.stderr}", pytrace=False)
