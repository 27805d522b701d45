"""The README's "bring your own model" walkthrough, run as written.

The shell blocks between ``<!-- walkthrough -->`` and ``<!-- /walkthrough -->`` are run in
one bash script, in a scratch directory that holds only links to the repository's ``.venv``
and ``examples``, with a clean environment: the commands a new user copies must work.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from tests.fixtures import REPO


def walkthrough_script(readme: str) -> str:
    section = readme.split("<!-- walkthrough -->", 1)[1].split("<!-- /walkthrough -->", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    assert blocks, "the README walkthrough has no ```sh blocks"
    return "\n".join(blocks)


def _outputs(stdout: str) -> list[tuple[str, dict]]:
    """The (topic, record) pairs ``examples/send_sample.py`` printed."""
    found = []
    for match in re.finditer(r"^(triage\.\w+): (\{.*\})$", stdout, flags=re.M):
        found.append((match.group(1), json.loads(match.group(2))))
    return found


def test_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 9092)) == 0:
            pytest.fail("port 9092 is in use: the walkthrough starts `triage broker` on its default port")
    for name in (".venv", "examples"):
        (tmp_path / name).symlink_to(REPO / name)
    script = walkthrough_script((REPO / "README.md").read_text())
    # Background jobs (broker, scorer) end with the script, whatever happens.
    wrapped = "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n" + script
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    done = subprocess.run(["bash", "-c", wrapped], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=420)
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-5000:]}"
    outputs = _outputs(done.stdout)
    samples = {s["id"]: s for s in (json.loads(p.read_text()) for p in (REPO / "examples").glob("sample*.json"))}
    assert [(topic, record["model_version"]) for topic, record in outputs] == [
        ("triage.predictions", "v1"), ("triage.review", "v1"), ("triage.predictions", "v2")], done.stdout[-3000:]
    for _, record in outputs:
        truth = str(samples[record["id"]]["meta"]["true_digit"])
        assert (record.get("label") or record.get("predicted")) == truth
    assert "rdkafka" not in done.stderr and "Traceback" not in done.stderr, done.stderr[-3000:]
