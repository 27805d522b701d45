"""Fixtures of the fuzz suite: digits data and a registry with v1 trained on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from triage.bundles import train_initial
from triage.registry import Registry
from triage.settings import Settings


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(X))
    return X[order], y[order]


@pytest.fixture
def registry(tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]) -> Registry:
    """v1 trained on 300 digits (``train_initial``), CURRENT."""
    X, y = digits
    reg = Registry(tmp_path / "registry")
    s0 = Settings(holdout_fraction=0.8)
    train_initial(X[:300], y[:300], reg, retrain=s0.retrain, policy=s0.policy,
                  outlier_quantile=s0.serving.outlier_quantile, progress=lambda m: None)
    return reg

