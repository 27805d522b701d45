"""Crash loops: a record whose handling raises, and a helper thread that keeps crashing.

1. A scorer whose handler raises for one specific sample id (a wrapped ``loop.handle``; the
   failure is a bug, not bad input). Each hypothesis example is a batch of generated samples
   plus valid sentinels and one poison sample, all on one partition (one key). The poison
   record is dead-lettered exactly once with stage ``internal`` and the exception's class,
   every other record (those after it included) still gets its one outcome, and the group
   commits past all of them. Afterwards a second scorer in the same group receives nothing.
2. A model watcher whose periodic sync always raises: the supervised thread restarts
   (``triage_helper_restarts_total{thread="model-watcher"}`` increments) until it crashed
   more than ``max_restarts`` times, then calls ``on_fatal`` (the scorer's ``fail``): the
   scorer records the error and its loop stops.
"""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from typing import Callable, Optional

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from consumers.model_watcher import ModelWatcher
from consumers.scorer import Scorer
from tests.fixtures import DEADLINE_S
from tests.fuzz.kit import (
    FUZZ, MAX_BYTES, Feeder, In, Offsets, Tail, check_scorer_outputs, interleave, records, sticky, value,
)
from tests.helpers import wait_until
from triage.records import RecordBatch
from triage.lifecycle.registry import Registry
from triage.lifecycle.loading import serving_model_from_registry
from triage.settings import Settings

KEY = b"one-partition"


class PoisonPill(RuntimeError):
    """What the wrapped handler raises for a poison sample."""


class SyncBroke(RuntimeError):
    """What the broken registry sync raises."""


def test_a_record_whose_handling_raises_is_dead_lettered_once_and_the_stream_goes_on(
    settings_factory: Callable[..., Settings], registry: Registry, digits: tuple[np.ndarray, np.ndarray],
) -> None:
    X, _ = digits
    s = settings_factory(registry=registry.root, batch_size=20, max_message_bytes=MAX_BYTES, registry_poll_s=600.0)
    model = serving_model_from_registry(registry, registry.current() or "", s.serving)
    scorer = Scorer(s, model)
    handle = scorer.loop.handle
    poison: set[bytes] = set()

    def poisoned(batch: RecordBatch) -> object:
        for v in batch.values:
            if v is not None and any(p in v for p in poison):
                raise PoisonPill(f"handler bug triggered by one of {len(batch)} records")
        return handle(batch)

    scorer.loop.handle = poisoned
    worker = threading.Thread(target=scorer.run, name="fuzz-scorer", daemon=True)
    worker.start()
    feeder, tail, offsets = Feeder(s), Tail(s, s.topics.outputs()), Offsets(s, s.connection.group_id)
    tag, n = uuid.uuid4().hex[:6], itertools.count()
    ran: list[int] = []

    def sample(prefix: str) -> In:
        i = next(n)
        sid = f"{prefix}-{tag}-{i}"
        return In(KEY, json.dumps({"id": sid, "features": X[i % len(X)].tolist()}).encode())

    def dead() -> Optional[str]:
        return None if worker.is_alive() else f"the scorer thread died (fatal: {scorer.fatal!r})"

    try:
        @FUZZ
        @given(batch=records("sample", 25, 40), at=st.lists(st.integers(0, 40), min_size=2, max_size=4),
               poison_at=st.integers(0, 20))
        @sticky
        def run(batch: list[In], at: list[int], poison_at: int) -> None:
            ran.append(len(batch))
            for rec in batch:
                rec.key = KEY  # one partition: "after the poison" is well defined
            pill = sample("poison")
            poison.add(pill.value or b"")
            stream = interleave(interleave(batch, [sample("ok") for _ in at], at), [pill], [poison_at])
            feeder.send(s.topics.samples_topic, stream)
            after = [rec for rec in stream if rec.offset > pill.offset]
            assert len({rec.partition for rec in stream}) == 1 and len(after) >= 5
            wait_until(lambda: offsets.caught_up(s.topics.samples_topic, feeder),
                       "the scorer to commit past every record", alive=dead)
            out = tail.read()
            routes = check_scorer_outputs(s, stream, out, version=scorer.model.version,
                                          internal={pill.pos: "PoisonPill"})
            internal = [o for o in out
                        if o.topic == s.topics.dlq_topic and o.header("triage.error.stage") == "internal"]
            assert len(internal) == 1 and internal[0].value == pill.value, "exactly one internal dead letter"
            assert "PoisonPill" not in repr([o.headers for o in out if o is not internal[0]])
            print(f"poison at {poison_at} of {len(stream)}: {routes}")
            assert value(scorer.metrics.loop.internal_errors, loop="scorer") == len(ran)
            assert value(scorer.metrics.dlq, stage="internal") == len(ran)
            assert dead() is None

        run()
        assert len(ran) >= min(2, FUZZ.max_examples), f"hypothesis ran only {len(ran)} examples"
    finally:
        scorer.stop_event.set()
        worker.join(60)
        for client in (feeder, tail):
            client.close()
    assert not worker.is_alive()

    # A second scorer in the same group starts where the first committed: nothing is left.
    second = Scorer(s, model)
    try:
        got = 0

        def assigned() -> bool:
            nonlocal got
            if second.consumer.assigned():
                return True
            got += len(second.loop.poll() or ())
            return False

        wait_until(assigned, "the second scorer to be assigned partitions", every_s=0)
        for _ in range(5):
            got += len(second.loop.poll() or ())
        assert got == 0, f"the second scorer received {got} records: offsets were not committed past them"
        assert offsets.caught_up(s.topics.samples_topic, feeder)
    finally:
        second.close()
        offsets.close()


def test_a_model_watcher_that_keeps_crashing_restarts_then_gives_up(
    settings_factory: Callable[..., Settings], registry: Registry,
) -> None:
    s = settings_factory(registry=registry.root, registry_poll_s=0.05)
    scorer = Scorer(s, serving_model_from_registry(registry, registry.current() or "", s.serving))
    watcher = ModelWatcher(s, registry, scorer)  # on_fatal: scorer.fail
    helper = watcher._helper  # the Supervised thread: fail fast in a test
    helper.max_restarts, helper.backoff_s = 2, 0.05
    calls: list[int] = []

    def broken_sync() -> None:
        calls.append(len(calls))
        raise SyncBroke(f"registry sync failed (call {len(calls)})")

    watcher.sync = broken_sync  # type: ignore[method-assign]
    restarts = scorer.metrics.loop.helper_restarts
    worker = threading.Thread(target=scorer.run, name="fuzz-scorer", daemon=True)
    worker.start()
    watcher.start()
    try:
        wait_until(lambda: scorer.fatal is not None, "the watcher to give up")
        assert isinstance(scorer.fatal, SyncBroke), repr(scorer.fatal)
        assert len(calls) == helper.max_restarts + 1
        assert value(restarts, thread="model-watcher") == helper.max_restarts
        worker.join(DEADLINE_S)
        assert not worker.is_alive(), "the scorer kept running after a fatal helper error"
        wait_until(lambda: not watcher.is_alive(), "the watcher thread to end")
        assert helper.fatal is scorer.fatal
    finally:
        scorer.stop_event.set()
        worker.join(60)
        watcher.stop()
