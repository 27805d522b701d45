"""Review order: the batch's review priorities re-assigned so annotators see a spread first."""

from __future__ import annotations

import numpy as np
import pytest

from triage.policies import make_policy
from triage.policies.review_order import ReviewRanking
from triage.scoring.scores import scores_from_probs
from triage.settings import PolicySettings


def _clustered_batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Forty near-copies of one uncertain sample, plus ten uncertain samples spread out."""
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(0, 0.01, (40, 5)) + 5.0, rng.normal(0, 3.0, (10, 5))])
    probs = np.vstack([np.tile([0.52, 0.48], (40, 1)), np.tile([0.6, 0.4], (10, 1))])
    return X, probs


@pytest.mark.parametrize("order", ["diverse", "badge"])
def test_the_first_requests_are_not_all_near_copies(order: str) -> None:
    X, probs = _clustered_batch()
    scores = scores_from_probs(probs, "margin", X=X)
    priority = scores.uncertainty.astype(np.float64).copy()
    before = np.sort(priority)
    ranked = ReviewRanking(order, seed=0).apply(scores, np.ones(len(X), bool), priority)
    assert ranked is not None and sorted(ranked.tolist()) == list(range(len(X)))  # a permutation
    np.testing.assert_allclose(np.sort(priority), before, atol=1e-6)  # same values, re-assigned
    first = np.argsort(-priority, kind="stable")[:5]
    assert (first >= 40).sum() >= 3  # most uncertain first would show five near-copies


def test_priority_order_changes_nothing() -> None:
    X, probs = _clustered_batch()
    scores = scores_from_probs(probs, "margin", X=X)
    priority = scores.uncertainty.astype(np.float64).copy()
    assert ReviewRanking("priority", seed=0).apply(scores, np.ones(len(X), bool), priority) is None
    np.testing.assert_array_equal(priority, scores.uncertainty)


def test_only_review_rows_are_reordered_by_the_stack() -> None:
    X, probs = _clustered_batch()
    probs[40:] = [0.95, 0.05]  # the spread rows are confident: accepted
    scores = scores_from_probs(probs, "margin", X=X)
    policy = make_policy(PolicySettings(policy="threshold", uncertainty_threshold=0.5, review_order="diverse"))
    decisions = policy.decide(scores)
    assert decisions.review[:40].all() and not decisions.review[40:].any()
    np.testing.assert_allclose(decisions.priority[40:], scores.uncertainty[40:])
    assert len(np.unique(decisions.priority[:40])) == 40  # a strict order among the requests
