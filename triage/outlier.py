"""Outlier detector: Mahalanobis distance under a shrunk covariance.

Fit on reference data from the training distribution; the threshold is a high
quantile of distances on a held-out part of that data. ``score`` returns the
distance divided by the threshold, so a score above 1 is an outlier. Shrinkage
(Ledoit-Wolf) keeps the inverse stable when features are constant or collinear,
as with image pixels that are always zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def _ledoit_wolf(centered: np.ndarray) -> np.ndarray:
    n, d = centered.shape
    emp = centered.T @ centered / n
    mu = np.trace(emp) / d
    delta = np.sum((emp - mu * np.eye(d)) ** 2) / d
    sq = centered**2
    beta_sum = np.sum(sq.T @ sq) / n - np.sum(emp**2)
    beta = min(max(beta_sum / (d * n), 0.0), delta) if delta > 0 else 0.0
    shrink = beta / delta if delta > 0 else 1.0
    cov = (1.0 - shrink) * emp + shrink * mu * np.eye(d)
    # A tiny ridge so an all-constant reference still inverts.
    return cov + 1e-6 * max(mu, 1e-12) * np.eye(d)


@dataclass(frozen=True)
class OutlierDetector:
    mean: np.ndarray
    precision: np.ndarray
    threshold: float
    quantile: float

    @classmethod
    def fit(
        cls, reference: np.ndarray, *, quantile: float = 0.995, seed: int = 0
    ) -> "OutlierDetector":
        """Fit on 80% of ``reference`` and set the threshold on the other 20%."""
        X = np.asarray(reference, dtype=np.float64)
        if X.ndim != 2 or len(X) < 10:
            raise ValueError(f"reference data must be 2-D with >= 10 rows, got shape {X.shape}")
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(X))
        cut = max(int(len(X) * 0.8), len(X) - 5000, 5)
        fit_rows, cal_rows = X[order[:cut]], X[order[cut:]]
        mean = fit_rows.mean(axis=0)
        precision = np.linalg.inv(_ledoit_wolf(fit_rows - mean))
        provisional = cls(mean, precision, 1.0, quantile)
        distances = provisional.distance(cal_rows)
        threshold = float(np.quantile(distances, quantile))
        return cls(mean, precision, max(threshold, 1e-9), quantile)

    def distance(self, X: np.ndarray) -> np.ndarray:
        centered = np.asarray(X, dtype=np.float64) - self.mean
        return np.sqrt(np.maximum(((centered @ self.precision) * centered).sum(axis=1), 0.0))

    def score(self, X: np.ndarray) -> np.ndarray:
        """Distance over threshold: > 1 means outlier."""
        return self.distance(X) / self.threshold

    @property
    def feature_count(self) -> int:
        return int(self.mean.shape[0])

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "mahalanobis-ledoit-wolf",
            "mean": self.mean.tolist(),
            "precision": self.precision.tolist(),
            "threshold": self.threshold,
            "quantile": self.quantile,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OutlierDetector":
        return cls(
            np.asarray(data["mean"], dtype=np.float64),
            np.asarray(data["precision"], dtype=np.float64),
            float(data["threshold"]),
            float(data["quantile"]),
        )
