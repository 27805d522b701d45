"""Realized accuracy of auto-accepted predictions, from the random audit slice.

``AuditSampler`` draws the slice in the scorer; ``AuditEstimator`` reads it back.

Audit samples are a uniformly random share of the *accepted* predictions, copied to review
with reason ``audit``. Joining their human labels to the audited prediction gives an
unbiased estimate of the accuracy of what went downstream, per model version, with an exact
(Clopper-Pearson) or Wilson interval. The join is the live certificate's (``LiveRows``): a
redelivered audit or label counts once, and an undo or an edge case is not a model error.
Pure: records in, numbers out. Memory is bounded: at most ``max_pending`` unmatched audits and
labels are kept (oldest forgotten first, counted).
"""

from __future__ import annotations

import math
from itertools import islice
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np

from triage.policies.live_risk import LiveRows
from triage.policies.risk import clopper_pearson_interval

Interval = Literal["clopper-pearson", "wilson"]


class AuditSampler:
    """The scorer side: a seeded uniformly random share of the auto-accepted rows."""

    def __init__(self, rate: float, seed: int) -> None:
        self.rate = float(rate)
        self._rng = np.random.default_rng(seed)

    def draw(self, accepted: np.ndarray) -> np.ndarray:
        if not self.rate:
            return np.zeros(len(accepted), dtype=bool)
        return accepted & (self._rng.random(len(accepted)) < self.rate)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    if n <= 0:
        return float("nan"), float("nan")
    from scipy.stats import norm

    z = float(norm.ppf(1 - (1 - confidence) / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class AccuracyEstimate:
    model_version: str
    n: int
    correct: int
    estimate: float
    lower: float
    upper: float


class AuditEstimator:
    """Accuracy per model version over its joined audit rows (``LiveRows``: one row per sample,
    its label as the annotators' answers stand), over all of them and over the last ``recent``
    joined. Pass ``rows`` to read rows another consumer feeds (the live certificate's)."""

    def __init__(self, *, confidence: float = 0.95, interval: Interval = "clopper-pearson",
                 max_pending: int = 100_000, recent: int = 200, rows: Optional[LiveRows] = None) -> None:
        self.confidence = confidence
        self.interval = interval
        # The last ``recent`` outcomes per version: a version that served well for long hides a
        # concept shift in its cumulative count (its last labels show it ~6x sooner: bench/monitoring.py).
        self.recent = recent
        self.rows = LiveRows(max_pending) if rows is None else rows

    @property
    def forgotten(self) -> int:
        return self.rows.forgotten

    def add_audit(self, sample_id: str, model_version: str, predicted: str, u: float = 0.0, ts_ms: int = 0) -> None:
        self.rows.add_audit(sample_id, model_version, u, predicted, ts_ms)

    def add_label(self, sample_id: str, label: Optional[str], annotator: Optional[str] = None) -> Optional[str]:
        """Feed a human label (``LiveRows.add_label``); returns the model version it was scored against, if joined."""
        return self.rows.add_label(sample_id, label, annotator)

    def estimate(self, model_version: str) -> Optional[AccuracyEstimate]:
        wrong = self._wrong(model_version)
        return self._interval(model_version, len(wrong), len(wrong) - sum(wrong.values()))

    def estimate_recent(self, model_version: str) -> Optional[AccuracyEstimate]:
        """The same over the version's last ``recent`` joined rows."""
        last = list(islice(reversed(self._wrong(model_version).values()), self.recent))
        return self._interval(model_version, len(last), len(last) - sum(last))

    def _wrong(self, model_version: str) -> dict[str, bool]:
        rows = self.rows.versions.get(model_version)
        return {} if rows is None else rows.wrong

    def _interval(self, model_version: str, n: int, correct: int) -> Optional[AccuracyEstimate]:
        if not n:
            return None
        bounds = (wilson_interval if self.interval == "wilson" else clopper_pearson_interval)(correct, n, self.confidence)
        return AccuracyEstimate(model_version, n, correct, correct / n, bounds[0], bounds[1])

    def versions(self) -> list[str]:
        """The versions with an audit joined to a label (now or before: their rows may be withdrawn)."""
        return list(self.rows.versions)

    def estimates(self) -> list[AccuracyEstimate]:
        return [e for v in self.rows.versions if (e := self.estimate(v)) is not None]
