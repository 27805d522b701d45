"""The review-rate controller holds its target through an injected drift."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.digits import digits_split
from triage.policies import policy_from_manifest
from triage.policies.review_rate import RateController
from triage.scoring.scores import scores_from_probs
from triage.settings import PolicySettings

TARGET = 0.05
WINDOW = 1000


def _run(policy, clf, X: np.ndarray, batch: int = 50) -> np.ndarray:  # type: ignore[no-untyped-def]
    reviewed = []
    for i in range(0, len(X), batch):
        scores = scores_from_probs(clf.predict_proba(X[i:i + batch]), "margin")
        reviewed.append(policy.decide(scores).review)
    return np.concatenate(reviewed)


@pytest.mark.parametrize("seed", [0, 1])
def test_rate_returns_to_target_after_drift(seed: int) -> None:
    clf, X_cal, _, X_s, _ = digits_split(seed)
    rng = np.random.default_rng(seed)
    pool = np.vstack([X_cal, X_s])
    before = pool[rng.integers(len(pool), size=3000)]
    # Drift: sensor noise makes the model much less sure (fixed thresholds would flood review).
    after = np.clip(pool[rng.integers(len(pool), size=4000)] + rng.normal(0, 4.0, (4000, 64)), 0, 16)
    s = PolicySettings(policy="review-rate", review_rate=TARGET, review_rate_window=WINDOW, seed=seed)
    policy = policy_from_manifest(None, s)
    fixed = policy_from_manifest(None, PolicySettings(policy="threshold", uncertainty_threshold=0.5))
    r = _run(policy, clf, np.vstack([before, after]))
    r_fixed = _run(fixed, clf, np.vstack([before, after]))
    pre = r[WINDOW:3000].mean()
    post = r[3000 + WINDOW:].mean()  # once the window holds only post-drift samples
    drift_fixed = r_fixed[3000:].mean() / max(r_fixed[:3000].mean(), 1e-9)
    print(f"seed {seed}: rate before {pre:.4f}, after drift {post:.4f} (target {TARGET}); "
          f"a fixed threshold's rate changed x{drift_fixed:.1f}")
    assert abs(pre - TARGET) <= 0.2 * TARGET
    assert abs(post - TARGET) <= 0.2 * TARGET
    assert drift_fixed > 2, "the injected drift must actually move the uncertainty distribution"
    assert policy.snapshot().review_rate_observed == pytest.approx(r[-WINDOW:].mean())


def test_forced_reviews_count_toward_the_target() -> None:
    rc = RateController(0.10, 1000)
    rng = np.random.default_rng(0)
    u = rng.random(1000)
    forced = rng.random(1000) < 0.04
    tau = rc.update(u, forced)
    total = (forced | (u > tau)).mean()
    assert total == pytest.approx(0.10, abs=0.01)
    assert rc.update(u, np.ones(1000, bool)) == np.inf  # everything forced: no optional review
