"""Review-queue hygiene: near-duplicates and quotas are withheld from review, published as
provisional predictions (never dropped) and counted; priority mixes in diversity."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from sklearn.datasets import load_digits

from triage.contracts import Sample
from triage.scoring.handlers import BatchConfig, _encode_outputs
from triage.policies import policy_from_manifest
from triage.scoring.routing import HELD_DUPLICATE, HELD_QUOTA, NOT_HELD
from triage.scoring.scores import scores_from_probs
from triage.settings import PolicySettings, Settings


def _uncertain_scores(X: np.ndarray, predicted: np.ndarray) -> Any:
    probs = np.full((len(X), 10), 0.05)
    probs[np.arange(len(X)), predicted] = 0.55  # everything is uncertain -> review-bound
    return scores_from_probs(probs, "margin", X=X)


def _settings(**kw: Any) -> PolicySettings:
    return PolicySettings(uncertainty_threshold=0.3, **kw)


def _routing(X: np.ndarray) -> dict[str, Any]:
    return {"features": {"mean": X.mean(axis=0).tolist(), "scale": X.std(axis=0).tolist()}}


def test_duplicates_suppressed_counted_and_published_once() -> None:
    X, y = load_digits(return_X_y=True)
    distinct = X[:300]
    rng = np.random.default_rng(0)
    repeats = distinct[rng.integers(0, 300, 100)] + rng.normal(0, 0.1, (100, 64))  # jittered copies
    stream = np.vstack([distinct, repeats])
    predicted = np.r_[y[:300], np.zeros(100, int)]
    policy = policy_from_manifest(_routing(X), _settings(dedupe_window=1000))
    d = policy.decide(_uncertain_scores(stream, predicted))
    dup = d.hold == HELD_DUPLICATE
    assert dup[300:].mean() >= 0.95, "jittered repeats of recent review requests must be suppressed"
    assert dup[:300].mean() <= 0.02, "distinct digits must (almost) never be called duplicates"
    assert policy.drain_suppressed() == {"near_duplicate": int(dup.sum())}
    assert policy.drain_suppressed() == {}
    # Exactly one primary output per sample: suppressed ones become provisional predictions.
    samples = [Sample(id=f"s{i}", features=stream[i].tolist()) for i in range(len(stream))]

    class _Model:
        classes = tuple(str(c) for c in range(10))
        version = "v1"

    s = Settings(uncertainty_threshold=0.3)  # type: ignore[call-arg]
    outs = _encode_outputs(samples, list(range(len(stream))), stream, _uncertain_scores(stream, predicted), d,
                           _Model(), BatchConfig.of(s.serving, s.policy, s.topics))  # type: ignore[arg-type]
    assert len(outs) == len(stream)
    preds = [json.loads(o.value) for o in outs if o.topic == "triage.predictions"]
    assert len(preds) == dup.sum()
    assert all(p["provisional"] is True and p["provisional_reason"] == "near_duplicate"
               and p["review_reason"] == "uncertain" for p in preds)
    assert {o.reason for o in outs if o.topic == "triage.predictions"} == {"near_duplicate"}


def test_duplicate_window_forgets() -> None:
    X, y = load_digits(return_X_y=True)
    policy = policy_from_manifest(_routing(X), _settings(dedupe_window=50))
    first = policy.decide(_uncertain_scores(X[:1], y[:1]))
    assert first.hold[0] == NOT_HELD
    policy.decide(_uncertain_scores(X[100:300], y[100:300]))  # pushes the first out of the window
    again = policy.decide(_uncertain_scores(X[:1], y[:1]))
    assert again.hold[0] == NOT_HELD


def test_class_quota_lets_rare_classes_through() -> None:
    X, y = load_digits(return_X_y=True)
    predicted = np.where(np.arange(600) % 10 == 0, 1, 0)  # 90% of requests are class 0
    policy = policy_from_manifest(None, _settings(review_class_quota=0.5))
    d = policy.decide(_uncertain_scores(X[:600], predicted))
    sent = d.review
    assert sent[predicted == 1].all(), "the rare class is never held back"
    share0 = (sent & (predicted == 0)).sum() / sent.sum()
    assert share0 < 0.9  # without the quota it would be 0.9
    assert (sent & (predicted == 0)).sum() <= 0.5 * 600 + 20  # at most ~half of the review slots
    assert (d.hold == HELD_QUOTA).sum() == policy.drain_suppressed()["class_quota"] > 0


def test_priority_prefers_under_represented_classes() -> None:
    X, _ = load_digits(return_X_y=True)
    predicted = np.r_[np.zeros(200, int), [0, 7]]
    policy = policy_from_manifest(None, _settings(review_class_quota=1.0))
    d = policy.decide(_uncertain_scores(X[:202], predicted))
    # Same informativeness; the class-7 request comes after 200 class-0 ones: it ranks higher.
    assert d.priority[201] > d.priority[200]
