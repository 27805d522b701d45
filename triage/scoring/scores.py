"""Score a stacked batch: one ONNX run, then vectorized confidence/margin/entropy/outlier."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from triage.scoring.acquisition import normalized_entropy, top2, uncertainty
from triage.scoring.calibration import apply_temperature
from triage.scoring.servable import ServingModel
from triage.settings import Acquisition


@dataclass(frozen=True)
class Scores:
    probs: np.ndarray  # (N, C) calibrated
    predicted: np.ndarray  # (N,) class index
    confidence: np.ndarray  # max calibrated probability
    margin: np.ndarray  # top-1 minus top-2
    entropy: np.ndarray  # normalized to [0, 1]
    uncertainty: np.ndarray  # the configured acquisition function, [0, 1]
    outlier: np.ndarray  # distance / threshold (> 1 = outlier); NaN when detection is off
    X: Optional[np.ndarray] = None  # the scored features (for near-duplicate hashing)

    def __len__(self) -> int:
        return len(self.predicted)


def score_batch(model: ServingModel, X: np.ndarray, acquisition: Acquisition) -> Scores:
    raw = model.classifier.predict_proba(X)
    calibrator = model.calibrator
    probs = calibrator(raw) if calibrator is not None else apply_temperature(raw, model.temperature)
    outlier = (
        model.outlier.score(X) if model.outlier is not None else np.full(len(X), np.nan)
    )
    return scores_from_probs(probs, acquisition, outlier, X)


def scores_from_probs(
    probs: np.ndarray, acquisition: Acquisition, outlier: Optional[np.ndarray] = None, X: Optional[np.ndarray] = None
) -> Scores:
    """Scores of already calibrated probabilities (outlier NaN = detection off)."""
    p1, p2 = top2(probs)
    return Scores(
        probs=probs,
        predicted=probs.argmax(axis=1),
        confidence=p1,
        margin=p1 - p2,
        entropy=normalized_entropy(probs),
        uncertainty=uncertainty(probs, acquisition),
        outlier=np.full(len(probs), np.nan) if outlier is None else outlier,
        X=X,
    )
