"""Transport semantics both backends must share: commits survive restarts, delivery failures
are classified (retriable or not), and an unwritable output is dead-lettered at stage produce."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from consumers.scorer import Scorer
from tests.fixtures import DEADLINE_S, produce, read_all, read_headers
from triage.records import OutRecord
from triage.serving import serving_model_from_file
from triage.settings import Settings
from triage.transport import make_consumer, make_producer

pytestmark = pytest.mark.integration


def test_committed_offsets_survive_consumer_restart(settings_factory: Callable[..., Settings]) -> None:
    s = settings_factory()
    produce(s, s.topics.samples_topic, [(f"k{i}".encode(), f"v{i}".encode()) for i in range(60)])
    first = make_consumer(s, [s.topics.samples_topic], group_id=s.connection.group_id)
    seen: dict[tuple[int, int], bytes] = {}
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not seen and time.monotonic() < deadline:
            batch = first.poll_batch(20, 300)
            for p, o, v in zip(batch.partitions, batch.offsets, batch.values):
                seen[(p, o)] = v or b""
        assert seen, "the group consumer received nothing"
        committed = batch.next_offsets()
        first.commit(committed)
    finally:
        first.close()

    second = make_consumer(s, [s.topics.samples_topic], group_id=s.connection.group_id)
    rest: dict[tuple[int, int], bytes] = {}
    deadline = time.monotonic() + DEADLINE_S
    try:
        while len(rest) + sum(o for o in committed.values()) < 60 and time.monotonic() < deadline:
            batch = second.poll_batch(100, 300)
            for p, o, v in zip(batch.partitions, batch.offsets, batch.values):
                rest[(p, o)] = v or b""
    finally:
        second.close()
    # Nothing below a committed offset comes back; everything at or above it does.
    for (topic, partition), offset in committed.items():
        assert all(o >= offset for (p, o) in rest if p == partition)
    assert len(rest) == 60 - sum(committed.values())
    assert {v for v in rest.values()} | {v for (p, o), v in seen.items() if o < committed.get((s.topics.samples_topic, p), 0)} \
        == {f"v{i}".encode() for i in range(60)}


def test_delivery_failures_are_classified(settings_factory: Callable[..., Settings]) -> None:
    s = settings_factory()
    producer = make_producer(s)
    try:
        errors = producer.send_all([
            OutRecord(s.topics.predictions_topic, b"big", b"x" * 3_000_000),
            OutRecord(s.topics.predictions_topic, b"ok", b"fine", [("h", b"v")]),
        ], 60)
    finally:
        producer.close()
    assert errors[0] is not None and errors[0].retriable is False
    assert "too large" in errors[0].message.lower() or "toolarge" in errors[0].message.lower()
    assert errors[1] is None
    out = read_all(s, [s.topics.predictions_topic], expect=1)
    assert [r["value"] for r in out] == [b"fine"]


def test_unwritable_output_is_dead_lettered_at_produce_stage(
    settings_factory: Callable[..., Settings], example_model: tuple[Path, Path]
) -> None:
    model_path, ref = example_model
    s = settings_factory(model=model_path, reference=ref, batch_size=16)
    X = np.load(ref)["X"]
    # `1e5` is 3 bytes in; the output re-encodes it as `100000.0` (8 bytes), so this sample
    # is well under the input limit but its output is over the producer's request limit.
    bloated = b'{"id": "bloat", "features": ' + json.dumps(X[0].tolist()).encode() + \
        b', "meta": {"x": [' + b",".join([b"1e5"] * 150_000) + b"]}}"
    assert len(bloated) < s.serving.max_message_bytes
    records = [(b"a", json.dumps({"id": "a", "features": X[1].tolist()}).encode()), (b"bloat", bloated),
               (b"b", json.dumps({"id": "b", "features": X[2].tolist()}).encode())]
    produce(s, s.topics.samples_topic, records)
    scorer = Scorer(s, serving_model_from_file(s))
    worker = threading.Thread(target=scorer.run, kwargs={"idle_exit_s": 20.0})
    worker.start()
    try:
        out = read_all(s, s.topics.outputs(), expect=3)
    finally:
        scorer.stop_event.set()
        worker.join(60)
    assert not worker.is_alive()
    dlq = [r for r in out if r["topic"] == s.topics.dlq_topic]
    assert [r["value"] for r in dlq] == [bloated]
    ids = {json.loads(r["value"])["id"] for r in out if r["topic"] != s.topics.dlq_topic}
    assert ids == {"a", "b"}
    headers = read_headers(s, s.topics.dlq_topic, 1)[0]["headers"]
    assert headers["triage.error.stage"] == "produce"
    assert headers["triage.error.class"] == "TransportError"
    assert headers["triage.source.topic"] == s.topics.samples_topic
    assert scorer.metrics.dlq.labels(stage="produce")._value.get() == 1
