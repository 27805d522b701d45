"""Base rule ``threshold``: a fixed uncertainty threshold (``uncertainty_threshold``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np

from triage.policies.base import RuleSnapshot, Routing
from triage.settings import PolicySettings

if TYPE_CHECKING:
    from triage.policies.review_rate import RateController
    from triage.scoring.scores import Scores


class ThresholdRule:
    name = "threshold"
    requires_routing = False

    def __init__(self, policy: PolicySettings) -> None:
        self.tau = float(policy.uncertainty_threshold)

    def on_routing(self, routing: Routing, version: str) -> None:
        pass  # nothing fitted per version

    def forced(self, scores: Scores) -> np.ndarray:
        return np.zeros(len(scores), dtype=bool)

    def threshold(self, window: RateController) -> float:
        return self.tau

    def snapshot(self, budget_rate: Optional[float]) -> RuleSnapshot:
        return RuleSnapshot()
