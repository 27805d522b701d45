from __future__ import annotations

import numpy as np
import pytest

from triage.scoring.acquisition import least_confidence, margin_uncertainty, normalized_entropy, top2, uncertainty


def test_measures_on_known_rows() -> None:
    probs = np.array([[1.0, 0.0, 0.0], [0.5, 0.3, 0.2], [1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(least_confidence(probs), [0.0, 0.5, 2 / 3])
    np.testing.assert_allclose(margin_uncertainty(probs), [0.0, 0.8, 1.0])
    np.testing.assert_allclose(normalized_entropy(probs), [0.0, 0.9372305, 1.0], atol=1e-6)


def test_top2_single_class() -> None:
    p1, p2 = top2(np.array([[1.0], [1.0]]))
    assert p1.tolist() == [1.0, 1.0] and p2.tolist() == [0.0, 0.0]


@pytest.mark.parametrize("name", ["least-confidence", "margin", "entropy"])
def test_uncertainty_is_bounded_and_monotone_in_sharpness(name: str) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 5))
    soft = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    sharp = np.exp(4 * logits) / np.exp(4 * logits).sum(1, keepdims=True)
    u_soft, u_sharp = uncertainty(soft, name), uncertainty(sharp, name)  # type: ignore[arg-type]
    assert ((u_soft >= 0) & (u_soft <= 1 + 1e-9)).all()
    assert u_sharp.mean() < u_soft.mean()
