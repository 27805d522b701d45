"""Label-free performance estimation from calibrated probabilities (the CBPE idea). Pure.

If the scorer's probabilities are calibrated, a sample predicted as class ``k`` with probability
``p_k`` is correct with probability ``p_k``. Over a window of ``n`` samples the number correct is
then a sum of independent Bernoullis (Poisson-binomial): its mean ``sum p`` estimates the
accuracy, and its variance ``sum p (1 - p)`` is the sampling error of the *realized* accuracy
around that estimate. The band is that sampling error at the chosen level (normal
approximation, clipped to [0, 1]); a realized accuracy from audit labels outside it means
the probabilities are no longer calibrated for today's traffic (concept drift or calibration
decay), which estimation alone cannot see.

Calibration drifts, and a window's estimate inherits the bias: ``correction`` measures it where
labels are unbiased, on the version's last audited samples (a uniformly random slice of its
accepted predictions, so the mean of ``correct - confidence`` over them estimates the accepted
stratum's bias without a design weight). The bias is shrunk toward 0 (positive-part
James-Stein: weight ``1 - se^2 / bias^2``), so a bias that its labels cannot tell from noise
moves nothing, and the band widens by the bias's whole standard error, not the shrunk one,
since the weight is estimated too (bench/monitoring.py measured the coverage). Fewer than
``MIN_LABELS`` labels: no correction, the raw estimate.

A sample whose label came in (a reviewed sample, labelled in the queue's order, or an audited
one) has a known correctness: the target is the realized accuracy of the served predictions, so
its expected correctness ``p`` is replaced by its realized one (``known``) and its error is gone,
whichever samples were labelled and in whatever order (the queue orders by scores, so which are
labelled says nothing about correctness given ``p``). The band then sums ``p (1 - p)`` over the
unlabelled samples only, and the correction shifts only the unlabelled accepted ones.

Macro-F1 uses the expected confusion counts: for class ``k``, E[TP] is the sum of ``P(k)`` over
samples predicted ``k``, E[FP] the sum of ``1 - P(k)`` over them, E[FN] the sum of ``P(k)`` over
the others (NannyML's CBPE does the same per chunk).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy.stats import norm


MIN_LABELS = 100  # audit labels before a correction applies (below it one misled more than it helped)


@dataclass(frozen=True)
class Correction:
    """The bias of a version's confidence on its labelled audit samples."""

    labels: int
    bias: float  # mean(correct - confidence)
    se: float  # its standard error
    weight: float  # shrinkage in [0, 1]

    @property
    def shift(self) -> float:
        return self.weight * self.bias


def correction(residuals: np.ndarray, min_labels: int = MIN_LABELS) -> Optional[Correction]:
    """The shrunk bias from ``correct - confidence`` of audited samples (None below ``min_labels``)."""
    r = np.asarray(residuals, dtype=np.float64)
    n = len(r)
    if n < max(min_labels, 2):
        return None
    bias, se2 = float(r.mean()), float(r.var(ddof=1) / n)
    weight = max(0.0, 1.0 - se2 / bias ** 2) if bias else 0.0
    return Correction(n, bias, float(np.sqrt(se2)), weight)


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
    est = accuracy_estimate(probs.max(axis=1) if len(probs) else np.zeros(0), level)
    return est if est.samples == 0 else Estimate(est.samples, est.accuracy, est.lower, est.upper, _macro_f1(probs))


def accuracy_estimate(top: np.ndarray, level: float = 0.95, corrected: Optional[np.ndarray] = None,
                      fix: Optional[Correction] = None, known: Optional[np.ndarray] = None) -> Estimate:
    """The accuracy estimate from the predicted classes' probabilities alone (what the scorer's
    outputs carry as ``confidence``); no macro-F1. With ``fix``, the rows where ``corrected`` is
    true (the stratum the audit samples: accepted predictions) are shifted by its bias. ``known``:
    per row, its realized correctness (1.0 / 0.0) where its label came in, NaN elsewhere."""
    top = np.asarray(top, dtype=np.float64)
    n = len(top)
    if n == 0:
        return Estimate(0, float("nan"), float("nan"), float("nan"), None)
    open_ = np.ones(n, dtype=bool) if known is None else np.isnan(np.asarray(known, dtype=np.float64))
    value = top if known is None else np.where(open_, top, known)
    acc, var = float(value.mean()), float(np.sum((top * (1 - top))[open_])) / n ** 2
    if fix is not None:
        rows = open_ if corrected is None else open_ & np.asarray(corrected, dtype=bool)
        share = float(np.mean(rows))
        acc = min(1.0, max(0.0, acc + share * fix.shift))
        var += (share * fix.se) ** 2
    half = float(norm.ppf(0.5 + level / 2) * np.sqrt(var))
    return Estimate(n, acc, max(0.0, acc - half), min(1.0, acc + half), None)


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
