"""The model watcher on generated model events (models topic), next to a running scorer
that serves from a registry.

Each hypothesis example produces ~20-40 generated model events (mostly malformed) with the
real promote event of the CURRENT version (``Registry.model_event`` through
``encode_model_event``) interleaved, waits until the watcher's loop has consumed all of them,
then promotes a new registry version and announces it. Property per batch: the watcher
thread stays alive and never restarts, no event makes its handler raise, each refused
event is counted once as ``bad_event`` (not a model event) or ``path`` (its path is not its
version's bundle), nothing is loaded or swapped for the garbage, and the real promotion that
follows is swapped in. At the end a sample is scored by the last promoted version.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Callable, Optional

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from consumers.model_watcher import ModelWatcher
from consumers.scorer import Scorer
from tests.fuzz.kit import (
    FUZZ, MAX_BYTES, Feeder, In, Offsets, Tail, check_scorer_outputs, counts, event_verdict, interleave,
    promote_next, records, sticky, value,
)
from tests.helpers import wait_until
from triage.contracts import encode_model_event
from triage.metrics import REFUSAL_REASONS
from triage.lifecycle.registry import Registry
from triage.lifecycle.loading import serving_model_from_registry
from triage.settings import Settings


def test_model_watcher_survives_generated_events_and_still_swaps(
    settings_factory: Callable[..., Settings], registry: Registry, digits: tuple[np.ndarray, np.ndarray],
) -> None:
    X, _ = digits
    s = settings_factory(registry=registry.root, max_message_bytes=MAX_BYTES, registry_poll_s=600.0)
    scorer = Scorer(s, serving_model_from_registry(registry, registry.current() or "", s.serving))
    watcher = ModelWatcher(s, registry, scorer).start()
    worker = threading.Thread(target=scorer.run, name="fuzz-scorer", daemon=True)
    worker.start()
    feeder = Feeder(s)
    loop = scorer.metrics.loop
    ran: list[int] = []

    def dead() -> Optional[str]:
        if not watcher.is_alive():
            return "the model watcher thread died"
        if not worker.is_alive():
            return f"the scorer thread died (fatal: {scorer.fatal!r})"
        return None

    def snapshot() -> tuple[Counter[str], float, float, float, float]:
        return (counts(scorer.metrics.refusals, "reason", list(REFUSAL_REASONS)),
                value(loop.records, loop="model-watcher"), value(loop.internal_errors, loop="model-watcher"),
                value(loop.helper_restarts, thread="model-watcher"), value(scorer.metrics.swaps, result="success"))

    try:
        @FUZZ
        @given(events=records("model_event", 20, 40), at=st.integers(0, 40))
        @sticky
        def run(events: list[In], at: int) -> None:
            ran.append(len(events))
            current = registry.current() or ""
            real = In(current.encode(), encode_model_event(registry.model_event(current, "promote")))
            batch = interleave(events, [real], [at])
            refused0, consumed0, internal0, restarts0, swaps0 = snapshot()
            feeder.send(s.topics.models_topic, batch)
            wait_until(lambda: value(loop.records, loop="model-watcher") - consumed0 >= len(batch),
                       "the watcher to consume every event", alive=dead)
            refused, consumed, internal, restarts, swaps = snapshot()
            expected = Counter(event_verdict(registry, rec.value) for rec in batch)
            print(f"watcher batch of {len(batch)} events: {dict(expected)}")
            assert consumed - consumed0 == len(batch)
            assert internal == internal0, "an event made the watcher's handler raise"
            assert restarts == restarts0, "the watcher thread crashed and was restarted"
            delta = refused - refused0
            assert (delta["bad_event"], delta["path"]) == (expected["bad_event"], expected["path"]), (delta, expected)
            assert sum(delta.values()) == expected["bad_event"] + expected["path"], f"other refusals: {delta}"
            assert swaps == swaps0 and scorer.model.version == current and scorer.pending_version is None
            assert dead() is None, dead()

            # after the garbage, a real promotion is still swapped in
            v = promote_next(registry)
            feeder.send(s.topics.models_topic, [In(v.encode(), encode_model_event(registry.model_event(v, "promote")))])
            wait_until(lambda: scorer.model.version == v, f"the swap {current} -> {v}", alive=dead)
            assert value(scorer.metrics.swaps, result="success") == swaps0 + 1

        run()
        assert len(ran) >= min(2, FUZZ.max_examples), f"hypothesis ran only {len(ran)} examples"

        # the version swapped in last is the one that scores
        tail, offsets = Tail(s, s.topics.outputs()), Offsets(s, s.connection.group_id)
        try:
            batch = feeder.send(s.topics.samples_topic, [In(f"w{i}".encode(), json.dumps(
                {"id": f"w{i}", "features": X[i].tolist()}).encode()) for i in range(5)])
            wait_until(lambda: offsets.caught_up(s.topics.samples_topic, feeder), "the scorer to commit", alive=dead)
            routes = check_scorer_outputs(s, batch, tail.read(), version=registry.current() or "")
            assert "dlq" not in routes
        finally:
            tail.close()
            offsets.close()
        assert scorer.model.version == registry.current()
    finally:
        scorer.stop_event.set()
        worker.join(60)
        watcher.stop()
        feeder.close()
    assert not worker.is_alive()
