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

from triage.contracts import (
    Prediction, ProvisionalPrediction, ReviewRequest, SampleFields, ScoreFields, TopClass, check_features,
    dead_letter_from_batch, decode_samples, encode, event_ms_column,
)
from triage.errors import InputError, ScoreError
from triage.records import OutRecord, RecordBatch
from triage.scoring.routing import AUDIT, CONFIDENT, HOLDS, REASONS, Decisions, RoutingPolicy
from triage.scoring.scores import Scores, score_batch
from triage.scoring.servable import ServingModel
from triage.settings import Acquisition, PolicySettings, ServingSettings, TopicSettings

TOP_K = 3


@dataclass(frozen=True)
class BatchConfig:
    """The settings one batch needs, and no others."""

    acquisition: Acquisition
    max_message_bytes: int
    predictions_topic: str
    review_topic: str
    dlq_topic: str

    @classmethod
    def of(cls, serving: ServingSettings, policy: PolicySettings, topics: TopicSettings) -> "BatchConfig":
        return cls(policy.acquisition, serving.max_message_bytes, topics.predictions_topic,
                   topics.review_topic, topics.dlq_topic)


@dataclass
class BatchResult:
    outputs: list[OutRecord]
    model_version: str
    scores: Optional[Scores] = None
    decisions: Optional[Decisions] = None
    event_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per valid sample
    inference_seconds: float = 0.0


def process_batch(
    batch: RecordBatch, model: ServingModel, policy: RoutingPolicy, config: BatchConfig
) -> BatchResult:
    version = model.version
    features = model.feature_count
    samples, rows, errors, X = decode_samples(batch.values, features, config.max_message_bytes)
    outputs: list[OutRecord] = [
        dead_letter_from_batch(batch, i, exc, exc.stage, config.dlq_topic, version) for i, exc in errors
    ]
    if not samples:
        return BatchResult(outputs, version)

    # The decoders already refuse values outside float32; this one reduction (~30 us per batch)
    # keeps that guarantee on the matrix the model sees, whatever path built it.
    bad, problem = check_features(X)
    if problem is not None:
        keep = _dead_letter_rows(bad, problem, batch, rows, outputs, config.dlq_topic, version)
        samples, rows, X = [samples[j] for j in keep], [rows[j] for j in keep], X[keep]
        if not samples:
            return BatchResult(outputs, version)

    started = time.perf_counter()
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is handled just below
        scores = score_batch(model, X, config.acquisition)
    inference_seconds = time.perf_counter() - started
    scorable = _scorable(scores, model.outlier is not None)
    if not scorable.all():
        # Finite float64 features can still overflow the model's float32 math; a NaN
        # probability must never become an auto-accepted prediction.
        keep = _dead_letter_rows(~scorable, ScoreError("the model's output is NaN or infinite (features out of "
                                                       "its numeric range?)"), batch, rows, outputs, config.dlq_topic, version)
        samples, rows, X = [samples[j] for j in keep], [rows[j] for j in keep], X[keep]
        scores = Scores(**{f.name: None if getattr(scores, f.name) is None else getattr(scores, f.name)[keep]
                           for f in fields(scores)})
        if not samples:
            return BatchResult(outputs, version)
    decisions = policy.decide(scores)
    outputs.extend(_encode_outputs(samples, rows, X, scores, decisions, model, config))
    event_ms = np.array(event_ms_column(samples, batch.timestamps_ms, rows), dtype=np.int64)
    return BatchResult(
        outputs, version, scores, decisions, event_ms, inference_seconds
    )


def _encode_outputs(
    samples: list[SampleFields],
    rows: list[int],
    X: np.ndarray,
    scores: Scores,
    decisions: Decisions,
    model: ServingModel,
    config: BatchConfig,
) -> list[OutRecord]:
    classes = model.classes
    version = model.version
    # Convert numpy columns to Python lists once; per-row work is then plain Python.
    predicted = scores.predicted.tolist()
    # Within the contract's ranges: a foreign model's float32 probabilities may sum a rounding
    # error past 1 (or dip below 0), and readers refuse a confidence outside [0, 1].
    confidence = np.clip(scores.confidence, 0.0, 1.0).tolist()
    margin = np.clip(scores.margin, 0.0, 1.0).tolist()
    entropy = np.maximum(scores.entropy, 0.0).tolist()
    outlier = [None if o != o else max(o, 0.0) for o in scores.outlier.tolist()]  # NaN -> null
    reason = decisions.reason.tolist()
    priority = decisions.priority.tolist()
    audit = decisions.audit.tolist()
    hold = decisions.hold.tolist() if decisions.hold is not None and decisions.hold.any() else None
    annotators = decisions.annotators.tolist() if decisions.annotators is not None else None
    k = min(TOP_K, len(classes))
    top_idx = np.argsort(-scores.probs, axis=1)[:, :k]
    top_p = np.clip(np.take_along_axis(scores.probs, top_idx, axis=1), 0.0, 1.0).tolist()
    top_idx = top_idx.tolist()
    pred_topic, review_topic = config.predictions_topic, config.review_topic

    out: list[OutRecord] = []
    append = out.append
    for j, sample in enumerate(samples):
        i = rows[j]
        sid = sample.id
        key = sid.encode()
        score_obj = ScoreFields(margin[j], entropy[j], outlier[j])
        label = classes[predicted[j]]
        r = reason[j]
        if hold is not None and hold[j]:  # not auto-accepted, but published marked: gate / hygiene
            h = hold[j]
            append(OutRecord(pred_topic, key, encode(ProvisionalPrediction(
                sid, label, confidence[j], score_obj, version, sample.meta, True,
                HOLDS[h], None if r == CONFIDENT else REASONS[r],
            )), None, i, HOLDS[h]))
            continue
        if r == CONFIDENT:
            append(OutRecord(pred_topic, key, encode(Prediction(
                sid, label, confidence[j], score_obj, version, sample.meta,
            )), None, i, "confident"))
            if not audit[j]:
                continue
            r = AUDIT
        append(OutRecord(review_topic, key, encode(ReviewRequest(
            sid, X[j].tolist(), REASONS[r], label, confidence[j], score_obj, priority[j], version,
            sample.meta, [TopClass(classes[c], p) for c, p in zip(top_idx[j], top_p[j])],
            1 if annotators is None or r == AUDIT else annotators[j],
        )), None, i, REASONS[r]))
    return out


def _dead_letter_rows(bad: np.ndarray, exc: InputError, batch: RecordBatch, rows: list[int],
                      outputs: list[OutRecord], dlq_topic: str, version: str) -> np.ndarray:
    """Append a DLQ record for every ``bad`` row; return the indices of the rows kept."""
    outputs.extend(dead_letter_from_batch(batch, rows[j], exc, exc.stage, dlq_topic, version)
                   for j in np.flatnonzero(bad))
    return np.flatnonzero(~bad)


def _scorable(scores: Scores, outlier_enabled: bool) -> np.ndarray:
    ok = np.isfinite(scores.probs).all(axis=1)
    if outlier_enabled:
        ok &= ~np.isnan(scores.outlier)
    return ok
