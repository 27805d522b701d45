"""The annotator console driven through a pseudo-terminal against the real broker."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from typing import Callable

import numpy as np
import pytest
from sklearn.datasets import load_digits

from tests.fixtures import DEADLINE_S, REPO, _env, produce, read_all
from triage.contracts import ReviewRequest, ScoreFields, TopClass, encode
from triage.settings import Settings


class Terminal:
    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=REPO, close_fds=True)
        os.close(slave)
        self.screen = ""

    def expect(self, text: str) -> str:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.screen += os.read(self.master, 65536).decode(errors="replace")
                except OSError:
                    break
                last = self.screen.rsplit("\x1b[2J", 1)[-1]
                if text in last:
                    return last
            if self.proc.poll() is not None:
                break
        raise AssertionError(f"never saw {text!r}; last screen:\n{self.screen[-2000:]}")

    def press(self, key: str) -> None:
        os.write(self.master, key.encode())


def test_console_serves_by_priority_and_publishes_labels(settings_factory: Callable[..., Settings]) -> None:
    s = settings_factory()
    X, _ = load_digits(return_X_y=True)
    requests = {"r-low": 0.2, "r-high": 0.9, "r-mid": 0.5}
    produce(s, s.topics.review_topic, [
        (rid.encode(), encode(ReviewRequest(rid, X[i].tolist(), "uncertain", "3", 0.4, ScoreFields(0.05, 0.6, None),
                                            prio, "v1", None, [TopClass("3", 0.4), TopClass("8", 0.35)])))
        for i, (rid, prio) in enumerate(requests.items())])
    env = {**os.environ, **_env(s)}
    term = Terminal([sys.executable, "-m", "triage", "annotate", "--classes", ",".join(map(str, range(10))),
                     "--annotator", "alice"], env)
    try:
        screen = term.expect("sample r-high")
        assert "why: uncertain" in screen and "3 40%" in screen and "█" in screen
        term.press("7")
        term.expect("sample r-mid")
        term.press("e")  # edge case
        term.expect("sample r-low")
        term.press("u")  # undo the edge case: r-mid comes back first
        term.expect("sample r-mid")
        term.press("3")
        term.expect("sample r-low")
        term.press("s")  # skip
        term.expect("waiting for review requests")
        term.press("q")
        assert term.proc.wait(30) == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
    out = read_all(s, [s.topics.labels_topic], expect=4)
    events = sorted((json.loads(r["value"]) for r in out), key=lambda e: e["ts"])
    assert [(e["id"], e["label"]) for e in events] == [
        ("r-high", "7"), ("r-mid", "__edge_case__"), ("r-mid", "__undo__"), ("r-mid", "3")]
    assert {e["annotator"] for e in events} == {"alice"}
    assert all(len(e["features"]) == 64 for e in events)
