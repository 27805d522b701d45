"""The acceptable-performance gate and the annotation-budget controller."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

from triage.policies import policy_from_manifest
from triage.policies.budget import BudgetController
from triage.policies.gate import evaluate_gate
from triage.scoring.routing import CONFIDENT, GATE, HELD_GATE, OUTLIER, UNCERTAIN
from triage.scoring.scores import scores_from_probs
from triage.settings import PolicySettings


def _settings(**kw: Any) -> PolicySettings:
    return PolicySettings(**kw)


def _scores(n: int = 100, uncertain: int = 10, outliers: int = 5) -> Any:
    probs = np.tile([[0.98, 0.01, 0.01]], (n, 1))
    probs[:uncertain] = [0.4, 0.35, 0.25]
    out = np.zeros(n)
    out[uncertain:uncertain + outliers] = 3.0
    return scores_from_probs(probs, "margin", outlier=out)


GOOD = {"holdout": {"accuracy": 0.97}, "risk": {"alpha": 0.05, "coverage": 0.9}}
BAD = {"holdout": {"accuracy": 0.80}, "risk": {"alpha": 0.05, "coverage": 0.3}}


def test_gate_evaluation() -> None:
    assert evaluate_gate(None, min_accuracy=None, min_coverage=None).open
    assert evaluate_gate(GOOD, min_accuracy=0.95, min_coverage=0.8).open
    closed = evaluate_gate(BAD, min_accuracy=0.95, min_coverage=0.8)
    assert not closed.open and "0.8000 < gate_min_accuracy" in closed.why and "coverage" in closed.why
    assert not evaluate_gate(None, min_accuracy=0.5, min_coverage=None).open  # unverifiable -> closed


def test_closed_gate_sends_everything_to_review() -> None:
    p = policy_from_manifest(BAD, _settings(gate_min_accuracy=0.95, audit_rate=0.5))
    d = p.decide(_scores())
    assert not d.accepted.any() and not d.audit.any()
    assert (d.reason[15:] == GATE).all() and (d.reason[:10] == UNCERTAIN).all() and (d.reason[10:15] == OUTLIER).all()
    assert p.snapshot().gate_open is False


def test_closed_gate_provisional_mode_publishes_marked_predictions() -> None:
    p = policy_from_manifest(BAD, _settings(gate_min_accuracy=0.95, gate_mode="provisional"))
    d = p.decide(_scores())
    assert not d.accepted.any()
    assert (d.hold[15:] == HELD_GATE).all() and (d.reason[15:] == CONFIDENT).all()
    assert d.review[:15].all()  # uncertain and outliers still go to review
    assert p.drain_suppressed() == {}  # gate holds are not review suppressions


def test_gate_opens_per_version_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    p = policy_from_manifest(BAD, _settings(gate_min_accuracy=0.95), version="v1")

    class _Model:
        version = "v2"
        classes = ("a", "b", "c")
        manifest = {"routing": GOOD}

    with caplog.at_level(logging.INFO, logger="triage.policy"):
        p.on_model(_Model())
    assert p.gate.open and p.decide(_scores()).accepted[15:].all()
    assert any("gate OPEN for model v2" in r.message for r in caplog.records)


def test_budget_lowers_review_rate_when_annotators_fall_behind() -> None:
    b = BudgetController(capacity_per_hour=360, backlog_hours=1.0)
    for t in range(0, 601, 10):
        b.observe_samples(100, float(t))  # 10 samples/s = 36000/h
    assert b.max_rate() is None  # backlog unknown yet: unconstrained
    b.feed_backlog(0)
    relaxed = b.max_rate()
    b.feed_backlog(600)  # 1h40 of work queued
    tight = b.max_rate()
    assert relaxed == pytest.approx(720 / 36000, rel=0.05)
    assert tight == pytest.approx(120 / 36000, rel=0.05) and tight < relaxed


def test_budget_caps_threshold_policy_but_never_forced_reviews(caplog: pytest.LogCaptureFixture) -> None:
    clock = iter(np.arange(0, 10_000, 1.0)).__next__
    s = _settings(annotation_capacity=360, uncertainty_threshold=0.5, review_rate_window=500)
    from triage.policies.stack import PolicyStack
    from triage.policies.threshold import ThresholdRule

    p = PolicyStack(s, ThresholdRule(s), clock=clock)
    p.feed_backlog(5000)  # far behind: allowed inflow 0
    rng = np.random.default_rng(0)
    with caplog.at_level(logging.WARNING, logger="triage.policy"):
        for _ in range(20):
            probs = rng.dirichlet([1, 1, 1], size=100)
            out = np.where(rng.random(100) < 0.05, 3.0, 0.0)
            d = p.decide(scores_from_probs(probs, "margin", outlier=out))
    assert d.review[out > 1].all(), "outliers are never capped by the budget"
    assert d.review.mean() <= 0.15  # the budget removed the optional uncertain reviews
    assert p.snapshot().budget_conflict is True
    conflicts = [r for r in caplog.records if "BUDGET CONFLICT" in r.message]
    assert len(conflicts) == 1  # rate-limited
