from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from triage.errors import ConfigError
from triage.policies import RULES, make_policy
from triage.scoring.routing import AUDIT, CONFIDENT, OUTLIER, REASONS, UNCERTAIN, PolicySnapshot, RoutingPolicy
from triage.scoring.scores import Scores
from triage.settings import PolicySettings


def _scores(uncertainty: list[float], outlier: list[float]) -> Scores:
    n = len(uncertainty)
    u = np.array(uncertainty)
    return Scores(
        probs=np.full((n, 2), 0.5), predicted=np.zeros(n, int), confidence=1 - u, margin=1 - u,
        entropy=u, uncertainty=u, outlier=np.array(outlier, dtype=float),
    )


def _threshold(threshold: float, **kw: Any) -> RoutingPolicy:
    """What the old ThresholdPolicy was: the stack with the threshold rule, no model yet."""
    return make_policy(PolicySettings(uncertainty_threshold=threshold, **kw))


def test_outlier_beats_uncertain_beats_confident() -> None:
    d = _threshold(0.5).decide(_scores([0.1, 0.9, 0.1, 0.9], [0.2, 0.2, 3.0, 3.0]))
    assert d.reason.tolist() == [CONFIDENT, UNCERTAIN, OUTLIER, OUTLIER]
    assert d.review.tolist() == [False, True, True, True]
    assert REASONS[AUDIT] == "audit"


def test_nan_outlier_means_detection_off() -> None:
    d = _threshold(0.5).decide(_scores([0.1, 0.9], [np.nan, np.nan]))
    assert d.reason.tolist() == [CONFIDENT, UNCERTAIN]


def test_priority_orders_by_informativeness() -> None:
    d = _threshold(0.5).decide(_scores([0.6, 0.95, 0.1], [0.1, 0.1, 0.1]))
    assert d.priority[1] > d.priority[0] > d.priority[2]


def test_audit_is_seeded_and_only_on_accepted() -> None:
    s = _scores([0.1] * 1000 + [0.9] * 1000, [0.1] * 2000)
    a = _threshold(0.5, audit_rate=0.1, seed=7).decide(s).audit
    b = _threshold(0.5, audit_rate=0.1, seed=7).decide(s).audit
    assert (a == b).all()
    assert not a[1000:].any()
    assert 50 < a[:1000].sum() < 150


class _Model:
    version = "v1"
    classes = ("a", "b")
    manifest: dict[str, Any] = {}


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_policy_implements_the_whole_protocol(name: str) -> None:
    routing = {"acquisition": "margin", "risk": {"alpha": 0.05, "delta": 0.1, "mondrian": False, "threshold": 0.5}}
    model = _Model()
    model.manifest = {"routing": routing}
    p: RoutingPolicy = make_policy(PolicySettings(policy=name), model)
    d = p.decide(_scores([0.1, 0.9], [0.1, 5.0]))
    assert d.reason.tolist()[1] == OUTLIER and len(d.priority) == len(d.audit) == 2
    p.on_model(model)
    p.feed_backlog(3.0)
    snap = p.snapshot()
    assert isinstance(snap, PolicySnapshot) and snap.policy == name
    assert p.drain_suppressed() == {}


def test_no_model_yet_follows_the_configured_rule() -> None:
    with pytest.raises(ConfigError, match="--policy risk needs held-out labels"):
        make_policy(PolicySettings(policy="risk"))
    assert make_policy(PolicySettings(policy="review-rate")).snapshot().review_rate_target is not None
