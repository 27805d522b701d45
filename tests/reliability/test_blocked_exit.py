"""Every loop takes ``--blocked-exit-s`` from its own command line (options after the action, as
written): each one, held by a fault of the world with the flag at 2 s while the environment
says the 240 s default, exits 1 naming itself, long before 240 s, having dead-lettered and
committed nothing. The faults come from tests/reliability/faulty_cli.py (the real command with
a refused topic, or a handler that fails with EIO where the loop's own code catches the
world's faults). The Label Studio bridge's test is with its others
(tests/integration/test_labelstudio_faults.py): a real outage of Label Studio blocks it."""

from __future__ import annotations

import os
import re
import select
import subprocess
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

from tests.fixtures import DEADLINE_S, produce, read_all
from tests.helpers import TriageProcess, settings_env
from tests.integration.test_annotate import Terminal
from tests.reliability.faulty_cli import PROGRAM as FAULTY
from tests.reliability.world import committed
from triage.lifecycle.registry import Registry
from triage.settings import BLOCKED_EXIT_S, Settings

EXIT_S = "2"
BLOCKED = re.compile(r"(\S+): blocked for (\d+) s \((\w+): ")
Faulty = Callable[..., TriageProcess]


@pytest.fixture
def faulty(tmp_path: Path) -> Iterator[Faulty]:
    """``faulty(fault, settings, *argv)``: ``triage ARGV`` with ``fault`` (faulty_cli)."""
    started: list[TriageProcess] = []

    def start(fault: str, settings: Settings, *argv: str) -> TriageProcess:
        p = TriageProcess(settings, list(argv), tmp_path, f"{argv[0]}-{len(started)}",
                          extra_env={"TRIAGE_TEST_FAULT": fault}, program=FAULTY)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def _exit(proc: subprocess.Popen[bytes], poke: Optional[Callable[[], None]] = None) -> Optional[int]:
    """The exit code once ``proc`` ends within DEADLINE_S (None if it does not), calling
    ``poke`` every second meanwhile."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if poke is not None:
            poke()
        try:
            return proc.wait(1.0)
        except subprocess.TimeoutExpired:
            continue
    return None


def _blocked(log: str) -> tuple[str, int, str]:
    """(loop, seconds, reason) of the BlockedError the process exited with."""
    found = BLOCKED.findall(log)
    assert found, f"no 'blocked for' in the log:\n{log[-3000:]}"
    loop, seconds, reason = found[-1]
    return loop, int(seconds), reason


def _check(code: Optional[int], log: str, loop: str, reason: str) -> None:
    assert code == 1, f"exit {code}; log:\n{log[-3000:]}"
    blocked = _blocked(log)
    print(f"{loop}: exit {code}, {blocked}")
    # the 2 s of the flag, not the 240 s the environment says (TRIAGE_BLOCKED_EXIT_S)
    assert blocked[0] == loop and blocked[2] == reason and blocked[1] < BLOCKED_EXIT_S, blocked


def test_the_model_watcher_takes_the_flag_of_serve(
    settings_factory: Callable[..., Settings], registry: Registry, faulty: Faulty,
) -> None:
    s = settings_factory()
    assert settings_env(s)["TRIAGE_BLOCKED_EXIT_S"] == str(BLOCKED_EXIT_S)
    proc = faulty("watcher", s, "serve", "--registry", str(registry.root), "--blocked-exit-s", EXIT_S)

    def event() -> None:  # the watcher reads from the end of the topic: say it until it hears
        produce(s, s.topics.models_topic, [(b"v1", b'{"version": "v1"}')])

    code = _exit(proc.proc, event)
    _check(code, proc.log(), "model-watcher", "io")
    assert "stopped because a helper thread failed for good" in proc.log()


def test_the_backlog_watcher_takes_the_flag_of_serve(
    settings_factory: Callable[..., Settings], example_model: tuple[Path, Path], faulty: Faulty,
) -> None:
    model, ref = example_model
    s = settings_factory(model=str(model), reference=str(ref))
    produce(s, s.topics.review_topic, [(b"r1", b"{}")])
    proc = faulty("backlog", s, "serve", "--annotation-capacity", "10", "--blocked-exit-s", EXIT_S)
    _check(_exit(proc.proc), proc.log(), "backlog", "io")


def test_the_annotator_console_takes_the_flag_of_annotate(settings_factory: Callable[..., Settings]) -> None:
    """A request that is not one goes to the DLQ, which refuses writes (authorization): the
    console holds it, then exits."""
    s = settings_factory()
    group = f"annotators-{uuid.uuid4().hex[:6]}"
    produce(s, s.topics.review_topic, [(b"bad", b"{not json")])
    env = {**os.environ, **settings_env(s), "TRIAGE_TEST_FAULT": f"refuse:{s.topics.dlq_topic}"}
    term = Terminal([*FAULTY, "annotate", "--classes", ",".join(map(str, range(10))), "--annotator-group", group,
                     "--blocked-exit-s", EXIT_S], env)
    screen: list[bytes] = []

    def read_screen() -> None:
        while select.select([term.master], [], [], 0)[0]:
            try:
                screen.append(os.read(term.master, 65536))
            except OSError:  # the console exited and closed its end
                return

    try:
        code = _exit(term.proc, read_screen)
        read_screen()
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
        os.close(term.master)
    _check(code, b"".join(screen).decode(errors="replace"), "annotator", "refused")
    assert read_all(s, [s.topics.dlq_topic], expect=1, timeout_s=3) == []
    assert committed(s, group, s.topics.review_topic) == 0
