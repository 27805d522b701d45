"""Routing decisions as values: which samples go to review, why, and how urgently.

A policy looks at a batch of scores and returns ``Decisions``; it sends nothing.
Its only randomness (audit sampling) comes from a seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from triage.scoring import Scores

REASONS = ("confident", "uncertain", "outlier", "audit")
CONFIDENT, UNCERTAIN, OUTLIER, AUDIT = range(4)


@dataclass(frozen=True)
class Decisions:
    reason: np.ndarray  # (N,) int8 index into REASONS; CONFIDENT means auto-accepted
    priority: np.ndarray  # (N,) float, higher = review sooner
    audit: np.ndarray  # (N,) bool: auto-accepted AND copied to review as an audit sample

    @property
    def review(self) -> np.ndarray:
        return self.reason != CONFIDENT


class RoutingPolicy(Protocol):
    def decide(self, scores: Scores) -> Decisions: ...


class ThresholdPolicy:
    """Outliers first, then uncertainty above a fixed threshold; the rest is accepted."""

    def __init__(self, threshold: float, *, audit_rate: float = 0.0, seed: int = 0) -> None:
        self.threshold = threshold
        self.audit_rate = audit_rate
        self._rng = np.random.default_rng(seed)

    def decide(self, scores: Scores) -> Decisions:
        n = len(scores)
        reason = np.full(n, CONFIDENT, dtype=np.int8)
        reason[scores.uncertainty > self.threshold] = UNCERTAIN
        is_outlier = scores.outlier > 1.0  # NaN (detection off) compares False
        reason[is_outlier] = OUTLIER
        accepted = reason == CONFIDENT
        audit = accepted & (self._rng.random(n) < self.audit_rate) if self.audit_rate else np.zeros(n, bool)
        # Informativeness: uncertainty; outliers rank by how far out they are, capped so a
        # wildly corrupt point does not starve the uncertain queue.
        priority = np.where(is_outlier, np.minimum(scores.outlier, 2.0) / 2.0, scores.uncertainty)
        return Decisions(reason=reason, priority=priority.astype(np.float64), audit=audit)
