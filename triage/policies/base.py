"""The base-rule strategy the policy stack composes (threshold, review-rate, risk).

A base rule decides two things per batch: which rows it refuses to auto-accept whatever their
uncertainty (``forced``), and the uncertainty threshold above which the rest goes to review
(``threshold``). Budget, gate, audit and hygiene are the stack's, the same for every rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Optional, Protocol

import numpy as np

if TYPE_CHECKING:
    from triage.policies.review_rate import RateController
    from triage.scoring.scores import Scores

Routing = Mapping[str, Any]  # a model version's fitted ``routing`` manifest section ({} = none)


@dataclass(frozen=True)
class RuleSnapshot:
    """A rule's share of ``triage.scoring.routing.PolicySnapshot`` (None = not this rule's concern)."""

    review_rate_target: Optional[float] = None
    coverage_holdout: Optional[float] = None
    risk_alpha: Optional[float] = None
    risk_threshold: Optional[float] = None
    risk_thresholds: Optional[tuple[float, ...]] = None


class BaseRule(Protocol):
    @property
    def name(self) -> str:
        """For logs and the snapshot only; nothing branches on it."""
        ...

    @property
    def requires_routing(self) -> bool:
        """Accepts nothing without fitted parameters (starting so is a configuration error)."""
        ...

    def on_routing(self, routing: Routing, version: str) -> None:
        """Load a model version's fitted parameters (called for every version served)."""
        ...

    def forced(self, scores: Scores) -> np.ndarray:
        """(N,) bool: rows never auto-accepted by this rule (outliers are the stack's)."""
        ...

    def threshold(self, window: RateController) -> float:
        """Uncertainty above which non-forced rows go to review. ``window`` already holds this
        batch (its uncertainties and forced mask) and answers rate quantiles."""
        ...

    def snapshot(self, budget_rate: Optional[float]) -> RuleSnapshot:
        """``budget_rate``: the review rate the annotation budget allows now (None = no cap)."""
        ...
