"""The annotator console driven through a pseudo-terminal against the real broker."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
from typing import Callable, Optional

from sklearn.datasets import load_digits

from tests.fixtures import produce, read_all
from tests.helpers import REPO, settings_env, wait_until
from triage.contracts import ReviewRequest, ScoreFields, TopClass, encode
from triage.settings import Settings


class Terminal:
    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=REPO, close_fds=True)
        os.close(slave)
        self.screen = ""

    def expect(self, text: str) -> str:
        """The screen (since the last clear) once it shows ``text``."""
        def shown() -> Optional[str]:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                self.screen += os.read(self.master, 65536).decode(errors="replace")
            last = self.screen.rsplit("\x1b[2J", 1)[-1]
            return last if text in last else None

        exited = lambda: None if self.proc.poll() is None else f"the console exited with {self.proc.returncode}"  # noqa: E731
        try:
            return wait_until(shown, f"{text!r} on the console", every_s=0, alive=exited)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nlast screen:\n{self.screen[-2000:]}") from None

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
    env = {**os.environ, **settings_env(s)}
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
