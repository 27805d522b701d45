"""`triage serve --policy risk` through the real broker: calibrated, certified routing, the
audit slice, and the audit consumer's accuracy estimate."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pytest

from consumers.audit import AuditConsumer
from tests.fixtures import produce, read_all
from tests.helpers import DEADLINE_S, metric_value, wait_until
from tests.integration.streams import mixed_stream
from triage.settings import Settings

ALPHA = 0.02


def test_risk_policy_end_to_end(
    settings_factory: Callable[..., Settings], example_model: tuple[Path, Path], scorer_process: Any
) -> None:
    model_path, ref = example_model
    s = settings_factory(batch_size=64, audit_rate=0.2, seed=3)
    records, valid, outliers = mixed_stream(ref, 400, 8)
    produce(s, s.topics.samples_topic, records)
    proc = scorer_process(s, "--model", str(model_path), "--reference", str(ref), "--policy", "risk",
                          "--risk-alpha", str(ALPHA), "--risk-delta", "0.1")
    proc.metrics()  # up
    want = len(valid | outliers)

    def complete(got: list[dict[str, Any]]) -> bool:  # audit copies make counts alone misleading
        ids = {json.loads(r["value"])["id"] for r in got if r["topic"] != s.topics.dlq_topic}
        return len(ids) >= want and sum(r["topic"] == s.topics.dlq_topic for r in got) >= len(records) - want

    out = read_all(s, s.topics.outputs(), expect=len(records), stop_when=complete)

    def counted() -> Optional[str]:  # the counters move right after the commit
        text = proc.metrics()
        return text if metric_value(text, "triage_samples_total") >= len(out) else None

    text = wait_until(counted, "the counters to count every output", alive=proc.dead)

    preds = [json.loads(r["value"]) for r in out if r["topic"] == s.topics.predictions_topic]
    review = [json.loads(r["value"]) for r in out if r["topic"] == s.topics.review_topic]
    primary_review = {d["id"] for d in review if d["reason"] != "audit"}
    accepted = {d["id"]: d for d in preds if not d.get("provisional")}
    assert not set(accepted) & primary_review
    assert set(accepted) | primary_review == valid | outliers, "every sample ends in exactly one place"
    assert outliers <= primary_review
    assert {d["id"] for d in review if d["reason"] == "audit"} <= set(accepted)

    # The held-out labels of the stream (it replays the reference rows) say how good it was.
    with np.load(ref) as data:
        y = data["y"]
    wrong = [accepted[f"v{i}"]["label"] != str(y[i % len(y)]) for i in range(400) if f"v{i}" in accepted]
    coverage = len(wrong) / 400
    print(f"risk alpha={ALPHA}: error among accepted {np.mean(wrong):.4f}, coverage {coverage:.3f}")
    assert np.mean(wrong) <= ALPHA + 0.01
    assert coverage > 0.5

    assert metric_value(text, "triage_risk_alpha") == ALPHA
    threshold = metric_value(text, "triage_risk_threshold", **{"class": "all"})
    assert 0 < threshold < 1
    assert 0.5 < metric_value(text, "triage_coverage_ratio", source="holdout") <= 1
    assert metric_value(text, "triage_coverage_ratio", source="stream") == pytest.approx(coverage, abs=0.05)
    assert metric_value(text, "triage_calibration_ece", stage="before") > 0
    assert metric_value(text, "triage_calibration_ece", stage="after") > 0
    assert metric_value(text, "triage_gate_open") == 1
    assert metric_value(text, "triage_samples_total", route="review", reason="audit") == sum(d["reason"] == "audit" for d in review)
    assert "risk control (alpha=0.02" in proc.log() and "calibration" in proc.log()
    assert proc.terminate() == 0

    # Annotators label the audit samples; the audit consumer turns that into an estimate.
    audits = [d for d in review if d["reason"] == "audit"]
    assert audits
    labels = [(d["id"].encode(), json.dumps({"id": d["id"], "label": str(y[int(d["id"][1:]) % len(y)])}).encode())
              for d in audits]
    produce(s, s.topics.labels_topic, labels)
    consumer = AuditConsumer(s)
    worker = threading.Thread(target=consumer.run, kwargs={"idle_exit_s": 5.0})
    worker.start()
    worker.join(DEADLINE_S)
    assert not worker.is_alive()
    from prometheus_client import generate_latest

    metrics = generate_latest(consumer.metrics.registry).decode()
    version = audits[0]["model_version"]
    est = consumer.estimator.estimate(version)
    assert est is not None and est.n == len(audits)
    assert metric_value(metrics, "triage_accepted_accuracy_estimate", model_version=version) == pytest.approx(est.estimate)
    assert metric_value(metrics, "triage_accepted_accuracy_lower", model_version=version) <= est.estimate
    assert est.estimate >= 1 - ALPHA - 0.05
