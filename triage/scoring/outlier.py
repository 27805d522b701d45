"""Outlier detector: Mahalanobis distance under a shrunk covariance.

Fit on reference data from the training distribution. ``score`` returns the distance divided
by the threshold, so a score above 1 is an outlier. Shrinkage (Ledoit-Wolf) keeps the inverse
stable when features are constant or collinear, as with image pixels that are always zero.

The threshold is a conformal (finite-sample) quantile of out-of-fold distances:

- cross-fitting: the reference is split into ``folds`` seeded folds; for each fold the detector
  is fitted on the other folds and the fold's rows get their distance to it, so every one of the
  ``n`` reference rows has an out-of-fold distance (a row never calibrates a fit it was part of);
- threshold = the ``ceil((n + 1) * q)``-th smallest of those ``n`` distances: the split-conformal
  rank, under which P(distance > threshold) <= 1 - q holds exactly for a clean sample whose
  distance is exchangeable with the calibration distances (with cross-fitting it holds up to the
  fold-vs-final fit difference below). ``np.quantile`` on a small held-out set interpolates below
  that rank and flags far more than ``1 - q`` of clean traffic;
- the served mean/precision are fitted on all ``n`` rows. A fold fit sees ``(1 - 1/folds) * n``
  rows, so its out-of-fold distances run very slightly larger than the final fit's distances
  on new data: the realized rate errs low, not high (bench/outlier_rate.py measures it).

The rank exists only when ``n >= ceil(q / (1 - q))`` (:func:`min_reference_rows`: 199 rows for
q = 0.995, 99 for 0.99). With fewer rows the threshold is the largest out-of-fold distance, the
detector is marked ``sufficient = False`` and ``fit`` logs a WARNING (the scorer exports
``triage_outlier_threshold_certified = 0``).

Cost: the fold fits reuse one Gram matrix (each fold's covariance is the total minus the fold's
own, on globally centered rows), so fitting costs about three ``n x d x d`` products plus
``folds`` ``d x d`` inversions, whatever ``folds`` is; no subsampling is needed at n = 50k,
d = 800. Memory: one centered copy of the reference plus one fold.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

log = logging.getLogger("triage.outlier")

DEFAULT_FOLDS = 10
THRESHOLD_METHOD = "cross-fit-conformal"
_EPS = 1e-9  # float slack in the rank arithmetic (q is given to a few decimals)


def conformal_rank(n: int, quantile: float) -> int:
    """1-based rank of the conformal ``quantile`` among ``n`` calibration scores:
    ``ceil((n + 1) * q)``. Above ``n`` means ``n`` rows cannot certify ``q``."""
    return max(1, math.ceil((n + 1) * quantile - _EPS))


def min_reference_rows(quantile: float) -> int:
    """Fewest calibration rows whose conformal rank exists: ``ceil(q / (1 - q))``."""
    return max(1, math.ceil(quantile / (1.0 - quantile) - _EPS))


def _shrunk(emp: np.ndarray, fourth: float, n: int) -> np.ndarray:
    """Ledoit-Wolf shrinkage of the empirical covariance ``emp`` of ``n`` centered rows whose
    mean fourth power of the row norm is ``fourth`` (``mean_i ||c_i||^4``)."""
    d = emp.shape[0]
    mu = np.trace(emp) / d
    delta = np.sum((emp - mu * np.eye(d)) ** 2) / d
    # sum(sq.T @ sq) / n == mean_i ||c_i||^4 (sq = centered**2): O(n d) instead of O(n d^2)
    beta_sum = fourth - np.sum(emp**2)
    beta = min(max(beta_sum / (d * n), 0.0), delta) if delta > 0 else 0.0
    shrink = beta / delta if delta > 0 else 1.0
    cov = (1.0 - shrink) * emp + shrink * mu * np.eye(d)
    # A tiny ridge so an all-constant reference still inverts.
    return cov + 1e-6 * max(mu, 1e-12) * np.eye(d)


def _ledoit_wolf(centered: np.ndarray) -> np.ndarray:
    n, _ = centered.shape
    emp = centered.T @ centered / n
    row_sq = np.einsum("ij,ij->i", centered, centered)
    return _shrunk(emp, float(np.mean(row_sq**2)), n)


def _mahalanobis(centered: np.ndarray, precision: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(((centered @ precision) * centered).sum(axis=1), 0.0))


def _out_of_fold_distances(Xc: np.ndarray, gram: np.ndarray, row_sq: np.ndarray,
                           folds: int, seed: int) -> np.ndarray:
    """Distance of every row of ``Xc`` (centered by its column means) to a Ledoit-Wolf detector
    fitted on the other folds. Each fold fit comes from the total Gram matrix minus the fold's."""
    n = len(Xc)
    total = Xc.sum(axis=0)
    oof = np.empty(n)
    for idx in np.array_split(np.random.default_rng(seed).permutation(n), min(folds, n)):
        Xk = Xc[idx]
        m = n - len(idx)
        mu = (total - Xk.sum(axis=0)) / m  # mean of the other folds
        emp = (gram - Xk.T @ Xk) / m - np.outer(mu, mu)
        # ||x_i - mu||^4 summed over the other folds' rows: all rows minus this fold's (O(n d))
        r4 = (row_sq - 2.0 * (Xc @ mu) + mu @ mu) ** 2
        fourth = (float(r4.sum()) - float(r4[idx].sum())) / m
        precision = np.linalg.inv(_shrunk(emp, fourth, m))
        oof[idx] = _mahalanobis(Xk - mu, precision)
    return oof


@dataclass(frozen=True)
class OutlierDetector:
    mean: np.ndarray
    precision: np.ndarray
    threshold: float
    quantile: float
    # Reference rows whose out-of-fold distances set the threshold. None = unknown: a manifest
    # written before the conformal threshold (an np.quantile over a 20% hold-out).
    calibration_rows: Optional[int] = None
    folds: Optional[int] = None

    @classmethod
    def fit(
        cls, reference: np.ndarray, *, quantile: float = 0.995, seed: int = 0, folds: int = DEFAULT_FOLDS
    ) -> "OutlierDetector":
        """Fit on all of ``reference``; threshold = conformal ``quantile`` of out-of-fold
        distances over ``folds`` cross-fitted folds (see the module docstring). Logs a WARNING
        when the reference is too small to certify ``quantile``."""
        X = np.asarray(reference, dtype=np.float64)
        if X.ndim != 2 or len(X) < 10:
            raise ValueError(f"reference data must be 2-D with >= 10 rows, got shape {X.shape}")
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {quantile}")
        if folds < 2:
            raise ValueError(f"folds must be >= 2, got {folds}")
        n = len(X)
        mean = X.mean(axis=0)
        Xc = X - mean
        gram = Xc.T @ Xc
        row_sq = np.einsum("ij,ij->i", Xc, Xc)
        oof = _out_of_fold_distances(Xc, gram, row_sq, folds, seed)
        del Xc
        precision = np.linalg.inv(_shrunk(gram / n, float(np.mean(row_sq**2)), n))
        rank = conformal_rank(n, quantile)
        if rank <= n:
            threshold = float(np.partition(oof, rank - 1)[rank - 1])
        else:
            threshold = float(oof.max())
            need = min_reference_rows(quantile)
            log.warning(
                "outlier reference too small: %d rows given, %d needed to certify the %g quantile "
                "(n >= q/(1-q)); the threshold falls back to the largest out-of-fold distance and "
                "may flag more than %.2g%% of clean traffic (triage_outlier_threshold_certified=0). "
                "Give at least %d reference rows, or lower --outlier-quantile to <= %.4g for %d rows.",
                n, need, quantile, 100 * (1 - quantile), need, n / (n + 1), n,
            )
        return cls(mean, precision, max(threshold, 1e-9), quantile, n, min(folds, n))

    def distance(self, X: np.ndarray) -> np.ndarray:
        return _mahalanobis(np.asarray(X, dtype=np.float64) - self.mean, self.precision)

    def score(self, X: np.ndarray) -> np.ndarray:
        """Distance over threshold: > 1 means outlier."""
        return self.distance(X) / self.threshold

    @property
    def feature_count(self) -> int:
        return int(self.mean.shape[0])

    @property
    def min_rows(self) -> int:
        """Reference rows needed to certify ``quantile`` (``ceil(q / (1 - q))``)."""
        return min_reference_rows(self.quantile)

    @property
    def sufficient(self) -> Optional[bool]:
        """True when the threshold is a certified conformal quantile, False when the reference
        was too small for ``quantile``, None when unknown (a manifest from before)."""
        if self.calibration_rows is None:
            return None
        return self.calibration_rows >= self.min_rows

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "mahalanobis-ledoit-wolf",
            "mean": self.mean.tolist(),
            "precision": self.precision.tolist(),
            "threshold": self.threshold,
            "quantile": self.quantile,
        }
        if self.calibration_rows is not None:
            # ``sufficient`` and ``min_rows`` are derived, written for people reading manifests.
            out |= {"threshold_method": THRESHOLD_METHOD, "calibration_rows": self.calibration_rows,
                    "folds": self.folds, "min_rows": self.min_rows, "sufficient": self.sufficient}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OutlierDetector":
        """Read ``to_dict`` output. Manifests written before the conformal threshold lack
        ``calibration_rows``: they load as before, with ``calibration_rows``/``sufficient`` None."""
        rows = data.get("calibration_rows")
        folds = data.get("folds")
        return cls(
            np.asarray(data["mean"], dtype=np.float64),
            np.asarray(data["precision"], dtype=np.float64),
            float(data["threshold"]),
            float(data["quantile"]),
            None if rows is None else int(rows),
            None if folds is None else int(folds),
        )
