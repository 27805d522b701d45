from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from triage.metrics import ScorerMetrics
from triage.scoring.outlier import DEFAULT_FOLDS, OutlierDetector, _ledoit_wolf, _mahalanobis, conformal_rank, min_reference_rows


def test_flags_far_points_and_keeps_inliers() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(2000, 8))
    det = OutlierDetector.fit(ref, quantile=0.99)
    inliers = det.score(rng.normal(size=(1000, 8)))
    outliers = det.score(rng.normal(size=(50, 8)) + 8.0)
    assert 0.002 < (inliers > 1).mean() < 0.05
    assert (outliers > 1).all()


def test_constant_features_do_not_break_inversion() -> None:
    rng = np.random.default_rng(2)
    ref = np.hstack([rng.normal(size=(500, 4)), np.zeros((500, 3))])
    det = OutlierDetector.fit(ref)
    assert np.isfinite(det.score(ref)).all()
    far = ref[:5].copy()
    far[:, 5] = 10.0  # a pixel that is always zero in the reference lights up
    assert (det.score(far) > 1).all()


def test_round_trips_through_dict() -> None:
    ref = np.random.default_rng(3).normal(size=(100, 3))
    det = OutlierDetector.fit(ref)
    again = OutlierDetector.from_dict(det.to_dict())
    np.testing.assert_allclose(det.score(ref), again.score(ref))


def test_rejects_tiny_reference() -> None:
    with pytest.raises(ValueError, match="reference data"):
        OutlierDetector.fit(np.zeros((3, 2)))


# --- conformal threshold (issue 12, item 5) -----------------------------------------------


def _correlated(rng: np.random.Generator, n: int, d: int = 6) -> np.ndarray:
    A = np.random.default_rng(99).normal(size=(d, d))
    return 2.0 + rng.normal(size=(n, d)) @ A.T


def _brute_force_oof(X: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Out-of-fold distances by refitting on the other folds' rows, the slow obvious way."""
    oof = np.empty(len(X))
    for idx in np.array_split(np.random.default_rng(seed).permutation(len(X)), folds):
        rest = np.setdiff1d(np.arange(len(X)), idx)
        mean = X[rest].mean(axis=0)
        precision = np.linalg.inv(_ledoit_wolf(X[rest] - mean))
        oof[idx] = _mahalanobis(X[idx] - mean, precision)
    return oof


def test_conformal_rank_and_minimum_rows() -> None:
    assert conformal_rank(199, 0.995) == 199  # 200 * 0.995 = 199, despite float rounding
    assert conformal_rank(198, 0.995) == 199  # > 198 rows: cannot certify
    assert conformal_rank(1000, 0.995) == 996  # ceil(995.995)
    assert conformal_rank(450, 0.99) == 447  # ceil(446.49)
    assert min_reference_rows(0.995) == 199
    assert min_reference_rows(0.99) == 99
    assert min_reference_rows(0.9) == 9
    for q in (0.6, 0.8, 0.9, 0.95, 0.975, 0.99, 0.995, 0.998, 0.999):
        smallest = next(n for n in range(1, 5000) if conformal_rank(n, q) <= n)
        assert min_reference_rows(q) == smallest, q


def test_threshold_is_the_conformal_order_statistic_of_out_of_fold_distances() -> None:
    X = _correlated(np.random.default_rng(5), 437)
    for q, seed in ((0.99, 0), (0.95, 3), (0.995, 11)):
        det = OutlierDetector.fit(X, quantile=q, seed=seed)
        oof = np.sort(_brute_force_oof(X, DEFAULT_FOLDS, seed))
        k = conformal_rank(len(X), q)
        assert det.threshold == pytest.approx(oof[k - 1], rel=1e-9)
        assert det.threshold != pytest.approx(oof[k - 2], rel=1e-9)  # the rank, not a neighbour
        assert det.calibration_rows == 437 and det.folds == DEFAULT_FOLDS and det.sufficient


def test_final_fit_uses_every_row() -> None:
    X = _correlated(np.random.default_rng(6), 300)
    det = OutlierDetector.fit(X)
    np.testing.assert_allclose(det.mean, X.mean(axis=0))
    np.testing.assert_allclose(det.precision, np.linalg.inv(_ledoit_wolf(X - X.mean(axis=0))), rtol=1e-8)


def test_ledoit_wolf_matches_the_matrix_form() -> None:
    """The fourth-moment term is computed per row; it equals sum(sq.T @ sq) / n."""
    X = _correlated(np.random.default_rng(7), 120)
    X[:, 2] = 0.0
    c = X - X.mean(axis=0)
    n, d = c.shape
    emp = c.T @ c / n
    mu = np.trace(emp) / d
    delta = np.sum((emp - mu * np.eye(d)) ** 2) / d
    sq = c**2
    beta = min(max((np.sum(sq.T @ sq) / n - np.sum(emp**2)) / (d * n), 0.0), delta)
    shrink = beta / delta
    expected = (1 - shrink) * emp + shrink * mu * np.eye(d) + 1e-6 * mu * np.eye(d)
    np.testing.assert_allclose(_ledoit_wolf(c), expected, rtol=1e-10, atol=1e-12)


def test_too_small_reference_is_flagged_and_warned(caplog: pytest.LogCaptureFixture) -> None:
    X = _correlated(np.random.default_rng(8), 150)
    with caplog.at_level(logging.WARNING, logger="triage.outlier"):
        det = OutlierDetector.fit(X, quantile=0.995, seed=2)
    assert det.sufficient is False and det.calibration_rows == 150 and det.min_rows == 199
    assert det.threshold == pytest.approx(_brute_force_oof(X, DEFAULT_FOLDS, 2).max(), rel=1e-9)
    [record] = [r for r in caplog.records if r.name == "triage.outlier"]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "150 rows given" in message and "199 needed" in message
    assert "--outlier-quantile" in message and "reference rows" in message


def test_enough_rows_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    X = _correlated(np.random.default_rng(9), 199)
    with caplog.at_level(logging.WARNING, logger="triage.outlier"):
        det = OutlierDetector.fit(X, quantile=0.995)
    assert det.sufficient is True
    assert not [r for r in caplog.records if r.name == "triage.outlier"]
    assert OutlierDetector.fit(X[:120], quantile=0.99).sufficient is True  # 99 rows certify 0.99


def test_realized_rate_on_clean_gaussian_is_near_nominal() -> None:
    """5000 reference rows at q = 0.99: the realized rate on fresh clean rows has a spread of
    about 0.15 points over reference draws (Beta(50, 4951)); 0.6%..1.4% is over 2.5 of those
    either side, and the draw is seeded."""
    rng = np.random.default_rng(2024)
    d = 10
    L = np.linalg.cholesky(np.full((d, d), 0.6) + 0.4 * np.eye(d))
    draw = lambda n: 1.0 + rng.normal(size=(n, d)) @ L.T  # noqa: E731
    det = OutlierDetector.fit(draw(5000), quantile=0.99, seed=1)
    rate = float((det.score(draw(200_000)) > 1).mean())
    assert 0.006 < rate < 0.014, rate


def test_round_trip_keeps_calibration_fields() -> None:
    det = OutlierDetector.fit(_correlated(np.random.default_rng(10), 150), quantile=0.995)
    data = json.loads(json.dumps(det.to_dict()))  # manifests are JSON
    assert data["calibration_rows"] == 150 and data["sufficient"] is False and data["min_rows"] == 199
    assert data["threshold_method"] == "cross-fit-conformal" and data["kind"] == "mahalanobis-ledoit-wolf"
    again = OutlierDetector.from_dict(data)
    assert (again.calibration_rows, again.folds, again.sufficient, again.quantile) == (150, DEFAULT_FOLDS, False, 0.995)
    assert again.threshold == det.threshold
    np.testing.assert_array_equal(again.precision, det.precision)
    assert again.to_dict() == data


def test_manifest_from_before_the_conformal_threshold_still_loads() -> None:
    old = {"kind": "mahalanobis-ledoit-wolf", "mean": [0.0, 1.0], "precision": [[1.0, 0.0], [0.0, 4.0]],
           "quantile": 0.995, "threshold": 2.5}
    det = OutlierDetector.from_dict(old)
    assert det.calibration_rows is None and det.folds is None and det.sufficient is None
    assert det.min_rows == 199 and det.feature_count == 2
    np.testing.assert_allclose(det.score(np.array([[0.0, 1.0], [5.0, 1.0], [0.0, 2.0]])), [0.0, 2.0, 0.8])
    assert det.to_dict() == old  # re-saved unchanged: no invented calibration fields


def test_rejects_bad_quantile_and_folds() -> None:
    X = np.random.default_rng(11).normal(size=(50, 2))
    with pytest.raises(ValueError, match="quantile"):
        OutlierDetector.fit(X, quantile=1.0)
    with pytest.raises(ValueError, match="folds"):
        OutlierDetector.fit(X, folds=1)


def test_tiny_reference_gets_a_fold_per_row() -> None:
    det = OutlierDetector.fit(np.random.default_rng(12).normal(size=(10, 3)), quantile=0.9)
    assert det.folds == 10 and det.calibration_rows == 10 and det.sufficient is True
    assert np.isfinite(det.threshold)


def _gauges(metrics: ScorerMetrics) -> dict[str, float]:
    names = ("triage_outlier_detection_enabled", "triage_outlier_reference_rows", "triage_outlier_threshold_certified")
    return {s.name: s.value for m in metrics.registry.collect() for s in m.samples if s.name in names}


def test_scorer_metrics_export_the_detector_calibration() -> None:
    m = ScorerMetrics(CollectorRegistry())
    assert _gauges(m)["triage_outlier_threshold_certified"] == -1  # before any model: no alert
    rng = np.random.default_rng(13)
    small = OutlierDetector.fit(_correlated(rng, 150), quantile=0.995)
    big = OutlierDetector.fit(_correlated(rng, 400), quantile=0.995)
    m.set_model("v1", "a" * 64, True, small)
    assert _gauges(m) == {"triage_outlier_detection_enabled": 1, "triage_outlier_reference_rows": 150,
                          "triage_outlier_threshold_certified": 0}
    m.set_model("v2", "b" * 64, True, big)  # hot-swap
    assert _gauges(m) == {"triage_outlier_detection_enabled": 1, "triage_outlier_reference_rows": 400,
                          "triage_outlier_threshold_certified": 1}
    legacy = OutlierDetector.from_dict({k: v for k, v in big.to_dict().items() if k in ("mean", "precision", "threshold", "quantile")})
    m.set_model("v3", "c" * 64, True, legacy)
    assert _gauges(m)["triage_outlier_reference_rows"] == -1
    assert _gauges(m)["triage_outlier_threshold_certified"] == -1
    m.set_model("v4", "d" * 64, False, None)
    assert _gauges(m) == {"triage_outlier_detection_enabled": 0, "triage_outlier_reference_rows": 0,
                          "triage_outlier_threshold_certified": -1}
