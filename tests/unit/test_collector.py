from __future__ import annotations

import gc
import json
from collections.abc import Iterator

import numpy as np
import pytest

from triage.examples import example_paths
from triage.lifecycle.loading import serving_model_from_file
from triage.policies import make_policy
from triage.records import RecordBatch
from triage.runtime.collector import TRACKED_PER_RECORD, size_young_generation
from triage.scoring.handlers import BatchConfig, process_batch
from triage.settings import Settings


@pytest.fixture
def thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def test_raises_the_young_threshold_above_a_batch_and_keeps_the_older_ones(thresholds: None) -> None:
    gc.set_threshold(700, 10, 10)
    assert size_young_generation(1000) == 1000 * TRACKED_PER_RECORD
    assert gc.get_threshold() == (1000 * TRACKED_PER_RECORD, 10, 10)


def test_never_lowers_a_threshold_set_for_a_larger_batch(thresholds: None) -> None:
    gc.set_threshold(700, 10, 10)
    size_young_generation(5000)
    assert size_young_generation(100) == 5000 * TRACKED_PER_RECORD
    assert gc.get_threshold()[0] == 5000 * TRACKED_PER_RECORD


def test_a_scored_batch_triggers_no_young_collection(thresholds: None) -> None:
    model_path, ref = example_paths()
    s = Settings(model=model_path, reference=ref)
    model = serving_model_from_file(s.serving, s.policy)
    policy, config = make_policy(s.policy, model), BatchConfig.of(s.serving, s.policy, s.topics)
    with np.load(ref) as d:
        rows = d["X"][:100].tolist()
    batch = RecordBatch()
    for i in range(s.serving.batch_size):
        value = json.dumps({"id": f"s{i}", "features": rows[i % len(rows)], "meta": {"src": "t"}}).encode()
        batch.append("in", i % 4, i, 1_700_000_000_000 + i, f"s{i}".encode(), value)
    young: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            young.append(info["generation"])

    size_young_generation(s.serving.batch_size)
    gc.collect()  # start from an empty young generation
    gc.callbacks.append(seen)
    try:
        result = process_batch(batch, model, policy, config)
    finally:
        gc.callbacks.remove(seen)
    assert len(result.outputs) >= s.serving.batch_size
    assert young == []  # the default threshold (700) runs several collections on this batch
