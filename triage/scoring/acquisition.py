"""Vectorized uncertainty measures over a batch of class probabilities.

Each function maps an (N, C) probability array to an (N,) uncertainty in [0, 1],
higher meaning less sure, so one threshold semantics serves all three.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from triage.settings import Acquisition


def top2(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Largest and second-largest probability per row (second is 0 for one class)."""
    if probs.shape[1] == 1:
        return probs[:, 0], np.zeros(len(probs), dtype=probs.dtype)
    part = np.partition(probs, -2, axis=1)
    return part[:, -1], part[:, -2]


def least_confidence(probs: np.ndarray) -> np.ndarray:
    return 1.0 - probs.max(axis=1)


def margin_uncertainty(probs: np.ndarray) -> np.ndarray:
    p1, p2 = top2(probs)
    return 1.0 - (p1 - p2)


def normalized_entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy divided by log(C): 0 for a one-hot row, 1 for a uniform one."""
    n_classes = probs.shape[1]
    if n_classes < 2:
        return np.zeros(len(probs), dtype=probs.dtype)
    clipped = np.clip(probs, 1e-12, 1.0)
    return -(probs * np.log(clipped)).sum(axis=1) / np.log(n_classes)


UNCERTAINTY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "least-confidence": least_confidence,
    "margin": margin_uncertainty,
    "entropy": normalized_entropy,
}


def uncertainty(probs: np.ndarray, acquisition: Acquisition) -> np.ndarray:
    return UNCERTAINTY[acquisition](probs)
