"""The stop handlers: SIGTERM asks a triage process to finish its batch; a process that a library
forked from it (cleanlab's worker pool) must still die of SIGTERM, as pools end their workers."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Iterator

import pytest

from triage.commands.base import install_stop_handlers


@pytest.fixture
def handlers() -> Iterator[threading.Event]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    stop = threading.Event()
    try:
        install_stop_handlers(stop)
        yield stop
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def test_sigterm_sets_stop_in_the_process_itself(handlers: threading.Event) -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    assert handlers.wait(5)


def test_a_forked_child_dies_of_sigterm(handlers: threading.Event) -> None:
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only sleeps; the parent's handler must not keep it alive
        try:
            os.write(ready_w, b"1")  # running (a signal between fork and Python's after-fork reset is dropped)
            time.sleep(30)
        finally:
            os._exit(0)
    try:
        assert os.read(ready_r, 1) == b"1"
        os.kill(pid, signal.SIGTERM)
        deadline, status = time.monotonic() + 10, None
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.02)
        assert status is not None and done, "the forked child outlived SIGTERM"
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM, status
    finally:
        os.close(ready_r)
        os.close(ready_w)
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    assert not handlers.is_set(), "the child's signal reached the parent's stop"
