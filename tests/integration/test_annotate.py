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


SCREEN_END = "labelled this session"  # the last line of a request's screen (the no-pool notice aside)


class Terminal:
    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=REPO, close_fds=True)
        os.close(slave)
        self.screen = ""

    def expect(self, *texts: str) -> str:
        """The screen (since the last clear) once it shows every one of ``texts``. A screen may
        reach the pty in pieces, so a test waits for the line it asserts on, or for the last line."""
        def shown() -> Optional[str]:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                self.screen += os.read(self.master, 65536).decode(errors="replace")
            last = self.screen.rsplit("\x1b[2J", 1)[-1]
            return last if all(text in last for text in texts) else None

        exited = lambda: None if self.proc.poll() is None else f"the console exited with {self.proc.returncode}"  # noqa: E731
        try:
            return wait_until(shown, f"{' and '.join(map(repr, texts))} on the console", every_s=0, alive=exited)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nlast screen:\n{self.screen[-2000:]}") from None

    def press(self, key: str) -> None:
        os.write(self.master, key.encode())


def pool_consoles(s: Settings, pool: list[str]) -> dict[str, Terminal]:
    """One `triage annotate --pool` console per annotator, in a fresh annotator group."""
    import uuid

    env = {**os.environ, **settings_env(s)}
    group = f"annotators-{uuid.uuid4().hex[:8]}"
    return {name: Terminal([sys.executable, "-m", "triage", "annotate", "--classes", ",".join(map(str, range(10))),
                            "--annotator", name, "--pool", ",".join(pool), "--annotator-group", group], env)
            for name in pool}


def answer_in_consoles(terms: dict[str, Terminal], answers: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Each console must show exactly its requests, in order (rid -> key pressed), then quit
    cleanly; returns the screens shown, by annotator and request."""
    screens: dict[str, dict[str, str]] = {}
    try:
        for name, term in terms.items():
            screens[name] = {}
            for rid, key in answers[name].items():
                screens[name][rid] = term.expect(f"sample {rid} ", SCREEN_END)
                term.press(key)
            term.expect("waiting for review requests")
            term.press("q")
            assert term.proc.wait(30) == 0
    finally:
        for term in terms.values():
            if term.proc.poll() is None:
                term.proc.kill()
    return screens


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
        screen = term.expect("sample r-high", SCREEN_END)
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


def _request(rid: str, features: list[float], priority: float, annotators: int = 1,
             labelled_by: Optional[list[str]] = None, reason: str = "uncertain") -> tuple[bytes, bytes]:
    return rid.encode(), encode(ReviewRequest(
        rid, features, reason, "3", 0.4, ScoreFields(0.05, 0.6, None), priority, "v1", None,
        [TopClass("3", 0.4), TopClass("8", 0.35)], annotators, labelled_by or []))


def test_a_pool_of_consoles_gives_each_request_the_annotators_it_asks_for(
        settings_factory: Callable[..., Settings]) -> None:

    from triage.annotation.routing import assignees

    s = settings_factory()
    X, _ = load_digits(return_X_y=True)
    pool = ["alice", "bob"]
    # one-annotator requests that rendezvous hashing gives to alice and to bob
    singles = {name: next(f"one-{i}" for i in range(100) if assignees(f"one-{i}", pool, 1, []) == [name])
               for name in pool}
    produce(s, s.topics.review_topic, [
        _request("pair", X[0].tolist(), 0.9, annotators=2),
        _request("tie", X[1].tolist(), 0.8, annotators=2, labelled_by=["alice"], reason="tiebreak"),
        _request(singles["alice"], X[2].tolist(), 0.5),
        _request(singles["bob"], X[3].tolist(), 0.4),
        _request("pair", X[0].tolist(), 0.9, annotators=2),  # redelivered: shown once
    ])
    shows = {"alice": ["pair", singles["alice"]], "bob": ["pair", "tie", singles["bob"]]}
    keys = {"alice": "1", "bob": "2"}
    screens = answer_in_consoles(pool_consoles(s, pool), {name: {rid: keys[name] for rid in shows[name]}
                                                           for name in pool})
    assert "why: tiebreak" in screens["bob"]["tie"]
    out = read_all(s, [s.topics.labels_topic], expect=5)
    got = sorted((e["id"], e["annotator"], e["label"]) for e in (json.loads(r["value"]) for r in out))
    assert got == sorted([("pair", "alice", "1"), ("pair", "bob", "2"), ("tie", "bob", "2"),
                          (singles["alice"], "alice", "1"), (singles["bob"], "bob", "2")])


def test_without_a_pool_a_request_for_two_is_shown_once_and_counted_and_a_sample_never_twice(settings_factory: Callable[..., Settings]) -> None:
    s = settings_factory()
    X, _ = load_digits(return_X_y=True)
    produce(s, s.topics.review_topic, [
        _request("pair", X[0].tolist(), 0.9, annotators=2),
        _request("done", X[1].tolist(), 0.8, annotators=2, labelled_by=["alice"]),
        # another request for the same sample, queued with the first: alice labels "pair" once
        _request("pair", X[0].tolist(), 0.5, annotators=3, labelled_by=["bob"], reason="tiebreak")])
    env = {**os.environ, **settings_env(s)}
    term = Terminal([sys.executable, "-m", "triage", "annotate", "--classes", ",".join(map(str, range(10))),
                     "--annotator", "alice"], env)
    try:
        # the notice is the screen's last line
        screen = term.expect("sample pair ", "to honour them")
        assert "requests asked for more than one annotator: start every console with --pool" in screen
        term.press("4")
        term.expect("waiting for review requests")  # "done" was labelled by alice already: never shown
        term.press("q")
        assert term.proc.wait(30) == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
    events = [json.loads(r["value"]) for r in read_all(s, [s.topics.labels_topic], expect=1)]
    assert [(e["id"], e["annotator"]) for e in events] == [("pair", "alice")]
