"""Aggregation: majority, quality-weighted majority and Dawid-Skene (crowd-kit)."""

from __future__ import annotations

import numpy as np
import pytest

from triage.quality.aggregate import aggregate
from triage.quality.base import Annotation


def noisy_crowd(noise: list[float], samples: int = 300, classes: int = 4, seed: int = 0
                ) -> tuple[list[Annotation], dict[str, str]]:
    """Every annotator labels every sample; annotator k is wrong with chance noise[k]."""
    rng = np.random.default_rng(seed)
    truth = {f"t{i}": str(rng.integers(classes)) for i in range(samples)}
    rows = []
    for sample, label in truth.items():
        for k, p in enumerate(noise):
            answer = label if rng.random() >= p else str((int(label) + 1 + rng.integers(classes - 1)) % classes)
            rows.append(Annotation(sample, f"w{k}", answer))
    return rows, truth


def error(result: dict[str, str], truth: dict[str, str]) -> float:
    return float(np.mean([result[s] != t for s, t in truth.items()]))


def test_dawid_skene_beats_majority_with_one_bad_annotator() -> None:
    # the bad annotator answers first, so majority's ties (three different labels) go to them;
    # Dawid-Skene learns from the labels alone that they are nearly worthless
    rows, truth = noisy_crowd([0.7, 0.25, 0.1], samples=400)
    majority, ds = aggregate(rows, "majority"), aggregate(rows, "dawid-skene")
    assert error(ds, truth) < error(majority, truth) - 0.05


def test_weighted_votes_follow_the_better_annotator_on_a_tie() -> None:
    rows = [Annotation("t", "careless", "1"), Annotation("t", "careful", "2")]
    assert aggregate(rows, "majority") == {"t": "1"}  # a plain tie goes to the label given first
    assert aggregate(rows, "weighted", {"careless": 0.55, "careful": 0.95}, classes=10) == {"t": "2"}


def test_weighted_majority_beats_majority_when_accuracies_are_known() -> None:
    noise = [0.6, 0.1, 0.3]
    rows, truth = noisy_crowd(noise, samples=400, classes=10)
    acc = {f"w{k}": 1 - p for k, p in enumerate(noise)}
    assert error(aggregate(rows, "weighted", acc, classes=10), truth) < error(aggregate(rows, "majority"), truth) - 0.05


def test_a_correction_counts_once_and_unanimous_samples_pass_through() -> None:
    rows = [Annotation("t", "a", "1"), Annotation("t", "b", "2"), Annotation("t", "a", "2"), Annotation("u", "a", "3")]
    assert aggregate(rows, "majority") == {"t": "2", "u": "3"}


def test_an_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError):
        aggregate([], "latest")  # type: ignore[arg-type]
