"""The audit estimator's intervals cover, and calibration lowers ECE on a real model."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.digits import digits_split
from triage.scoring.calibration import expected_calibration_error
from triage.scoring.calibration import IsotonicCalibrator, PlattCalibrator, calibrator_from_dict, fit_calibrator
from triage.policies.audit import AuditEstimator


@pytest.mark.parametrize("interval", ["clopper-pearson", "wilson"])
def test_audit_interval_covers_true_accuracy(interval: str) -> None:
    rng = np.random.default_rng(0)
    true_acc, trials, n = 0.93, 400, 150
    covered = 0
    for t in range(trials):
        est = AuditEstimator(interval=interval)  # type: ignore[arg-type]
        correct = rng.random(n) < true_acc
        for i in range(n):
            est.add_audit(f"s{i}", "v1", "a")
            est.add_label(f"s{i}", "a" if correct[i] else "b")
        e = est.estimate("v1")
        assert e is not None and e.n == n and e.lower <= e.estimate <= e.upper
        covered += e.lower <= true_acc <= e.upper
    assert covered / trials >= 0.92  # nominal 95%


def test_audit_joins_either_order_and_separates_versions() -> None:
    est = AuditEstimator(max_pending=10)
    est.add_label("x", "cat")  # label first
    est.add_audit("x", "v1", "cat")
    assert est.add_label("y", "dog") is None
    est.add_audit("z", "v2", "cat")
    assert est.add_label("z", "dog") == "v2"
    est.add_audit("y", "v2", "dog")
    by_version = {e.model_version: (e.n, e.correct) for e in est.estimates()}
    assert by_version == {"v1": (1, 1), "v2": (2, 1)}
    assert est.estimate("v3") is None
    for i in range(20):
        est.add_audit(f"p{i}", "v1", "cat")
    assert est.forgotten == 10  # bounded memory, counted


@pytest.mark.parametrize("seed,power", [(0, 0.4), (1, 0.4), (0, 8.0), (1, 8.0)])
def test_calibration_lowers_ece_of_a_miscalibrated_model(seed: int, power: float) -> None:
    clf, X_cal, y_cal, X_s, y_s = digits_split(seed)
    # Make the real model under- (power < 1) or over-confident (power > 1).
    def sharp(X: np.ndarray) -> np.ndarray:
        p = clf.predict_proba(X) ** power
        return p / p.sum(axis=1, keepdims=True)

    cal, report = fit_calibrator(sharp(X_cal), y_cal, seed=seed)
    before = expected_calibration_error(sharp(X_s), y_s)
    after = expected_calibration_error(cal(sharp(X_s)), y_s)
    print(f"seed {seed}: {report['kind']} ECE {before:.4f} -> {after:.4f}; cv {report['cv_top_label_log_loss']}")
    assert after < before * 0.7
    assert (cal(sharp(X_s)).argmax(axis=1) == sharp(X_s).argmax(axis=1)).all()  # top label kept
    again = calibrator_from_dict(cal.to_dict())
    assert np.allclose(again(sharp(X_s)), cal(sharp(X_s)))


@pytest.mark.parametrize("kind", ["platt", "isotonic"])
def test_top_label_calibrators_are_probabilities(kind: str) -> None:
    clf, X_cal, y_cal, X_s, _ = digits_split(0)
    cal, report = fit_calibrator(clf.predict_proba(X_cal), y_cal, kinds=(kind,))
    assert isinstance(cal, PlattCalibrator if kind == "platt" else IsotonicCalibrator) and report["kind"] == kind
    p = cal(clf.predict_proba(X_s))
    assert np.allclose(p.sum(axis=1), 1.0) and (p >= 0).all()
    assert (p.argmax(axis=1) == clf.predict_proba(X_s).argmax(axis=1)).all()


def test_the_recent_interval_shows_a_shift_the_cumulative_one_hides() -> None:
    """A version right on 2,000 audits, then wrong on a third of the next 200 (a concept shift):
    the cumulative interval still covers 0.97; the last 200 labels' interval is far below it."""
    est = AuditEstimator(recent=200)
    for i in range(2_000):
        est.add_audit(f"a{i}", "v1", "3")
        est.add_label(f"a{i}", "3")
    for i in range(200):
        est.add_audit(f"b{i}", "v1", "3")
        est.add_label(f"b{i}", "5" if i % 3 == 0 else "3")
    whole, recent = est.estimate("v1"), est.estimate_recent("v1")
    assert whole is not None and recent is not None
    assert whole.n == 2_200 and recent.n == 200 and recent.correct == 133
    assert whole.upper > 0.97 > 0.9 > recent.upper
    assert est.estimate_recent("v2") is None
