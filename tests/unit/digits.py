"""A real trained model on scikit-learn's bundled digits, for the policy tests (no ONNX)."""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split


@lru_cache(maxsize=8)
def digits_split(seed: int) -> tuple[LogisticRegression, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(model trained on 30%, calibration X, y (35%), stream X, y (35%)), split by ``seed``."""
    X, y = load_digits(return_X_y=True)
    X_train, X_rest, y_train, y_rest = train_test_split(X, y, train_size=0.3, random_state=seed, stratify=y)
    X_cal, X_stream, y_cal, y_stream = train_test_split(X_rest, y_rest, train_size=0.5, random_state=seed, stratify=y_rest)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = LogisticRegression(max_iter=300, C=0.05).fit(X_train, y_train)
    return clf, X_cal, y_cal, X_stream, y_stream
