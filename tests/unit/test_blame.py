"""A record is poison only on evidence against it; the world's faults hold the batch (unit tests:
the classification in triage/errors.py, isolation's verdicts, the guarded loop over in-memory
clients, send_until_acked's refused sends and the label store's all-or-nothing append. The
same faults made real: tests/reliability/test_world_faults.py)."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Callable, Optional

import pytest

from consumers.loop import GuardedLoop
from tests.unit.test_isolation import FakeConsumer, FakeProducer, Poison, _batch, _echo
from triage.errors import (
    RECORD, UNKNOWN, WORLD, BlockedError, DecodeError, InvalidRecordError, LabelError, ModelLoadError, ModelRunError, TransportError,
    TriageError, blame, fault_reason,
)
from triage.lifecycle.labelstore import LabelStore
from triage.records import OutRecord, RecordBatch
from triage.runtime.isolation import Unjudged, isolate
from triage.transport.base import send_until_acked


class Flaky(TriageError):
    """What a dependency client raises for a 5xx or a timeout: retriable."""

    retriable = True


REFUSED = TransportError("TOPIC_AUTHORIZATION_FAILED: Topic authorization failed", retriable=False)
TOO_LARGE = TransportError("MSG_SIZE_TOO_LARGE", retriable=False, record_fault=True)


@pytest.mark.parametrize("exc, whose, reason", [
    (OSError(errno.ENOSPC, "No space left on device"), WORLD, "io"),
    (OSError(errno.EROFS, "Read-only file system"), WORLD, "io"),
    (OSError(errno.EIO, "Input/output error"), WORLD, "io"),
    (ConnectionResetError(), WORLD, "io"),
    (TimeoutError(), WORLD, "io"),
    (MemoryError(), WORLD, "memory"),
    (TransportError("broker down", retriable=True), WORLD, "broker"),
    (REFUSED, WORLD, "refused"),
    (TransportError("UNKNOWN_TOPIC_OR_PART", retriable=False), WORLD, "refused"),
    (Flaky("Label Studio answered 503"), WORLD, "dependency"),
    (TOO_LARGE, RECORD, "refused"),
    (DecodeError("not JSON"), RECORD, "handler"),
    (InvalidRecordError("3 features, want 64"), RECORD, "handler"),
    (LabelError("unknown class"), RECORD, "handler"),
    (ValueError("a bug or a bad record"), UNKNOWN, "handler"),
    (RecursionError(), UNKNOWN, "handler"),
    (ModelLoadError("m.onnx", "truncated"), UNKNOWN, "model"),
    (ModelRunError("m.onnx (input X, output probs)", "a batch of 7", "Gemm failed"), WORLD, "model"),
])
def test_errors_are_classified_in_one_place(exc: BaseException, whose: str, reason: str) -> None:
    assert blame(exc) == whose
    assert fault_reason(exc) == reason


def test_a_retriable_transport_error_is_never_the_records_fault() -> None:
    assert not TransportError("x", retriable=True, record_fault=True).record_fault


# --- isolation: verdicts need evidence ---------------------------------------------------------


def _raising(exc: Exception) -> Callable[[RecordBatch], list[OutRecord]]:
    def handle(batch: RecordBatch) -> list[OutRecord]:
        raise exc
    return handle


@pytest.mark.parametrize("n", [1, 2, 17])
def test_a_handler_that_fails_on_every_record_blames_none(n: int) -> None:
    with pytest.raises(Unjudged):
        isolate(_batch(n), _raising(ValueError("the model fails on every row")))


def test_a_lone_record_that_fails_again_on_a_retry_is_blamed() -> None:
    parts, failures = isolate(_batch(1), _raising(ValueError("poison")), retried=True)
    assert not parts and [f.row for f in failures] == [0]


def test_a_batch_that_fails_everywhere_again_on_a_retry_still_blames_none() -> None:
    with pytest.raises(Unjudged):
        isolate(_batch(5), _raising(ValueError("the model fails on every row")), retried=True)


def test_input_errors_are_blamed_even_when_every_record_has_one() -> None:
    parts, failures = isolate(_batch(3), _raising(DecodeError("garbage")))
    assert sorted(f.row for f in failures) == [0, 1, 2]


def test_a_fault_of_the_world_during_bisection_blames_no_record() -> None:
    calls: list[int] = []

    def handle(batch: RecordBatch) -> list[OutRecord]:
        calls.append(len(batch))
        if len(calls) == 1:
            raise Poison("something in here")  # starts a bisection
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        isolate(_batch(8), handle)
    assert calls == [8, 4]


# --- the guarded loop holds the batch ---------------------------------------------------------


class Disk:
    """A handler whose side effect fails while the disk is full."""

    def __init__(self, full_for: int) -> None:
        self.full_for = full_for
        self.calls = 0

    def __call__(self, batch: RecordBatch) -> list[OutRecord]:
        self.calls += 1
        if self.calls <= self.full_for:
            raise OSError(errno.ENOSPC, "No space left on device")
        return [OutRecord("out", k, v, None, j) for j, (k, v) in enumerate(zip(batch.keys, batch.values))]


def _loop(handle: Callable[[RecordBatch], list[OutRecord]], consumer: FakeConsumer, producer: FakeProducer,
          **kw: object) -> GuardedLoop[list[OutRecord]]:
    return GuardedLoop("t", consumer, handle, producer=producer, dlq_topic="dlq", sleep=lambda s: None, **kw)  # type: ignore[arg-type]


class NoWait(threading.Event):
    """A stop event whose waits return at once (the backoff is not what these tests measure)."""

    def wait(self, timeout: Optional[float] = None) -> bool:
        return self.is_set()


def test_a_full_disk_holds_the_batch_then_every_record_goes_through_once() -> None:
    consumer, producer, disk = FakeConsumer([]), FakeProducer(), Disk(full_for=3)
    loop = _loop(disk, consumer, producer, stop=NoWait())
    seen: list[tuple[bool, str]] = []
    loop.before_poll = lambda: seen.append((loop.blocked_since is not None, loop.blocked_reason))
    step = loop.process(_batch(6))
    assert disk.calls == 4 and seen == [(True, "io")] * 3
    assert [r.topic for r in producer.sent] == ["out"] * 6  # nothing dead-lettered, nothing twice
    assert consumer.commits == [{("in", 0): 105, ("in", 1): 106}]
    assert len(step.delivered) == 6 and not step.failures
    m = loop.metrics
    assert m.blocked_retries.labels(loop="t", reason="io")._value.get() == 3
    assert m.blocked.labels(loop="t", reason="io")._value.get() == 0  # released
    assert loop.blocked_since is None and loop.blocked_for() == 0.0
    assert m.internal_errors.labels(loop="t")._value.get() == 0


def test_a_blocked_loop_says_why_and_exits_past_its_deadline() -> None:
    consumer, producer = FakeConsumer([]), FakeProducer()
    loop = _loop(Disk(full_for=10**9), consumer, producer, stop=NoWait(), blocked_exit_s=0.0)
    with pytest.raises(BlockedError, match="io: OSError.*No space left") as info:
        loop.process(_batch(4))
    assert info.value.reason == "io"
    assert consumer.commits == [] and producer.sent == []
    assert loop.metrics.blocked.labels(loop="t", reason="io")._value.get() == 1
    assert "No space left on device" in (loop.blocked_reason_text() or "")


def test_stopping_a_blocked_loop_commits_nothing() -> None:
    consumer, producer = FakeConsumer([_batch(4)]), FakeProducer()
    stop = threading.Event()
    disk = Disk(full_for=10**9)

    def handle(batch: RecordBatch) -> list[OutRecord]:
        stop.set()  # SIGTERM while the disk is full
        return disk(batch)

    loop = _loop(handle, consumer, producer, stop=stop)
    loop.run()
    assert consumer.commits == [] and producer.sent == []


def test_a_lone_poison_record_is_dead_lettered_after_one_retry() -> None:
    consumer, producer = FakeConsumer([]), FakeProducer()
    loop = _loop(_echo({0}), consumer, producer, stop=NoWait())
    step = loop.process(_batch(1))
    assert [r.topic for r in step.delivered] == ["dlq"] and consumer.commits == [{("in", 0): 101}]


class RefusingProducer(FakeProducer):
    """Refuses sends to ``topic`` (authorization) until ``refusals`` have been answered."""

    def __init__(self, topic: str, refusals: int, error: TransportError = REFUSED) -> None:
        super().__init__()
        self.topic, self.refusals, self.error = topic, refusals, error

    def send_all(self, records: list[OutRecord], timeout_s: float, stop: object = None) -> list[Optional[TransportError]]:
        out: list[Optional[TransportError]] = []
        for rec in records:
            if rec.topic == self.topic and self.refusals > 0:
                self.refusals -= 1
                out.append(self.error)
            else:
                self.sent.append(rec)
                out.append(None)
        return out


def test_a_refused_topic_holds_the_outputs_instead_of_dead_lettering_them() -> None:
    consumer, producer = FakeConsumer([]), RefusingProducer("out", refusals=8 * 3)
    loop = _loop(_echo(set()), consumer, producer, stop=NoWait())
    loop.process(_batch(8))
    assert sorted(int(r.value) for r in producer.sent) == list(range(8))  # type: ignore[arg-type]
    assert all(r.topic == "out" for r in producer.sent)
    assert loop.metrics.blocked_retries.labels(loop="t", reason="refused")._value.get() == 3
    assert consumer.commits == [{("in", 0): 107, ("in", 1): 108}]


def test_a_record_the_broker_refuses_for_its_own_sake_is_still_dead_lettered() -> None:
    consumer, producer = FakeConsumer([]), RefusingProducer("out", refusals=1, error=TOO_LARGE)
    loop = _loop(_echo(set()), consumer, producer, stop=NoWait())
    step = loop.process(_batch(3))
    assert sorted(r.topic for r in step.delivered) == ["dlq", "out", "out"]


def test_without_on_refused_a_refused_send_still_raises() -> None:
    with pytest.raises(TransportError, match="AUTHORIZATION"):
        send_until_acked(RefusingProducer("out", refusals=1), [OutRecord("out", b"k", b"v")], sleep=lambda s: None)


# --- the label store: an append is all or nothing --------------------------------------------


def _row(i: int) -> dict[str, object]:
    return {"id": f"s{i}", "label": "1", "features": [float(i)] * 50, "annotator": None, "partition": 0, "offset": i}


@pytest.mark.parametrize("fail", ["short write then ENOSPC", "EIO at fsync"])
def test_a_failed_append_leaves_nothing_behind_and_its_retry_writes_each_row_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: str) -> None:
    store = LabelStore(tmp_path)
    store.append([_row(0)])
    real_write, real_fsync = os.write, os.fsync

    def short_write(fd: int, data: bytes | memoryview) -> int:
        if len(data) > 100:
            return real_write(fd, bytes(data[:len(data) // 2 + 7]))  # part of a row, past whole rows
        raise OSError(errno.ENOSPC, "No space left on device")

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with monkeypatch.context() as m:
        if fail.startswith("short"):
            m.setattr(os, "write", short_write)
        else:
            m.setattr(os, "fsync", lambda fd: failing_fsync(fd) if os.fstat(fd).st_size > 600 else real_fsync(fd))
        with pytest.raises(OSError):
            store.append([_row(i) for i in range(1, 6)])
    assert store.count() == 1 and [r["id"] for _, r in store.rows()] == ["s0"]
    store.append([_row(i) for i in range(1, 6)])
    assert [r["id"] for _, r in store.rows()] == [f"s{i}" for i in range(6)]
