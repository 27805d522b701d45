"""Realized accuracy of auto-accepted predictions, from the random audit slice.

``AuditSampler`` draws the slice in the scorer; ``AuditEstimator`` reads it back.

Audit samples are a uniformly random share of the *accepted* predictions, copied to review
with reason ``audit``. Joining their human labels to the audited prediction gives an
unbiased estimate of the accuracy of what went downstream, per model version, with an exact
(Clopper-Pearson) or Wilson interval. Pure: records in, numbers out. Memory is bounded: at most
``max_pending`` unmatched audits and labels are kept (oldest forgotten first, counted).
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np

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
    def __init__(self, *, confidence: float = 0.95, interval: Interval = "clopper-pearson",
                 max_pending: int = 100_000, recent: int = 200) -> None:
        self.confidence = confidence
        self.interval = interval
        self.max_pending = max_pending
        # The last ``recent`` outcomes per version: a version that served well for long hides a
        # concept shift in its cumulative count (its last labels show it ~6x sooner: bench/monitoring.py).
        self._recent: dict[str, deque[int]] = {}
        self.recent = recent
        self._audits: OrderedDict[str, tuple[str, str]] = OrderedDict()  # id -> (version, predicted)
        self._labels: OrderedDict[str, str] = OrderedDict()  # labels seen before their audit
        self._counts: dict[str, list[int]] = {}  # version -> [n, correct]
        self.forgotten = 0

    def add_audit(self, sample_id: str, model_version: str, predicted: str) -> None:
        label = self._labels.pop(sample_id, None)
        if label is not None:
            self._join(model_version, predicted, label)
            return
        self._audits[sample_id] = (model_version, predicted)
        self._trim(self._audits)

    def add_label(self, sample_id: str, label: str) -> Optional[str]:
        """Feed a human label; returns the model version it was scored against, if joined."""
        audit = self._audits.pop(sample_id, None)
        if audit is None:
            self._labels[sample_id] = label  # the audit record may still be on its way
            self._trim(self._labels)
            return None
        self._join(audit[0], audit[1], label)
        return audit[0]

    def _join(self, version: str, predicted: str, label: str) -> None:
        n_correct = self._counts.setdefault(version, [0, 0])
        n_correct[0] += 1
        n_correct[1] += int(predicted == label)
        self._recent.setdefault(version, deque(maxlen=self.recent)).append(int(predicted == label))

    def _trim(self, d: OrderedDict) -> None:  # type: ignore[type-arg]
        while len(d) > self.max_pending:
            d.popitem(last=False)
            self.forgotten += 1

    def estimate(self, model_version: str) -> Optional[AccuracyEstimate]:
        n, correct = self._counts.get(model_version, (0, 0))
        return self._interval(model_version, n, correct)

    def estimate_recent(self, model_version: str) -> Optional[AccuracyEstimate]:
        """The same over the version's last ``recent`` labelled audits."""
        outcomes = self._recent.get(model_version, ())
        return self._interval(model_version, len(outcomes), sum(outcomes))

    def _interval(self, model_version: str, n: int, correct: int) -> Optional[AccuracyEstimate]:
        if not n:
            return None
        bounds = (wilson_interval if self.interval == "wilson" else clopper_pearson_interval)(correct, n, self.confidence)
        return AccuracyEstimate(model_version, n, correct, correct / n, bounds[0], bounds[1])

    def estimates(self) -> list[AccuracyEstimate]:
        return [e for v in self._counts if (e := self.estimate(v)) is not None]
