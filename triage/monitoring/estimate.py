"""Label-free performance estimation from calibrated probabilities (the CBPE idea). Pure.

If the scorer's probabilities are calibrated, a sample predicted as class ``k`` with probability
``p_k`` is correct with probability ``p_k``. Over a window of ``n`` samples the number correct is
then a sum of independent Bernoullis (Poisson-binomial): its mean ``sum p`` estimates the
accuracy, and its variance ``sum p (1 - p)`` is the sampling error of the *realized* accuracy
around that estimate. The band is that sampling error at the chosen level (normal
approximation, clipped to [0, 1]); a realized accuracy from audit labels outside it means
the probabilities are no longer calibrated for today's traffic (concept drift or calibration
decay), which estimation alone cannot see.

Macro-F1 uses the expected confusion counts: for class ``k``, E[TP] is the sum of ``P(k)`` over
samples predicted ``k``, E[FP] the sum of ``1 - P(k)`` over them, E[FN] the sum of ``P(k)`` over
the others (NannyML's CBPE does the same per chunk).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from scipy.stats import norm


@dataclass(frozen=True)
class Estimate:
    samples: int
    accuracy: float
    lower: float
    upper: float
    macro_f1: Optional[float]


def estimate(probs: np.ndarray, level: float = 0.95) -> Estimate:
    """The estimate over the rows of ``probs`` ((n, C) calibrated class probabilities)."""
    probs = np.asarray(probs, dtype=np.float64)
    n = len(probs)
    if n == 0:
        return Estimate(0, float("nan"), float("nan"), float("nan"), None)
    top = probs.max(axis=1)
    acc = float(top.mean())
    half = float(norm.ppf(0.5 + level / 2) * np.sqrt(np.sum(top * (1 - top))) / n)
    return Estimate(n, acc, max(0.0, acc - half), min(1.0, acc + half), _macro_f1(probs))


def _macro_f1(probs: np.ndarray) -> Optional[float]:
    predicted = probs.argmax(axis=1)
    mine = np.eye(probs.shape[1], dtype=bool)[predicted]  # (n, C): row i predicted class k
    tp = np.where(mine, probs, 0.0).sum(axis=0)
    fp = np.where(mine, 1 - probs, 0.0).sum(axis=0)
    fn = np.where(mine, 0.0, probs).sum(axis=0)
    denom = 2 * tp + fp + fn
    present = denom > 0
    if not present.any():
        return None
    return float(np.mean(2 * tp[present] / denom[present]))


class Window:
    """The last ``size`` samples' probabilities, in a ring; its state round-trips through
    ``state()`` / ``from_state`` (the monitor's checkpoint)."""

    def __init__(self, size: int, classes: int) -> None:
        if size < 1:
            raise ValueError(f"window size {size} must be at least 1")
        self.size, self.classes = size, classes
        self._buf = np.zeros((size, classes), dtype=np.float64)
        self._next, self._filled = 0, 0

    def add(self, probs: np.ndarray) -> None:
        probs = np.asarray(probs, dtype=np.float64).reshape(-1, self.classes)[-self.size:]
        k = len(probs)
        idx = (self._next + np.arange(k)) % self.size
        self._buf[idx] = probs
        self._next = int((self._next + k) % self.size)
        self._filled = min(self.size, self._filled + k)

    def rows(self) -> np.ndarray:
        if self._filled < self.size:
            return self._buf[: self._filled]
        return np.roll(self._buf, -self._next, axis=0)  # oldest first

    def estimate(self, level: float = 0.95) -> Estimate:
        return estimate(self.rows(), level)

    def state(self) -> dict[str, Any]:
        return {"size": self.size, "classes": self.classes, "rows": self.rows().tolist()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Window":
        w = cls(int(state["size"]), int(state["classes"]))
        if state["rows"]:
            w.add(np.asarray(state["rows"], dtype=np.float64))
        return w
