"""Probability calibration: temperature scaling, expected calibration error, and calibrators
mapping raw class probabilities to calibrated ones, vectorized.

Three families, each a plain-dict round-trip so a bundle manifest can carry them:

- ``temperature``: softmax(log p / T) over the whole vector (one parameter).
- ``platt`` (top-label): temperature first, then sigmoid(a * logit(p1) + b) on the top
  probability; the other classes share the remaining mass in their old proportions.
- ``isotonic`` (top-label): temperature first, then a monotone step map of p1 (PAV fit),
  redistributed the same way.

``fit_calibrator`` picks the family with the lowest cross-validated top-label log loss
(the proper scoring rule for "is the prediction right"), preferring the simpler family
unless a richer one is clearly better. The top label never changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from triage.extras import require_extra


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): T > 1 softens over-confident probabilities, T = 1 is identity."""
    if temperature == 1.0:
        return probs
    logits = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits


def _nll(probs: np.ndarray, y: np.ndarray, temperature: float) -> float:
    p = apply_temperature(probs, temperature)[np.arange(len(y)), y]
    return float(-np.log(np.clip(p, 1e-12, 1.0)).mean())


def fit_temperature(probs: np.ndarray, y: np.ndarray) -> float:
    """Temperature minimizing held-out negative log-likelihood (golden-section on log T)."""
    lo, hi = np.log(0.05), np.log(20.0)
    ratio = (np.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = _nll(probs, y, np.exp(a)), _nll(probs, y, np.exp(b))
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = _nll(probs, y, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = _nll(probs, y, np.exp(b))
    return float(np.exp((lo + hi) / 2))


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE with equal-width confidence bins."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(total)


EPS = 1e-6
CV_FOLDS = 5
MARGIN = 0.01  # a richer family must beat the simpler one by 1% relative log loss


class Calibrator(Protocol):
    kind: str

    def __call__(self, probs: np.ndarray) -> np.ndarray: ...
    def to_dict(self) -> dict[str, Any]: ...


def _redistribute(probs: np.ndarray, top: np.ndarray) -> np.ndarray:
    """Set each row's max to ``top`` and rescale the rest to fill 1 - top, keeping argmax."""
    n, c = probs.shape
    if c == 1:
        return np.ones_like(probs)
    idx = probs.argmax(axis=1)
    rows = np.arange(n)
    p1 = probs[rows, idx]
    rest = 1.0 - p1
    part = np.partition(probs, -2, axis=1)
    p2 = part[:, -2]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(rest > 0, p2 / rest, 1.0)
    top = np.clip(np.maximum(top, r / (1.0 + r) + 1e-9), 1.0 / c, 1.0)  # stays above the runner-up
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(rest > 0, (1.0 - top) / rest, 0.0)
    out = probs * scale[:, None]
    flat = rest <= 0  # one-hot rows: spread the freed mass evenly
    if flat.any():
        out[flat] = ((1.0 - top[flat]) / (c - 1))[:, None]
    out[rows, idx] = top
    return out


@dataclass(frozen=True)
class TemperatureCalibrator:
    temperature: float = 1.0
    kind: str = "temperature"

    def __call__(self, probs: np.ndarray) -> np.ndarray:
        return apply_temperature(probs, self.temperature)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "temperature": self.temperature}


@dataclass(frozen=True)
class PlattCalibrator:
    temperature: float
    a: float
    b: float
    kind: str = "platt"

    def top(self, p1: np.ndarray) -> np.ndarray:
        p1 = np.clip(p1, EPS, 1 - EPS)
        z = np.clip(self.a * np.log(p1 / (1 - p1)) + self.b, -500.0, 500.0)  # exp overflows past ~709
        return 1.0 / (1.0 + np.exp(-z))

    def __call__(self, probs: np.ndarray) -> np.ndarray:
        p = apply_temperature(probs, self.temperature)
        return _redistribute(p, self.top(p.max(axis=1)))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "temperature": self.temperature, "a": self.a, "b": self.b}


@dataclass(frozen=True)
class IsotonicCalibrator:
    temperature: float
    x: tuple[float, ...] = field(default_factory=tuple)  # knots (increasing confidence)
    y: tuple[float, ...] = field(default_factory=tuple)  # calibrated confidence at each knot
    kind: str = "isotonic"

    def top(self, p1: np.ndarray) -> np.ndarray:
        return np.interp(p1, self.x, self.y)

    def __call__(self, probs: np.ndarray) -> np.ndarray:
        p = apply_temperature(probs, self.temperature)
        return _redistribute(p, self.top(p.max(axis=1)))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "temperature": self.temperature, "x": list(self.x), "y": list(self.y)}


def calibrator_from_dict(data: dict[str, Any]) -> Calibrator:
    kind = data.get("kind", "temperature")
    if kind == "temperature":
        return TemperatureCalibrator(float(data.get("temperature", 1.0)))
    if kind == "platt":
        return PlattCalibrator(float(data["temperature"]), float(data["a"]), float(data["b"]))
    if kind == "isotonic":
        return IsotonicCalibrator(float(data["temperature"]), tuple(map(float, data["x"])), tuple(map(float, data["y"])))
    raise ValueError(f"unknown calibrator kind {kind!r} (expected temperature, platt or isotonic)")


# --- fitting -------------------------------------------------------------------------------
def _fit_platt(p1: np.ndarray, correct: np.ndarray) -> tuple[float, float]:
    """Logistic regression of correctness on logit(p1), by Newton's method (2 parameters)."""
    z = np.log(np.clip(p1, EPS, 1 - EPS) / np.clip(1 - p1, EPS, 1))
    t = correct.astype(np.float64)
    # Platt's smoothed targets keep the fit finite when one side is empty.
    n_pos, n_neg = t.sum(), len(t) - t.sum()
    t = np.where(t > 0, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    a, b = 1.0, 0.0
    for _ in range(50):
        s = 1.0 / (1.0 + np.exp(-np.clip(a * z + b, -500.0, 500.0)))  # clipped: exp overflows past ~709
        g = np.array([((s - t) * z).sum(), (s - t).sum()])
        w = s * (1 - s) + 1e-9
        h = np.array([[(w * z * z).sum(), (w * z).sum()], [(w * z).sum(), w.sum()]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(h, g)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-8:
            break
    return float(a), float(b)


def _fit_isotonic(p1: np.ndarray, correct: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    require_extra("train", "isotonic calibration")
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p1, correct.astype(np.float64))
    x, y = np.asarray(iso.X_thresholds_), np.asarray(iso.y_thresholds_)
    # Shrink the ends away from exact 0/1: a finite sample never proves certainty.
    n = len(p1)
    y = np.clip(y, 1.0 / (n + 2), 1.0 - 1.0 / (n + 2))
    return tuple(x.tolist()), tuple(y.tolist())


def _fit(kind: str, probs: np.ndarray, y: np.ndarray) -> Calibrator:
    temperature = fit_temperature(probs, y)
    if kind == "temperature":
        return TemperatureCalibrator(temperature)
    p = apply_temperature(probs, temperature)
    p1, correct = p.max(axis=1), p.argmax(axis=1) == y
    if kind == "platt":
        return PlattCalibrator(temperature, *_fit_platt(p1, correct))
    return IsotonicCalibrator(temperature, *_fit_isotonic(p1, correct))


def top_label_log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    conf = np.clip(probs.max(axis=1), EPS, 1 - EPS)
    correct = probs.argmax(axis=1) == y
    return float(-np.where(correct, np.log(conf), np.log(1 - conf)).mean())


def fit_calibrator(
    probs: np.ndarray, y: np.ndarray, *, kinds: tuple[str, ...] = ("temperature", "platt", "isotonic"), seed: int = 0
) -> tuple[Calibrator, dict[str, Any]]:
    """Choose and fit a calibrator on held-out ``probs`` (N, C) with integer labels ``y``.

    Returns the calibrator (refit on all rows) and a report: the cross-validated top-label
    log loss of each family and the in-sample ECE before and after.
    """
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    n = len(y)
    folds = np.random.default_rng(seed).permutation(n) % CV_FOLDS
    losses: dict[str, float] = {}
    for kind in kinds:
        if kind != "temperature" and n < 50:  # too few rows for a richer map to be trusted
            continue
        total = 0.0
        for f in range(CV_FOLDS):
            train, test = folds != f, folds == f
            if not test.any() or not train.any():
                continue
            total += top_label_log_loss(_fit(kind, probs[train], y[train])(probs[test]), y[test]) * test.sum()
        losses[kind] = total / n
    tried = [k for k in kinds if k in losses]
    best = tried[0] if tried else "temperature"  # too few rows for the asked family: fall back
    for kind in tried[1:]:  # ordered simplest first; a richer one must win by MARGIN
        if losses[kind] < losses[best] * (1 - MARGIN):
            best = kind
    calibrator = _fit(best, probs, y)
    report = {
        "kind": best,
        "cv_top_label_log_loss": losses,
        "ece_before": expected_calibration_error(probs, y),
        "ece_after_in_sample": expected_calibration_error(calibrator(probs), y),
        "n": int(n),
    }
    return calibrator, report
