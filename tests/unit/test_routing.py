from __future__ import annotations

import numpy as np

from triage.routing import AUDIT, CONFIDENT, OUTLIER, REASONS, UNCERTAIN, ThresholdPolicy
from triage.scoring import Scores


def _scores(uncertainty: list[float], outlier: list[float]) -> Scores:
    n = len(uncertainty)
    u = np.array(uncertainty)
    return Scores(
        probs=np.full((n, 2), 0.5), predicted=np.zeros(n, int), confidence=1 - u, margin=1 - u,
        entropy=u, uncertainty=u, outlier=np.array(outlier, dtype=float),
    )


def test_outlier_beats_uncertain_beats_confident() -> None:
    d = ThresholdPolicy(0.5).decide(_scores([0.1, 0.9, 0.1, 0.9], [0.2, 0.2, 3.0, 3.0]))
    assert d.reason.tolist() == [CONFIDENT, UNCERTAIN, OUTLIER, OUTLIER]
    assert d.review.tolist() == [False, True, True, True]
    assert REASONS[AUDIT] == "audit"


def test_nan_outlier_means_detection_off() -> None:
    d = ThresholdPolicy(0.5).decide(_scores([0.1, 0.9], [np.nan, np.nan]))
    assert d.reason.tolist() == [CONFIDENT, UNCERTAIN]


def test_priority_orders_by_informativeness() -> None:
    d = ThresholdPolicy(0.5).decide(_scores([0.6, 0.95, 0.1], [0.1, 0.1, 0.1]))
    assert d.priority[1] > d.priority[0] > d.priority[2]


def test_audit_is_seeded_and_only_on_accepted() -> None:
    s = _scores([0.1] * 1000 + [0.9] * 1000, [0.1] * 2000)
    a = ThresholdPolicy(0.5, audit_rate=0.1, seed=7).decide(s).audit
    b = ThresholdPolicy(0.5, audit_rate=0.1, seed=7).decide(s).audit
    assert (a == b).all()
    assert not a[1000:].any()
    assert 50 < a[:1000].sum() < 150
