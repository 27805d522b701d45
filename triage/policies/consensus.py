"""How many annotators each review request of a batch asks for (a policy step, pure).

Within a batch's uncertain and outlier requests, ranked by their final priority (highest first),
the first ``quality.consensus_share`` get ``quality.consensus_size`` annotators and the rest one
(``triage.quality.consensus.ConsensusPolicy.planned``: the simulator measures the same rule).

Gate requests and audit copies get one. An audit label checks a prediction the model was
confident about, so people rarely disagree on it. Its job is an unbiased error estimate of the
auto-accepted stream, and a second person on every audit would double the cost of that estimate
without making it any more unbiased. Disagreement that does show up is the retrain job's to
settle (tiebreak).

The budget counts human actions, not requests: ``ActionsPerRequest`` follows how many
annotators a review request has asked for lately, so the stack can turn the budget's allowed
action rate into the request rate it caps tau with.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from triage.quality.consensus import ConsensusPolicy
from triage.scoring.routing import OUTLIER, UNCERTAIN
from triage.settings import QualitySettings

DECAY = 0.98  # per batch: the ratio follows about the last 50 batches
PRIOR_REQUESTS = 20.0  # the plan's expectation counts as this many requests, decaying like the rest


def consensus_policy(quality: QualitySettings) -> ConsensusPolicy:
    return ConsensusPolicy(quality.consensus_share, quality.consensus_size, quality.consensus_tiebreak,
                           quality.consensus_max_annotators, quality.consensus_doubt_below)


class AnnotatorPlanner:
    """Annotators per row of a routed batch (1 for every row that is not a consensus pick)."""

    def __init__(self, policy: Optional[ConsensusPolicy]) -> None:
        # None or a share of 0: one annotator each, today's behaviour
        self.policy = policy if policy is not None and policy.share > 0 and policy.size > 1 else None

    @property
    def expected(self) -> float:
        """Annotators per uncertain/outlier request the plan aims at (before batch rounding)."""
        return 1.0 if self.policy is None else 1.0 + self.policy.share * (self.policy.size - 1)

    def plan(self, reason: np.ndarray, review: np.ndarray, priority: np.ndarray) -> np.ndarray:
        """(N,) int8: ``size`` for the top ``share`` of the review rows with reason uncertain or
        outlier (by priority, ties in row order), 1 for every other row."""
        out = np.ones(len(reason), dtype=np.int8)
        if self.policy is None:
            return out
        eligible = np.flatnonzero(review & ((reason == UNCERTAIN) | (reason == OUTLIER)))
        if not len(eligible):
            return out
        ranked = eligible[np.argsort(-priority[eligible], kind="stable")]
        counts = [self.policy.planned(rank, len(ranked)) for rank in range(len(ranked))]
        out[ranked] = counts
        return out


class ActionsPerRequest:
    """Human actions per review request, recently: a decayed ratio of the annotators asked for
    over the requests sent, starting from the plan's expectation. Pure; fed once per batch."""

    def __init__(self, expected: float) -> None:
        self.expected = float(expected)
        self.actions = self.expected * PRIOR_REQUESTS
        self.requests = PRIOR_REQUESTS

    def record(self, annotators: np.ndarray, review: np.ndarray) -> None:
        self.actions = DECAY * self.actions + float(annotators[review].sum())
        self.requests = DECAY * self.requests + float(review.sum())

    @property
    def ratio(self) -> float:
        return self.actions / self.requests

