"""Turn one polled batch into its output records. Pure: no Kafka, no I/O.

decode+validate each record -> stack valid features -> one ONNX run -> vectorized
routing -> encode. Every input record yields exactly one primary output (prediction,
review request or DLQ record); audited predictions add a review copy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Optional

import numpy as np

from triage.codec import Sample, decode_sample, dlq_headers, encode
from triage.errors import InputError, ScoreError, ValidationError
from triage.records import OutRecord, RecordBatch
from triage.routing import AUDIT, CONFIDENT, HOLDS, REASONS, Decisions, RoutingPolicy
from triage.scoring import Scores, score_batch
from triage.serving import ServingModel
from triage.settings import Settings

TOP_K = 3


@dataclass
class BatchResult:
    outputs: list[OutRecord]
    model_version: str
    scores: Optional[Scores] = None
    decisions: Optional[Decisions] = None
    event_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per valid sample
    inference_seconds: float = 0.0


def _event_ms(sample: Sample, fallback: int) -> int:
    ts = sample.ts
    if isinstance(ts, (int, float)) and not isinstance(ts, bool) and ts > 0:
        return int(ts)
    if isinstance(ts, str):
        try:
            from datetime import datetime

            return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            return fallback
    return fallback


def dlq_record(
    batch: RecordBatch, i: int, error: Exception, stage: str, settings: Settings, version: str
) -> OutRecord:
    return OutRecord(
        settings.dlq_topic,
        batch.keys[i],
        batch.values[i],
        dlq_headers(
            error,
            stage=stage,
            topic=batch.topics[i],
            partition=batch.partitions[i],
            offset=batch.offsets[i],
            timestamp_ms=batch.timestamps_ms[i],
            model_version=version,
        ),
        i,
        stage,
    )


def process_batch(
    batch: RecordBatch, model: ServingModel, policy: RoutingPolicy, settings: Settings
) -> BatchResult:
    version = model.version
    features = model.feature_count
    max_bytes = settings.max_message_bytes
    outputs: list[OutRecord] = []
    samples: list[Sample] = []
    rows: list[int] = []
    for i, value in enumerate(batch.values):
        try:
            samples.append(decode_sample(value, features, max_bytes))
            rows.append(i)
        except InputError as exc:
            outputs.append(dlq_record(batch, i, exc, exc.stage, settings, version))
    if not samples:
        return BatchResult(outputs, version)

    X = np.array([s.features for s in samples], dtype=np.float64)
    finite = np.isfinite(X).all(axis=1)
    if not finite.all():
        for j in np.flatnonzero(~finite):
            exc = ValidationError("`features` contains NaN or infinite values")
            outputs.append(dlq_record(batch, rows[j], exc, exc.stage, settings, version))
        keep = np.flatnonzero(finite)
        samples = [samples[j] for j in keep]
        rows = [rows[j] for j in keep]
        X = X[finite]
        if not samples:
            return BatchResult(outputs, version)

    started = time.perf_counter()
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is handled just below
        scores = score_batch(model, X, settings.acquisition)
    inference_seconds = time.perf_counter() - started
    scorable = _scorable(scores, model.outlier is not None)
    if not scorable.all():
        # Finite float64 features can still overflow the model's float32 math; a NaN
        # probability must never become an auto-accepted prediction.
        for j in np.flatnonzero(~scorable):
            exc = ScoreError("the model's output is NaN or infinite (features out of its numeric range?)")
            outputs.append(dlq_record(batch, rows[j], exc, exc.stage, settings, version))
        keep = np.flatnonzero(scorable)
        samples = [samples[j] for j in keep]
        rows = [rows[j] for j in keep]
        scores = Scores(**{f.name: getattr(scores, f.name)[keep] for f in fields(scores)})
        if not samples:
            return BatchResult(outputs, version)
    decisions = policy.decide(scores)
    outputs.extend(_encode_outputs(batch, samples, rows, scores, decisions, model, settings))
    event_ms = np.array(
        [_event_ms(s, batch.timestamps_ms[r]) for s, r in zip(samples, rows)], dtype=np.int64
    )
    return BatchResult(
        outputs, version, scores, decisions, event_ms, inference_seconds
    )


def _scorable(scores: Scores, outlier_enabled: bool) -> np.ndarray:
    ok = np.isfinite(scores.probs).all(axis=1)
    if outlier_enabled:
        ok &= ~np.isnan(scores.outlier)
    return ok


def _encode_outputs(
    batch: RecordBatch,
    samples: list[Sample],
    rows: list[int],
    scores: Scores,
    decisions: Decisions,
    model: ServingModel,
    settings: Settings,
) -> list[OutRecord]:
    classes = model.classes
    version = model.version
    # Convert numpy columns to Python lists once; per-row work is then plain Python.
    predicted = scores.predicted.tolist()
    confidence = scores.confidence.tolist()
    margin = scores.margin.tolist()
    entropy = scores.entropy.tolist()
    outlier = [None if o != o else o for o in scores.outlier.tolist()]  # NaN -> null
    reason = decisions.reason.tolist()
    priority = decisions.priority.tolist()
    audit = decisions.audit.tolist()
    hold = decisions.hold.tolist() if decisions.hold is not None and decisions.hold.any() else None
    k = min(TOP_K, len(classes))
    top_idx = np.argsort(-scores.probs, axis=1)[:, :k]
    top_p = np.take_along_axis(scores.probs, top_idx, axis=1).tolist()
    top_idx = top_idx.tolist()
    pred_topic, review_topic = settings.predictions_topic, settings.review_topic

    out: list[OutRecord] = []
    for j, sample in enumerate(samples):
        i = rows[j]
        key = sample.id.encode()
        score_obj = {"margin": margin[j], "entropy": entropy[j], "outlier": outlier[j]}
        label = classes[predicted[j]]
        r = reason[j]
        h = hold[j] if hold is not None else 0
        if h:  # not auto-accepted, but published (marked) instead of reviewed: gate / hygiene
            out.append(OutRecord(pred_topic, key, encode({
                "id": sample.id, "label": label, "confidence": confidence[j],
                "scores": score_obj, "model_version": version, "meta": sample.meta,
                "provisional": True, "provisional_reason": HOLDS[h],
                "review_reason": None if r == CONFIDENT else REASONS[r],
            }), None, i, HOLDS[h]))
            continue
        if r == CONFIDENT:
            out.append(OutRecord(pred_topic, key, encode({
                "id": sample.id, "label": label, "confidence": confidence[j],
                "scores": score_obj, "model_version": version, "meta": sample.meta,
            }), None, i, "confident"))
            if not audit[j]:
                continue
            r = AUDIT
        out.append(OutRecord(review_topic, key, encode({
            "id": sample.id, "features": sample.features, "reason": REASONS[r],
            "predicted": label, "confidence": confidence[j], "scores": score_obj,
            "priority": priority[j], "model_version": version, "meta": sample.meta,
            "top": [{"label": classes[c], "p": p} for c, p in zip(top_idx[j], top_p[j])],
        }), None, i, REASONS[r]))
    return out
