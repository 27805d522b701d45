"""Isolation by bisection, the guarded loop's step, and supervised helper threads (no broker:
the loop runs over in-memory clients; the real-broker versions are in tests/fuzz)."""

from __future__ import annotations

import threading
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.profiles import examples
from consumers.loop import GuardedLoop
from triage.contracts import decode_dlq_headers
from triage.errors import TransportError
from triage.runtime.isolation import Unjudged, isolate
from triage.records import OutRecord, RecordBatch
from triage.runtime.threads import Supervised


def _batch(n: int) -> RecordBatch:
    b = RecordBatch()
    for i in range(n):
        b.append("in", i % 2, 100 + i, 1_700_000_000_000, str(i).encode(), str(i).encode())
    return b


class Poison(Exception):
    pass


def _echo(bad: set[int], calls: Optional[list[int]] = None):  # type: ignore[no-untyped-def]
    def handle(batch: RecordBatch) -> list[OutRecord]:
        if calls is not None:
            calls.append(len(batch))
        values = [int(v) for v in batch.values]  # type: ignore[arg-type]
        for v in values:
            if v in bad:
                raise Poison(f"record {v} is poison")
        return [OutRecord("out", None, str(v).encode(), None, j) for j, v in enumerate(values)]

    return handle


def test_a_clean_batch_is_handled_in_one_call() -> None:
    calls: list[int] = []
    parts, failures = isolate(_batch(64), _echo(set(), calls))
    assert calls == [64] and not failures
    assert [p.rows for p in parts] == [list(range(64))]


@settings(max_examples=examples(100), deadline=None)
@given(st.integers(1, 80).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1), max_size=n))))
def test_bisection_finds_exactly_the_bad_records(case: tuple[int, set[int]]) -> None:
    n, bad = case
    if len(bad) == n:  # no record succeeded: no evidence against any (tests/unit/test_blame.py)
        with pytest.raises(Unjudged):
            isolate(_batch(n), _echo(bad))
        return
    parts, failures = isolate(_batch(n), _echo(bad))
    assert sorted(f.row for f in failures) == sorted(bad)
    assert all(isinstance(f.error, Poison) for f in failures)
    handled = sorted(r for p in parts for r in p.rows)
    assert handled == sorted(set(range(n)) - bad)  # every record: handled or failed, once


def test_broker_errors_are_not_isolated() -> None:
    def handle(batch: RecordBatch) -> list[OutRecord]:
        raise TransportError("broker gone", retriable=True)

    with pytest.raises(TransportError):
        isolate(_batch(4), handle)


class FakeConsumer:
    def __init__(self, batches: list[RecordBatch]) -> None:
        self.batches = batches
        self.commits: list[dict[tuple[str, int], int]] = []

    def poll_batch(self, max_records: int, timeout_ms: int) -> RecordBatch:
        return self.batches.pop(0) if self.batches else RecordBatch()

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        self.commits.append(dict(offsets))

    def assigned(self) -> list[tuple[str, int]]:
        return [("in", 0), ("in", 1)]

    def lag(self) -> dict[int, int]:
        return {}

    def connected(self) -> bool:
        return True

    def close(self) -> None:
        pass


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[OutRecord] = []

    def send_all(self, records: list[OutRecord], timeout_s: float, stop: object = None) -> list[Optional[TransportError]]:
        self.sent.extend(records)
        return [None] * len(records)

    def close(self) -> None:
        pass


def test_loop_dead_letters_the_record_that_raised_and_commits_past_it() -> None:
    consumer, producer = FakeConsumer([_batch(10)]), FakeProducer()
    loop = GuardedLoop("t", consumer, _echo({7}), producer=producer, dlq_topic="dlq", version=lambda: "v3")
    step = loop.process(consumer.poll_batch(10, 0))
    assert [r.topic for r in step.delivered].count("dlq") == 1
    dead = next(r for r in producer.sent if r.topic == "dlq")
    headers = decode_dlq_headers(dead.headers)
    assert headers["triage.error.stage"] == "internal"
    assert headers["triage.error.class"] == "Poison"
    assert "record 7 is poison" in headers["triage.error.message"]
    assert headers["triage.source.offset"] == "107" and headers["triage.model_version"] == "v3"
    assert dead.value == b"7" and dead.key == b"7"  # the original bytes
    outs = sorted(int(r.value) for r in producer.sent if r.topic == "out")  # type: ignore[arg-type]
    assert outs == [0, 1, 2, 3, 4, 5, 6, 8, 9]
    # sources point at the original rows, also for records handled in a sub-batch
    assert all(int(r.value) == r.source for r in producer.sent if r.topic == "out")  # type: ignore[arg-type]
    assert consumer.commits == [{("in", 0): 109, ("in", 1): 110}]
    assert loop.metrics.internal_errors.labels(loop="t")._value.get() == 1


def test_reader_without_a_dlq_counts_the_failure_and_goes_on() -> None:
    consumer = FakeConsumer([_batch(5), _batch(3)])
    seen: list[int] = []
    loop = GuardedLoop("reader", consumer, _echo({2}), commit=False, outputs_of=lambda r: [],
                       after=lambda step: seen.append(len(step.batch)))
    loop.run(max_batches=2)
    assert seen == [5, 3]
    assert loop.metrics.internal_errors.labels(loop="reader")._value.get() == 2  # record 2 of each batch
    assert loop.metrics.records.labels(loop="reader")._value.get() == 8
    assert consumer.commits == []


def test_supervised_thread_restarts_then_gives_up() -> None:
    crashes: list[BaseException] = []
    fatal = threading.Event()
    runs: list[int] = []

    def target(stop: threading.Event) -> None:
        runs.append(1)
        raise RuntimeError("boom")

    helper = Supervised("t", target, on_fatal=lambda exc: fatal.set(), max_restarts=3, backoff_s=0.01,
                        on_restart=crashes.append).start()
    assert fatal.wait(10)
    helper.stop()
    assert len(runs) == 4 and len(crashes) == 3
    assert isinstance(helper.fatal, RuntimeError)


def test_supervised_thread_recovers_after_a_crash() -> None:
    runs: list[int] = []

    def target(stop: threading.Event) -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("transient")
        stop.wait(30)

    helper = Supervised("t", target, on_fatal=lambda exc: None, backoff_s=0.01).start()
    for _ in range(500):
        if len(runs) == 2:
            break
        threading.Event().wait(0.01)
    assert len(runs) == 2 and helper.is_alive() and helper.fatal is None
    helper.stop()
    assert not helper.is_alive()


def test_a_failing_after_hook_is_counted_and_does_not_stop_the_loop() -> None:
    consumer = FakeConsumer([_batch(2), _batch(2)])

    def broken_bookkeeping(step: object) -> None:
        raise ZeroDivisionError("metrics bug")

    loop = GuardedLoop("t", consumer, _echo(set()), producer=FakeProducer(), after=broken_bookkeeping)
    loop.run(max_batches=2)
    assert len(consumer.commits) == 2
    assert loop.metrics.internal_errors.labels(loop="t")._value.get() == 2
