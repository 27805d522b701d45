"""Risk control on a real model: the error among auto-accepted stays <= alpha."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy.stats import beta

from tests.unit.digits import digits_split
from triage.scoring.calibration import calibrator_from_dict
from triage.policies import fit_routing, policy_from_manifest
from triage.policies.risk import certify, clopper_pearson_upper, min_accepted
from triage.scoring.routing import CONFIDENT, OUTLIER, UNCERTAIN
from triage.scoring.scores import scores_from_probs
from triage.settings import PolicySettings

ALPHA = 0.03
TOLERANCE = 0.01  # finite-stream noise on ~600 accepted predictions


def _settings(**kw: Any) -> PolicySettings:
    return PolicySettings(**kw)


def _stream(seed: int, **kw: Any) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    clf, X_cal, y_cal, X_s, y_s = digits_split(seed)
    s = _settings(policy="risk", risk_alpha=ALPHA, risk_delta=0.1, seed=seed, **kw)
    routing = fit_routing(clf.predict_proba(X_cal), y_cal, s)
    calibrate = calibrator_from_dict(routing["calibration"])
    policy = policy_from_manifest(routing, s)
    accepted, wrong = [], []
    for i in range(0, len(X_s), 64):  # the stream, batch by batch, through the pure policy
        scores = scores_from_probs(calibrate(clf.predict_proba(X_s[i:i + 64])), s.acquisition)
        accepted.append(policy.decide(scores).accepted)
        wrong.append(scores.predicted != y_s[i:i + 64])
    return np.concatenate(accepted), np.concatenate(wrong), routing


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_error_among_accepted_stays_below_alpha(seed: int, record_property: Any) -> None:
    accepted, wrong, routing = _stream(seed)
    realized = wrong[accepted].mean()
    coverage = accepted.mean()
    record_property("realized_error", float(realized))
    record_property("coverage", float(coverage))
    print(f"seed {seed}: error among accepted {realized:.4f} (alpha {ALPHA}), coverage {coverage:.3f}, "
          f"overall error {wrong.mean():.4f}, threshold {routing['risk']['threshold']:.4f}")
    assert realized <= ALPHA + TOLERANCE
    assert wrong.mean() > realized, "the policy should filter errors out, not just pass everything"
    assert coverage > 0.5, "a 95%-accurate model should auto-accept most of the stream"
    assert routing["risk"]["upper_bound"] <= ALPHA
    assert routing["risk"]["coverage"] == pytest.approx(coverage, abs=0.1)


def test_mondrian_thresholds_per_class() -> None:
    accepted, wrong, routing = _stream(0, risk_mondrian=True, calibration_fraction=0.2)
    thresholds = routing["risk"]["thresholds"]
    assert len(thresholds) == 10
    if accepted.any():
        assert wrong[accepted].mean() <= ALPHA + TOLERANCE
    # Per class at delta/10 needs >= min_accepted rows of a class: with ~40 per class none
    # can be certified, so the honest answer is "review everything".
    assert min_accepted(ALPHA, 0.1 / 10) > 40
    assert all(t == -1.0 for t in thresholds) and not accepted.any()


def test_mondrian_certifies_classes_with_enough_rows() -> None:
    rng = np.random.default_rng(0)
    n = 20000
    predicted = rng.integers(0, 2, n)
    u = rng.random(n)
    wrong = rng.random(n) < np.where(predicted == 0, 0.1 * u, 0.3 * u)  # class 1 is worse
    from triage.policies.risk import fit_risk

    out = fit_risk(u, predicted, np.where(wrong, 1 - predicted, predicted), alpha=0.05, delta=0.1,
                   mondrian=True, n_classes=2)
    t0, t1 = out["thresholds"]
    assert t0 > t1 > 0  # the worse class gets the stricter threshold
    for c, t in ((0, t0), (1, t1)):
        acc = (predicted == c) & (u <= t)
        assert wrong[acc].mean() <= 0.05


def test_clopper_pearson_matches_beta_quantile() -> None:
    for e, n in [(0, 50), (3, 100), (10, 40)]:
        assert clopper_pearson_upper(e, n, 0.1) == pytest.approx(beta.ppf(0.9, e + 1, n - e), rel=1e-6)
    assert clopper_pearson_upper(5, 5, 0.1) == 1.0


def test_certify_refuses_when_errors_are_everywhere() -> None:
    u = np.linspace(0, 1, 500)
    res = certify(u, np.ones(500, bool), alpha=0.05, delta=0.1)
    assert res["threshold"] == -1.0 and res["coverage"] == 0.0


def test_risk_without_or_with_mismatched_params_reviews_everything() -> None:
    s = _settings(policy="risk", risk_alpha=0.01)
    probs = np.tile([[0.99, 0.01]], (10, 1))
    scores = scores_from_probs(probs, s.acquisition, outlier=np.r_[np.zeros(9), 5.0])
    d = policy_from_manifest(None, s).decide(scores)
    assert not d.accepted.any() and d.reason.tolist() == [UNCERTAIN] * 9 + [OUTLIER]
    fitted_for_other_alpha = {"acquisition": s.acquisition,
                              "risk": {"alpha": 0.2, "delta": 0.1, "mondrian": False, "threshold": 1.0}}
    d = policy_from_manifest(fitted_for_other_alpha, s).decide(scores)
    assert not d.accepted.any()
    fitted = {"acquisition": s.acquisition,
              "risk": {"alpha": 0.01, "delta": 0.1, "mondrian": False, "threshold": 0.5}}
    d = policy_from_manifest(fitted, s).decide(scores)
    assert d.reason.tolist() == [CONFIDENT] * 9 + [OUTLIER]


def test_grid_starts_where_half_alpha_still_certifies() -> None:
    from triage.policies.risk import start_rows

    for alpha, delta in [(0.05, 0.1), (0.05, 0.1 / 3), (0.01, 0.1)]:
        n0 = start_rows(alpha, delta, 100_000)
        assert n0 >= min_accepted(alpha, delta, errors=1)
        assert clopper_pearson_upper(np.floor(n0 * alpha / 2), n0, delta) <= alpha
        assert clopper_pearson_upper(np.floor((n0 - 1) * alpha / 2), n0 - 1, delta) > alpha or \
            n0 == min_accepted(alpha, delta, errors=1)
    # Too few rows for that rate: fall back to the one-error size (the old start).
    assert start_rows(0.01, 0.1, 300) == min_accepted(0.01, 0.1, errors=1)


def test_early_unlucky_errors_do_not_end_the_sequence(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two label-noise errors among the most confident rows: the old grid start (the one-error
    size) stopped there; starting where alpha/2 certifies reaches the good part of the curve."""
    from triage.policies import risk

    n = 2000
    u = np.arange(n) / n
    wrong = np.zeros(n, bool)
    wrong[[3, 40]] = True  # unlucky: two errors among the first 110 rows
    rng = np.random.default_rng(0)
    wrong[200:1600] = rng.random(1400) < 0.01
    wrong[1600:] = rng.random(400) < 0.3
    new = certify(u, wrong, alpha=0.05, delta=0.1 / 3)
    monkeypatch.setattr(risk, "START_RATE", float("inf"))
    old = certify(u, wrong, alpha=0.05, delta=0.1 / 3)
    assert old["coverage"] < 0.1
    assert new["coverage"] > 0.7 and new["upper_bound"] <= 0.05


def test_multiplicity_tests_at_delta_over_m() -> None:
    from triage.policies.risk import fit_risk

    rng = np.random.default_rng(1)
    u = rng.random(3000)
    wrong = rng.random(3000) < 0.12 * u
    y = np.where(wrong, 1, 0)
    one = fit_risk(u, np.zeros(3000, int), y, alpha=0.05, delta=0.1, mondrian=False, n_classes=2)
    three = fit_risk(u, np.zeros(3000, int), y, alpha=0.05, delta=0.1, mondrian=False, n_classes=2, multiplicity=3)
    assert three["delta"] == one["delta"] == 0.1 and three["multiplicity"] == 3 and "multiplicity" not in one
    assert 0 < three["threshold"] <= one["threshold"]
    assert three["upper_bound"] == pytest.approx(
        float(clopper_pearson_upper(three["accepted_errors"], three["accepted"], 0.1 / 3)))
