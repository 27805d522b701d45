"""Routing decisions as values: which samples go to review, why, and how urgently.

A policy looks at a batch of scores and returns ``Decisions``; it sends nothing.
Its only randomness (audit sampling) comes from a seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

import numpy as np

from triage.scoring import Scores

REASONS = ("confident", "uncertain", "outlier", "audit", "gate")
CONFIDENT, UNCERTAIN, OUTLIER, AUDIT, GATE = range(5)
# Why a sample that is not auto-accepted is published to predictions marked
# ``provisional: true`` instead of going to review (0 = it is not).
HOLDS = ("", "gate", "near_duplicate", "class_quota")
NOT_HELD, HELD_GATE, HELD_DUPLICATE, HELD_QUOTA = range(4)


@dataclass(frozen=True)
class Decisions:
    reason: np.ndarray  # (N,) int8 index into REASONS; CONFIDENT means auto-accepted
    priority: np.ndarray  # (N,) float, higher = review sooner
    audit: np.ndarray  # (N,) bool: auto-accepted AND copied to review as an audit sample
    hold: Optional[np.ndarray] = None  # (N,) int8 into HOLDS; nonzero = provisional prediction

    @property
    def review(self) -> np.ndarray:
        if self.hold is None:
            return self.reason != CONFIDENT
        return (self.reason != CONFIDENT) & (self.hold == NOT_HELD)

    @property
    def accepted(self) -> np.ndarray:
        """Auto-accepted: published as a plain (not provisional) prediction."""
        if self.hold is None:
            return self.reason == CONFIDENT
        return (self.reason == CONFIDENT) & (self.hold == NOT_HELD)


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
