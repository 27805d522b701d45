"""Model hot-swaps: per-class state follows the class set; decide() never indexes past it."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from triage.metrics import PolicyMetrics
from triage.policies import RuleSnapshot, make_policy, policy_from_manifest
from triage.policies.review_rate import RateController
from triage.policies.stack import PolicyStack
from triage.scoring.routing import CONFIDENT, NOT_HELD, UNCERTAIN, PolicySnapshot
from triage.scoring.scores import Scores, scores_from_probs
from triage.settings import PolicySettings


def _hygiene() -> PolicySettings:
    return PolicySettings(uncertainty_threshold=0.3, dedupe_window=200, review_class_quota=0.5)


@dataclass
class _Model:
    version: str
    classes: tuple[str, ...]
    manifest: dict[str, Any] = field(default_factory=dict)


def _model(version: str, n_classes: int, routing: Optional[dict[str, Any]] = None) -> _Model:
    return _Model(version, tuple(f"c{i}" for i in range(n_classes)), {"routing": routing} if routing else {})


def _uncertain(predicted: np.ndarray, n_classes: int, n_features: int = 8, seed: int = 0) -> Scores:
    """Review-bound rows (uncertain), distinct features, the given predicted classes."""
    probs = np.full((len(predicted), n_classes), 0.4 / (n_classes - 1))
    probs[np.arange(len(predicted)), predicted] = 0.6
    X = np.random.default_rng(seed).normal(0, 10, (len(predicted), n_features))
    return scores_from_probs(probs, "margin", X=X)


def test_swap_to_more_classes_and_back_with_hygiene_on() -> None:
    p = make_policy(_hygiene(), _model("v3", 3))
    d = p.decide(_uncertain(np.arange(300) % 3, 3))
    assert d.review.any()

    p.on_model(_model("v5", 5))  # ClassMix was sized 3: classes 3 and 4 used to raise IndexError
    predicted = np.arange(300) % 5
    d = p.decide(_uncertain(predicted, 5, seed=1))
    assert d.review[predicted == 4].any() and ((d.reason != CONFIDENT) | (d.hold != NOT_HELD)).all()

    p.on_model(_model("v3b", 3))
    d = p.decide(_uncertain(np.arange(90) % 3, 3, seed=2))
    assert len(d.reason) == 90 and d.review.any()
    snap = p.snapshot()
    assert isinstance(snap, PolicySnapshot) and snap.policy == "threshold" and snap.gate_open
    PolicyMetrics(CollectorRegistry()).update(snap, p.drain_suppressed())


def test_decide_resizes_when_classes_change_without_a_swap() -> None:
    p = policy_from_manifest(None, _hygiene())  # classes unknown
    p.decide(_uncertain(np.arange(60) % 2, 2))
    d = p.decide(_uncertain(np.arange(60) % 6, 6, seed=1))
    assert d.review.any()
    d = p.decide(_uncertain(np.zeros(20, int), 6, n_features=3, seed=2))  # fewer features too
    assert len(d.reason) == 20


def _class0_priority_after_swap(same_classes: bool) -> float:
    """Priority over informativeness of a class-0 request after many class-0 ones and a swap."""
    p = make_policy(PolicySettings(uncertainty_threshold=0.3, review_class_quota=1.0), _model("v1", 3))
    p.decide(_uncertain(np.zeros(100, int), 3))  # class 0 fills the recent review slots
    swapped = _model("v2", 3)
    if not same_classes:
        swapped.classes = ("x", "y", "z")
    p.on_model(swapped)
    scores = _uncertain(np.zeros(1, int), 3, seed=1)
    return float(p.decide(scores).priority[0] / scores.uncertainty[0])


def test_same_class_set_keeps_the_class_mix_and_another_resets_it() -> None:
    # Kept: class 0 is all of the recent requests, diversity 1/3 -> x (0.5 + 0.5/3).
    assert _class0_priority_after_swap(same_classes=True) == pytest.approx(0.5 + 0.5 / 3)
    # Reset: the counts were about other classes; the request is as diverse as can be.
    assert _class0_priority_after_swap(same_classes=False) == pytest.approx(1.0)


def test_mondrian_thresholds_for_another_class_count_accept_nothing(caplog: pytest.LogCaptureFixture) -> None:
    s = PolicySettings(policy="risk", risk_mondrian=True)
    routing = {"acquisition": s.acquisition,
               "risk": {"alpha": s.risk_alpha, "delta": s.risk_delta, "mondrian": True,
                        "threshold": 0.2, "thresholds": [0.2, 0.3, 0.4], "coverage": 0.8}}
    p = make_policy(s, _model("v1", 3, routing))
    sure = scores_from_probs(np.tile([[0.98, 0.01, 0.01]], (10, 1)), s.acquisition)
    assert p.decide(sure).accepted.all()
    assert p.snapshot().risk_thresholds == (0.2, 0.3, 0.4)

    p.on_model(_model("v2", 5, routing))  # a manifest certified for 3 classes, a 5-class model
    five = np.full((10, 5), 0.005)
    five[:, 4] = 0.98
    with caplog.at_level(logging.ERROR, logger="triage.policy"):
        d = p.decide(scores_from_probs(five, s.acquisition))
    assert not d.accepted.any() and (d.reason == UNCERTAIN).all()
    assert any("certified for 3 classes" in r.message for r in caplog.records)
    assert p.snapshot().risk_threshold == -1.0 and p.snapshot().risk_thresholds is None


def test_metrics_drop_per_class_thresholds_of_a_previous_class_set() -> None:
    reg = CollectorRegistry()
    m = PolicyMetrics(reg)
    base = PolicySnapshot(policy="risk", tau=np.inf, review_rate_observed=0.1, coverage_stream=0.9, gate_open=True,
                          budget_conflict=False, risk_alpha=0.05, risk_threshold=0.1)
    m.update(dataclasses.replace(base, risk_thresholds=(0.1, 0.2, 0.3)), {})
    assert reg.get_sample_value("triage_risk_threshold", {"class": "2"}) == 0.3
    m.update(dataclasses.replace(base, risk_thresholds=(0.4, 0.5)), {})
    assert reg.get_sample_value("triage_risk_threshold", {"class": "2"}) is None
    assert reg.get_sample_value("triage_risk_threshold", {"class": "all"}) == 0.1


class _ClassOneToReview:
    """A rule the stack has never heard of: it composes like the built-in ones."""

    name = "class-one"
    requires_routing = False

    def on_routing(self, routing: Any, version: str) -> None:
        pass

    def forced(self, scores: Scores) -> np.ndarray:
        return np.asarray(scores.predicted == 1, dtype=bool)

    def threshold(self, window: RateController) -> float:
        return np.inf

    def snapshot(self, budget_rate: Optional[float]) -> RuleSnapshot:
        return RuleSnapshot()


def test_the_stack_takes_any_rule() -> None:
    p = PolicyStack(PolicySettings(), _ClassOneToReview())
    d = p.decide(scores_from_probs(np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4]]), "margin"))
    assert d.review.tolist() == [False, True, False]
    assert p.snapshot().policy == "class-one"
