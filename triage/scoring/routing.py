"""Routing decisions as values, and the one protocol every routing policy implements.

A policy looks at a batch of scores and returns ``Decisions``; it sends nothing.
Its only randomness (audit sampling) comes from a seeded generator. This module is a leaf
(numpy only) so the scorer, the handlers and the metrics can all name these types without
pulling in the policy implementations (``triage.policies``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Optional, Protocol

import numpy as np

if TYPE_CHECKING:
    from triage.scoring.scores import Scores

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
    annotators: Optional[np.ndarray] = None  # (N,) int8: people a review request asks for (None: 1 each)

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


class ModelInfo(Protocol):
    """What a policy needs of a model version (``triage.scoring.servable.ServingModel`` fits)."""

    @property
    def version(self) -> str: ...

    @property
    def classes(self) -> tuple[str, ...]: ...

    @property
    def manifest(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class PolicySnapshot:
    """Policy state after a batch, for the metrics (``triage.metrics.PolicyMetrics``).

    None means "not applicable to this policy / not known yet"; the metrics choose defaults.
    """

    policy: str  # the base rule's name (informational: nothing branches on it)
    tau: float  # the optional-review uncertainty threshold used for the last batch
    review_rate_observed: float  # share of the recent window sent to review
    coverage_stream: float  # share of the recent window auto-accepted
    gate_open: bool
    budget_conflict: bool  # forced reviews alone exceed what annotators can absorb
    review_rate_target: Optional[float] = None  # review-rate rule, after the budget cap
    coverage_holdout: Optional[float] = None  # risk rule: certified on held-out rows
    risk_alpha: Optional[float] = None
    risk_threshold: Optional[float] = None  # risk rule: -1 = accept nothing
    risk_thresholds: Optional[tuple[float, ...]] = None  # risk rule, Mondrian: per class index
    ece_before: Optional[float] = None
    ece_after: Optional[float] = None
    budget_max_rate: Optional[float] = None
    backlog: Optional[float] = None


class RoutingPolicy(Protocol):
    """Everything the scorer calls on its policy; every policy implements all of it."""

    def decide(self, scores: Scores) -> Decisions:
        """Route one batch."""
        ...

    def on_model(self, model: ModelInfo) -> None:
        """A new model version is being served from the next batch on."""
        ...

    def feed_backlog(self, backlog: float) -> None:
        """Review requests produced minus labels received (backlog watcher thread)."""
        ...

    def set_live_risk(self, version: str, doc: dict[str, Any]) -> None:
        """The audit consumer's live-certified risk threshold for ``version`` (between batches)."""
        ...

    def snapshot(self) -> PolicySnapshot:
        """State to export after a batch."""
        ...

    def drain_suppressed(self) -> dict[str, int]:
        """Review requests withheld since the last call, by reason (then forgotten)."""
        ...
