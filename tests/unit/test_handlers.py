from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from triage.scoring.handlers import process_batch
from triage.records import RecordBatch
from triage.scoring.handlers import BatchConfig
from triage.policies import make_policy
from triage.scoring.servable import ServingModel
from triage.lifecycle.loading import serving_model_from_file
from triage.settings import Settings


@pytest.fixture(scope="module")
def served(example_model: tuple[Path, Path]) -> tuple[ServingModel, np.ndarray, Settings]:
    model_path, ref = example_model
    s = Settings(model=model_path, reference=ref)
    with np.load(ref) as d:
        X = d["X"]
    return serving_model_from_file(s.serving, s.policy), X, s


@pytest.fixture(scope="module")
def example_model() -> tuple[Path, Path]:
    from triage.examples import example_paths

    return example_paths()


def _batch(values: list[bytes | None]) -> RecordBatch:
    b = RecordBatch()
    for i, v in enumerate(values):
        b.append("in", i % 2, i, 1_700_000_000_000 + i, f"k{i}".encode(), v)
    return b


def test_every_record_gets_exactly_one_primary_output(served) -> None:  # type: ignore[no-untyped-def]
    model, X, s = served
    values: list[bytes | None] = [json.dumps({"id": f"v{i}", "features": X[i].tolist()}).encode() for i in range(50)]
    values += [json.dumps({"id": "far", "features": [80.0] * 64}).encode(), b"junk", None,
               json.dumps({"id": "nan", "features": [float("nan")] + [0.0] * 63}).encode()]
    result = process_batch(_batch(values), model, make_policy(s.policy), BatchConfig.of(s.serving, s.policy, s.topics))
    primary = [o for o in result.outputs if o.reason != "audit"]
    assert sorted(o.source for o in primary) == list(range(len(values)))
    by_source = {o.source: o for o in primary}
    far = json.loads(by_source[50].value)
    assert by_source[50].topic == s.topics.review_topic and far["reason"] == "outlier" and far["scores"]["outlier"] > 1
    assert [by_source[i].topic for i in (51, 52, 53)] == [s.topics.dlq_topic] * 3
    assert dict(by_source[53].headers)["triage.error.stage"] == b"decode"  # json.dumps writes NaN, not JSON
    preds = [json.loads(o.value) for o in primary if o.topic == s.topics.predictions_topic]
    assert preds and all(p["model_version"] == model.version for p in preds)
    assert all(o.key == json.loads(o.value)["id"].encode() for o in result.outputs if o.topic != s.topics.dlq_topic)


def test_dlq_keeps_original_bytes_and_headers(served) -> None:  # type: ignore[no-untyped-def]
    model, _, s = served
    raw = b'{"id": "x", "features": [1, 2]}'
    out = process_batch(_batch([raw]), model, make_policy(s.policy), BatchConfig.of(s.serving, s.policy, s.topics)).outputs[0]
    headers = dict(out.headers)
    assert out.value == raw and out.key == b"k0"
    assert headers["triage.error.stage"] == b"validate"
    assert headers["triage.error.class"] == b"ValidationError"
    assert b"model takes 64" in headers["triage.error.message"]
    assert headers["triage.source.offset"] == b"0" and headers["triage.source.topic"] == b"in"
    assert headers["triage.model_version"] == model.version.encode()


def test_review_record_carries_contract_fields(served) -> None:  # type: ignore[no-untyped-def]
    model, _, s = served
    raw = json.dumps({"id": "far", "features": [50.0] * 64, "meta": {"m": 1}}).encode()
    rec = json.loads(process_batch(_batch([raw]), model, make_policy(s.policy), BatchConfig.of(s.serving, s.policy, s.topics)).outputs[0].value)
    for field in ("id", "features", "reason", "predicted", "confidence", "scores", "priority", "model_version", "meta"):
        assert field in rec
    assert rec["meta"] == {"m": 1} and len(rec["top"]) == 3


def test_a_foreign_models_rounding_past_one_still_writes_valid_outputs(served, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Float32 probabilities of a model nobody here wrote can sum a rounding error past 1 or
    dip below 0: the scorer's outputs stay within the contract's ranges, so every reader
    (console, bridge, monitor) decodes them instead of refusing them."""
    from triage.contracts import decode_prediction, decode_review

    model, X, s = served
    real = model.classifier.predict_proba

    def rounded(x: np.ndarray) -> np.ndarray:
        p = real(x)
        p[0, p[0].argmax()] = 1.0000001192092896  # float32's 1 + ulp
        p[1, :] = 0.0
        p[1, 0], p[1, 1] = 1.0000001, -1e-8
        return p

    monkeypatch.setattr(model.classifier, "predict_proba", rounded)
    model = dataclasses.replace(model, calibrator=None)  # served uncalibrated at temperature 1: the raw table
    monkeypatch.setattr("triage.scoring.scores.apply_temperature", lambda p, t: p)
    values: list[bytes | None] = [json.dumps({"id": f"r{i}", "features": X[i].tolist()}).encode() for i in range(20)]
    result = process_batch(_batch(values), model, make_policy(s.policy), BatchConfig.of(s.serving, s.policy, s.topics))
    outs = [o for o in result.outputs if o.topic != s.topics.dlq_topic]
    assert len([o for o in outs if o.reason != "audit"]) == 20
    for o in outs:
        doc = decode_prediction(o.value, 10**6) if o.topic == s.topics.predictions_topic else decode_review(o.value, 10**6)
        assert 0.0 <= doc.confidence <= 1.0 and 0.0 <= doc.scores.margin <= 1.0 and doc.scores.entropy >= 0.0


def test_review_requests_carry_the_annotators_the_policy_asks_for(served) -> None:  # type: ignore[no-untyped-def]
    from triage.settings import PolicySettings, QualitySettings

    model, X, s = served
    policy = PolicySettings(uncertainty_threshold=0.0)  # everything goes to review as uncertain
    quality = QualitySettings(consensus_share=0.25, consensus_size=3, consensus_max_annotators=3)
    values: list[bytes | None] = [json.dumps({"id": f"v{i}", "features": X[i].tolist()}).encode() for i in range(80)]
    result = process_batch(_batch(values), model, make_policy(policy, model, quality),
                           BatchConfig.of(s.serving, policy, s.topics))
    reviews = [json.loads(o.value) for o in result.outputs if o.topic == s.topics.review_topic]
    asked = [r for r in reviews if r["reason"] in ("uncertain", "outlier")]
    assert asked and {r["annotators"] for r in asked} == {1, 3}
    by_priority = sorted(asked, key=lambda r: -r["priority"])
    top = round(0.25 * len(asked))
    assert [r["annotators"] for r in by_priority] == [3] * top + [1] * (len(asked) - top)
    assert all(r["labelled_by"] == [] for r in reviews)
