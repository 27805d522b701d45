"""Train a scikit-learn classifier, export it to ONNX, calibrate, evaluate, register.

Pure computation plus registry writes; no Kafka. Class names are strings everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from triage.calibration import apply_temperature, expected_calibration_error, fit_temperature
from triage.errors import ConfigError

FAMILIES: dict[str, Callable[[int], ClassifierMixin]] = {
    "logreg": lambda seed: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5)),
    "mlp": lambda seed: make_pipeline(
        StandardScaler(), MLPClassifier(hidden_layer_sizes=(128,), max_iter=500, early_stopping=False, random_state=seed)
    ),
}
DEFAULT_FAMILY = "logreg"


@dataclass
class TrainedModel:
    onnx_bytes: bytes
    classes: list[str]
    temperature: float
    calibration: dict[str, Any]
    estimator: Any = field(repr=False, default=None)


def _split(X: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    counts = np.unique(y, return_counts=True)[1]
    stratify = y if counts.min() >= 2 and int(len(y) * fraction) >= len(counts) else None
    return tuple(train_test_split(X, y, test_size=fraction, random_state=seed, stratify=stratify))


def train_model(X: np.ndarray, y: np.ndarray, *, family: str = DEFAULT_FAMILY, seed: int = 0) -> TrainedModel:
    """Fit on 80%, calibrate temperature on the other 20%, export to ONNX (no ZipMap).
    The rest of the bundle (outlier detector, routing, canary) is ``preparation.prepare_bundle``'s."""
    from skl2onnx import to_onnx

    if family not in FAMILIES:
        raise ConfigError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")
    y = np.asarray(y).astype(str)
    if len(np.unique(y)) < 2:
        raise ConfigError("training data needs at least two classes")
    X = np.asarray(X, dtype=np.float64)
    X_fit, X_cal, y_fit, y_cal = _split(X, y, 0.2, seed)
    estimator = FAMILIES[family](seed).fit(X_fit.astype(np.float32), y_fit)
    classes = [str(c) for c in estimator.classes_]
    index = {c: i for i, c in enumerate(classes)}
    raw = estimator.predict_proba(X_cal.astype(np.float32))
    known = np.array([c in index for c in y_cal])
    y_cal_idx = np.array([index[c] for c in y_cal[known]])
    temperature = fit_temperature(raw[known], y_cal_idx) if known.sum() >= 10 else 1.0
    calibration = {
        "method": "temperature",
        "temperature": temperature,
        "ece_before": expected_calibration_error(raw[known], y_cal_idx) if known.any() else float("nan"),
        "ece_after": expected_calibration_error(apply_temperature(raw[known], temperature), y_cal_idx) if known.any() else float("nan"),
    }
    onx = to_onnx(estimator, X_fit[:1].astype(np.float32), options={id(estimator): {"zipmap": False}}, target_opset=17)
    return TrainedModel(onx.SerializeToString(), classes, temperature, calibration, estimator)


def evaluate(probs: np.ndarray, classes: list[str], y: np.ndarray) -> dict[str, float]:
    """Accuracy, macro-F1 and ECE of (N, C) probabilities against string labels."""
    y = np.asarray(y).astype(str)
    if not len(y):
        return {"accuracy": float("nan"), "macro_f1": float("nan"), "ece": float("nan"), "n": 0}
    predicted = np.asarray(classes)[probs.argmax(axis=1)]
    index = {c: i for i, c in enumerate(classes)}
    known = np.array([c in index for c in y])
    ece = expected_calibration_error(probs[known], np.array([index[c] for c in y[known]])) if known.any() else float("nan")
    return {
        "accuracy": float((predicted == y).mean()),
        "macro_f1": float(f1_score(y, predicted, average="macro")),
        "ece": ece,
        "n": int(len(y)),
    }


def class_counts(y: np.ndarray) -> dict[str, int]:
    """Rows per class, for the manifest's ``data.class_counts``."""
    values, counts = np.unique(np.asarray(y).astype(str), return_counts=True)
    return {str(v): int(c) for v, c in zip(values, counts)}
