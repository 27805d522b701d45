"""The model adapter owns every onnxruntime failure at run time (issue 20, item 2).

Real graphs that load and then fail inside onnxruntime (tests/faulty_models.py): the adapter
raises a triage error naming the graph's inputs and outputs and what was run, blames the model
(``ModelRunError``) or the rows (``ScoreError``) on evidence, and the canary tries every batch
size a scorer runs, so a model that fails on some of them is refused before it serves.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from tests import faulty_models
from triage.errors import InputError, ModelError, ModelRunError, ScoreError
from triage.lifecycle.loading import serving_model_from_file
from triage.model import OnnxClassifier
from triage.model.classifier import run_sizes
from triage.policies import make_policy
from triage.records import RecordBatch
from triage.scoring.handlers import BatchConfig, process_batch
from triage.scoring.servable import DEFAULT_MAX_BATCH, ServingModel
from triage.settings import Settings

SIGNATURE = ("X float[N,64]", "probabilities float[N,10]")  # how the graphs' ports are named in messages


@pytest.fixture(scope="module")
def rows(digits: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return digits[0][:1200]


def _names_the_graph(message: str) -> None:
    assert all(port in message for port in SIGNATURE), message


def test_a_graph_that_fails_on_every_row_is_refused_at_load_naming_it() -> None:
    with pytest.raises(ModelRunError) as err:
        OnnxClassifier(faulty_models.every_row(), source="every_row.onnx")
    _names_the_graph(err.value.message)
    assert "one row of zeros (fed X float32[1,64])" in err.value.message
    assert "cannot be reshaped" in err.value.message and "onnxruntime_src" not in err.value.message
    assert not isinstance(err.value, InputError)


@pytest.mark.parametrize("size", [2, 7, 33, 1000])
def test_a_live_batch_the_model_fails_on_is_a_model_error_not_the_rows(rows: np.ndarray, size: int) -> None:
    """batch_of_one runs one row at a time only: a live batch of any other size is the model's fault."""
    model = OnnxClassifier(faulty_models.batch_of_one(), source="b1.onnx")
    assert model.predict_proba(rows[:1]).shape == (1, 10)
    with pytest.raises(ModelRunError) as err:
        model.predict_proba(rows[:size])
    assert isinstance(err.value, ModelError) and not isinstance(err.value, InputError)
    assert err.value.retriable  # the rows score once a good model is back: held, never dead-lettered
    _names_the_graph(err.value.message)
    assert f"a batch of {size} rows (fed X float32[{size},64])" in err.value.message
    assert "dynamic batch axis" in err.value.message


def test_rows_the_model_cannot_run_are_a_score_error_the_others_score(rows: np.ndarray) -> None:
    """A Gather indexed by the first feature: a row with an index out of range is at fault (the
    same model runs as many rows it scored before), and it fails alone while the others score."""
    model = ServingModel(OnnxClassifier(faulty_models.index_by_first_feature(), source="idx.onnx"), "v1", "0")
    model.warm_up(rows[:32])
    batch = rows[:9].copy()
    batch[4, 0] = 100.0
    with pytest.raises(ScoreError) as err:
        model.classifier.predict_proba(batch)
    assert err.value.stage == "score"
    _names_the_graph(err.value.message)
    assert "idx=100" in err.value.message and "a batch of 9 rows" in err.value.message
    with pytest.raises(ScoreError):
        model.classifier.predict_proba(batch[4:5])
    others = np.delete(batch, 4, axis=0)
    np.testing.assert_allclose(model.classifier.predict_proba(others).sum(axis=1), 1.0, rtol=1e-5)


def test_a_batch_of_only_bad_rows_is_still_the_rows_fault(rows: np.ndarray) -> None:
    """Every row of the batch fails, but the model runs its canary at that size: the rows are to blame."""
    model = ServingModel(OnnxClassifier(faulty_models.index_by_first_feature(), source="idx.onnx"), "v1", "0")
    model.warm_up(rows[:32])
    with pytest.raises(ScoreError):
        model.classifier.predict_proba(np.full((16, 64), 50.0))


@pytest.mark.parametrize("model, first_failing", [
    (faulty_models.batch_of_one(), 2), (faulty_models.seen_sizes(seen=32), 64), (faulty_models.seen_sizes(seen=999), 1000),
])
def test_the_canary_tries_every_batch_size_a_scorer_runs(rows: np.ndarray, model: bytes, first_failing: int) -> None:
    """Models that pass the old canary (32 rows, or one) and fail on batch sizes it never tried."""
    served = ServingModel(OnnxClassifier(model, source="m.onnx"), "v2", "0")
    with pytest.raises(ModelRunError) as err:
        served.warm_up(rows[:32])
    _names_the_graph(err.value.message)
    assert f"a canary batch of {first_failing} rows" in err.value.message
    assert f"1 to {DEFAULT_MAX_BATCH} rows (--batch-size), so the model is refused" in err.value.message
    below = max(n for n in run_sizes(DEFAULT_MAX_BATCH) if n < first_failing)
    served.warm_up(rows[:32], max_batch=below)  # a scorer that never takes more rows may serve it


@pytest.mark.parametrize("fixed", [1, 4])
def test_a_fixed_batch_graph_passes_every_size_in_padded_chunks(rows: np.ndarray, fixed: int) -> None:
    served = ServingModel(OnnxClassifier(faulty_models.onnx_model(*faulty_models.head("X"), batch=fixed)), "v1", "0")
    served.warm_up(rows[:32])
    assert served.classifier.predict_proba(rows[:37]).shape == (37, 10)


def test_an_output_that_is_not_one_row_per_input_row_is_the_models_fault() -> None:
    """A graph whose output is a constant [4, 10] table, whatever it is fed."""
    table = numpy_helper.from_array(np.full((4, 10), 0.1, dtype=np.float32), "T")
    nodes = [helper.make_node("Shape", ["X"], ["s"]), helper.make_node("Identity", ["T"], ["probabilities"])]
    model = OnnxClassifier(faulty_models.onnx_model(nodes, [table], classes=[str(i) for i in range(40)],
                                                    out_shape=[4, 10]))  # one row: 40 columns
    with pytest.raises(ModelRunError, match="40 values, not one row per input row"):
        model.predict_proba(np.zeros((3, 64)))
    with pytest.raises(ModelRunError, match="20 columns on this batch and 40 on one row"):
        model.predict_proba(np.zeros((2, 64)))


@given(st.integers(1, 100_000), st.one_of(st.none(), st.integers(0, 64)))
def test_run_sizes_cover_one_the_maximum_an_odd_size_and_powers_of_two(max_batch: int, fixed: int | None) -> None:
    sizes = run_sizes(max_batch, fixed)
    assert list(sizes) == sorted(set(sizes)) and sizes[0] == 1
    if fixed is not None:  # the graph only ever sees chunks of its fixed size: one, and one padded
        assert set(sizes) <= {1, 2, fixed, fixed + 1} and (fixed <= 1 or {fixed, fixed + 1} <= set(sizes))
        return
    assert sizes[-1] == max_batch and all(1 <= n <= max_batch for n in sizes)
    assert {1 << k for k in range(max_batch.bit_length())} <= set(sizes)
    if max_batch >= 3:
        assert any(n % 2 and n > 1 for n in sizes)
    assert len(sizes) <= max_batch.bit_length() + 4  # a few runs, not one per size


def test_serve_model_warms_for_the_configured_batch_size(tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]) -> None:
    """``triage serve --model`` tries the sizes of its own --batch-size: a model that fails past
    32 rows serves a scorer of 32-row batches and is refused by one of 64."""
    path = tmp_path / "seen32.onnx"
    path.write_bytes(faulty_models.seen_sizes(seen=32))
    reference = tmp_path / "reference.npz"
    np.savez(reference, X=digits[0][:300])
    small = Settings(model=path, reference=reference, batch_size=32)
    assert serving_model_from_file(small.serving, small.policy).feature_count == 64
    large = Settings(model=path, reference=reference, batch_size=64)
    with pytest.raises(ModelRunError, match="a canary batch of 63 rows"):  # 63: the odd size below 64
        serving_model_from_file(large.serving, large.policy)


def _records(X: np.ndarray) -> RecordBatch:
    batch = RecordBatch()
    for i, row in enumerate(X):
        batch.append("samples", 0, i, 1_700_000_000_000 + i, f"k{i}".encode(),
                     json.dumps({"id": f"s{i}", "features": row.tolist()}).encode())
    return batch


def test_a_live_batch_fault_leaves_the_hot_path_as_the_model_error(rows: np.ndarray) -> None:
    """The adapter boundary of the scorer's handler: a model that passed an old 32-row canary and
    fails on a live batch of 40 raises ``ModelRunError`` (what the loop does with it is the
    loop's business); a batch it can run still scores."""
    s = Settings()
    model = ServingModel(OnnxClassifier(faulty_models.seen_sizes(seen=32), source="seen32.onnx"), "v2", "0")
    config, policy = BatchConfig.of(s.serving, s.policy, s.topics), make_policy(s.policy)
    with pytest.raises(ModelRunError) as err:
        process_batch(_records(rows[:40]), model, policy, config)
    assert "a batch of 40 rows (fed X float32[40,64])" in err.value.message
    assert len(process_batch(_records(rows[:32]), model, policy, config).outputs) >= 32
