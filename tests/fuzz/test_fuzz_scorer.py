"""The scorer (with its model watcher, serving from a registry) on generated sample records.

One scorer runs for the whole test; each hypothesis example is a whole batch of ~30-50
generated samples (valid ones and ones malformed per field or as a whole, random keys and
headers) with a few known-valid sentinels interleaved, produced onto its samples topic.
Property per batch: every input ends in exactly one primary outcome, the DLQ stage agrees
with the contract, the scorer's group has committed past every record, no record reached
the ``internal`` stage, and the scorer and watcher threads are alive. Afterwards a promotion
is still swapped in, and the new version scores.
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
from tests.fuzz.kit import (
    FUZZ, MAX_BYTES, Feeder, In, Offsets, Tail, check_scorer_outputs, interleave, promote_next, records, sticky,
    value,
)
from tests.helpers import wait_until
from triage.contracts import encode_model_event
from triage.lifecycle.registry import Registry
from triage.lifecycle.loading import serving_model_from_registry
from triage.settings import Settings


def sentinel_maker(X: np.ndarray) -> Callable[[], In]:
    tag, n = uuid.uuid4().hex[:6], itertools.count()

    def make() -> In:
        i = next(n)
        sid = f"sentinel-{tag}-{i}"
        return In(sid.encode(), json.dumps({"id": sid, "features": X[i % len(X)].tolist()}).encode())

    return make


def test_scorer_gives_every_generated_sample_exactly_one_outcome(
    settings_factory: Callable[..., Settings], registry: Registry, digits: tuple[np.ndarray, np.ndarray],
) -> None:
    X, _ = digits
    s = settings_factory(registry=registry.root, batch_size=20, max_message_bytes=MAX_BYTES, registry_poll_s=600.0)
    scorer = Scorer(s, serving_model_from_registry(registry, registry.current() or "", s.serving))
    watcher = ModelWatcher(s, registry, scorer).start()
    worker = threading.Thread(target=scorer.run, name="fuzz-scorer", daemon=True)
    worker.start()
    feeder, tail, offsets = Feeder(s), Tail(s, s.topics.outputs()), Offsets(s, s.connection.group_id)
    sentinel = sentinel_maker(X)
    internal = scorer.metrics.loop.internal_errors
    ran: list[int] = []

    def dead() -> Optional[str]:
        if not worker.is_alive():
            return f"the scorer thread died (fatal: {scorer.fatal!r})"
        if not watcher.is_alive():
            return "the model watcher thread died"
        return None

    def score(batch: list[In]) -> dict[str, int]:
        feeder.send(s.topics.samples_topic, batch)
        wait_until(lambda: offsets.caught_up(s.topics.samples_topic, feeder), "the scorer to commit past every record",
                   alive=dead)
        routes = check_scorer_outputs(s, batch, tail.read(), version=scorer.model.version)
        print(f"scorer batch of {len(batch)}: {routes}")
        assert dead() is None, dead()
        assert scorer.fatal is None
        assert value(internal, loop="scorer") == 0, "a record made the scorer's handler raise (stage internal)"
        return routes

    try:
        @FUZZ
        @given(batch=records("sample"), at=st.lists(st.integers(0, 60), min_size=2, max_size=5))
        @sticky
        def run(batch: list[In], at: list[int]) -> None:
            ran.append(len(batch))
            score(interleave(batch, [sentinel() for _ in at], at))

        run()
        assert len(ran) >= min(2, FUZZ.max_examples), f"hypothesis ran only {len(ran)} examples"

        # A promotion after all that garbage is still swapped in, and the new version scores.
        # Among its records one the broker accepted but no dead letter of it can carry (over the
        # producer's request size): it is dead-lettered without its payload, the rest go on.
        before = scorer.model.version
        v = promote_next(registry)
        feeder.send(s.topics.models_topic, [In(v.encode(), encode_model_event(registry.model_event(v, "promote")))])
        wait_until(lambda: scorer.model.version == v, f"the swap {before} -> {v}", alive=dead)
        huge = In(b"huge", json.dumps({"id": "huge", "features": X[0].tolist(), "pad": "x" * 1_200_000}).encode())
        routes = score([sentinel() for _ in range(5)] + [huge] + [sentinel() for _ in range(5)])
        assert routes.get("dlq") == 1 and sum(routes.values()) >= 11, routes
        assert value(scorer.metrics.swaps, result="success") == 1
    finally:
        scorer.stop_event.set()
        worker.join(60)
        watcher.stop()
        for client in (feeder, tail, offsets):
            client.close()
    assert not worker.is_alive()
