"""Labelled datasets for ``triage simulate`` and their per-seed split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from triage.lifecycle.data import load_dataset
from triage.errors import ConfigError
from triage.extras import require_extra

MIN_ROWS_PER_CLASS = 2


@dataclass(frozen=True)
class Split:
    """One seed's split: ``pool`` is streamed (its labels revealed only when asked for),
    ``test`` is never streamed nor labelled and only measures accuracy."""

    X_pool: np.ndarray
    y_pool: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


def load_labelled(source: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """(X, y as strings) of a labelled dataset; ConfigError when it has no labels."""
    X, y = load_dataset(source)
    if y is None:
        raise ConfigError(f"{source} has no labels: triage simulate needs y (npz with X and y, "
                          "or CSV with a y/label/target column)")
    y = np.asarray(y).astype(str)
    if len(np.unique(y)) < 2:
        raise ConfigError(f"{source} has a single class; a classifier needs at least two")
    return X, y


def split(X: np.ndarray, y: np.ndarray, seed: int, test_fraction: float) -> Split:
    """Stratified (when every class has two rows) split into pool and test, seeded."""
    require_extra("train", "triage simulate")
    from sklearn.model_selection import train_test_split

    counts = np.unique(y, return_counts=True)[1]
    stratify = y if counts.min() >= MIN_ROWS_PER_CLASS else None
    X_pool, X_test, y_pool, y_test = train_test_split(X, y, test_size=test_fraction, random_state=seed,
                                                      stratify=stratify)
    return Split(X_pool, y_pool, X_test, y_test)
