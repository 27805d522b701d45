from __future__ import annotations

import numpy as np
import pytest

from triage.outlier import OutlierDetector


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
