"""The promotion gate's significance test: a drop counts only when McNemar shows it."""

from __future__ import annotations

import numpy as np
import pytest

from triage.lifecycle.retraining import Disagreement, promotion_verdict


def _splits(holdout: float, combined: float) -> dict[str, dict[str, float]]:
    return {"holdout": {"accuracy": holdout}, "combined": {"accuracy": combined}}


def test_p_value_is_the_exact_binomial_tail() -> None:
    assert Disagreement(0, 0).p_worse() == 1.0
    assert Disagreement(0, 5).p_worse() == pytest.approx(0.5**5)
    assert Disagreement(5, 0).p_worse() == 1.0
    assert Disagreement(3, 3).p_worse() == pytest.approx(42 / 64)


def test_a_small_drop_on_few_disagreements_is_not_a_regression() -> None:
    d = {"holdout": Disagreement(0, 1), "combined": Disagreement(2, 4)}
    verdict = promotion_verdict(_splits(0.75, 0.90), _splits(1.0, 0.92), 0.0, d, 0.05)
    assert verdict.promote
    assert not promotion_verdict(_splits(0.75, 0.90), _splits(1.0, 0.92), 0.0).promote  # without the test


def test_a_clear_regression_is_still_rejected_and_the_reason_says_why() -> None:
    d = {"holdout": Disagreement(1, 12), "combined": Disagreement(2, 20)}
    verdict = promotion_verdict(_splits(0.70, 0.80), _splits(0.92, 0.95), 0.0, d, 0.05)
    assert not verdict.promote and verdict.worse == ("holdout", "combined")
    assert "McNemar p=" in verdict.reason


def test_of_counts_each_side() -> None:
    cand = np.array([True, True, False, False, True])
    cur = np.array([True, False, True, True, False])
    assert Disagreement.of(cand, cur) == Disagreement(2, 2)
