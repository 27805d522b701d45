"""Offsets are committed only after every output of the records they cover is acknowledged
(docs/architecture.md, the guarded loop). Attacked on the annotator console, which commits per
request rather than per batch: it is SIGKILLed while the dead letters of invalid review requests
wait for an acknowledgement that never comes (tests/reliability/never_acked_console.py). Its
group must not have committed past them, and the console that takes over dead-letters each of
them exactly once: no record is lost."""

from __future__ import annotations

import io
import os
import select
import signal
import subprocess
import sys
import uuid
from typing import Callable

from consumers.annotator import Console
from tests.fuzz.kit import Feeder, In, Offsets, Tail
from tests.helpers import REPO, settings_env, wait_until
from triage.contracts import ReviewRequest, ScoreFields, TopClass, encode
from triage.settings import Settings

KEY = b"one-partition"  # every record on one partition, in this order


def review(rid: str, priority: float) -> bytes:
    return encode(ReviewRequest(rid, [0.0] * 64, "uncertain", "3", 0.4, ScoreFields(0.1, 0.5, None), priority, "v1",
                                None, [TopClass("3", 0.4)]))


def test_console_killed_before_its_dead_letters_are_acked_loses_no_record(
    settings_factory: Callable[..., Settings],
) -> None:
    s = settings_factory()
    group = f"annotators-{uuid.uuid4().hex[:8]}"
    # invalid, valid, a duplicate of it, invalid: the old console committed past offset 0 at once
    feeder = Feeder(s)
    sent = feeder.send(s.topics.review_topic, [In(KEY, b"not json"), In(KEY, review("a", 0.5)),
                                               In(KEY, review("a", 0.5)), In(KEY, b'{"id": 7}')])
    feeder.close()
    partition = sent[0].partition
    assert [r.pos for r in sent] == [(partition, o) for o in range(4)]
    child = subprocess.Popen([sys.executable, "-m", "tests.reliability.never_acked_console", group],
                             env={**os.environ, **settings_env(s)}, cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
    seen = b""
    try:
        def in_window() -> bool:
            nonlocal seen
            if select.select([child.stdout], [], [], 0.2)[0]:
                seen += os.read(child.stdout.fileno(), 65536)  # type: ignore[union-attr]
            return b"WINDOW" in seen

        wait_until(in_window, "the console to wait for its dead letters' acknowledgement",
                   alive=lambda: None if child.poll() is None else seen.decode(errors="replace"))
        child.send_signal(signal.SIGKILL)  # mid-operation: the dead letters are sent, not acknowledged
        assert child.wait(30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)

    offsets, dlq = Offsets(s, group), Tail(s, [s.topics.dlq_topic])
    try:
        assert offsets.committed(s.topics.review_topic)[partition] == 0, \
            "the killed console committed review requests whose dead letters were never acknowledged"
        assert dlq.read() == [], "a dead letter reached the DLQ although the test acknowledged none"
        # The console that takes over (once the group drops the killed member) re-reads everything.
        console = Console(s, [str(c) for c in range(10)], "next", group_id=group, stdin=io.StringIO(),
                          stdout=io.StringIO())
        consumed = console.loop.metrics.records.labels(loop="annotator")
        try:
            wait_until(lambda: (console.fetch(), consumed._value.get() >= 4)[1],
                       "the next console to read the four review requests")
        finally:
            console.producer.close()
            console.consumer.close()
        assert [doc["id"] for _, _, doc in console.heap] == ["a"]
        dead = dlq.read()
        assert sorted((int(d.header("triage.source.offset")), d.header("triage.error.stage")) for d in dead) == [
            (0, "decode"), (3, "validate")], [d.headers for d in dead]
        assert offsets.committed(s.topics.review_topic)[partition] == 1, "committed up to the queued request"
    finally:
        offsets.close()
        dlq.close()
