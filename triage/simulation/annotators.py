"""Simulated annotators for ``triage simulate --annotators N``: each answers with the true
label or a wrong one, by a symmetric noise rate (a wrong answer is uniform over the other
classes) or by a confusion matrix (row: true class, column: answer).

Deterministic per seed and paired across arms: annotator ``k``'s answer for pool row ``i``
depends only on (seed, i, k), and the order in which annotators are asked for row ``i`` is a
permutation drawn from (seed, i). An arm that asks one annotator and an arm that asks three get
the same first answer, so the arms differ only in what they do with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from triage.errors import ConfigError

ANSWER, ORDER = 101, 103  # rng streams of an annotator's answer and of the order annotators are asked in


@dataclass(frozen=True)
class AnnotatorPanel:
    classes: tuple[str, ...]
    noise: tuple[float, ...] = ()  # per annotator: chance of a wrong answer (symmetric)
    confusion: tuple[np.ndarray, ...] = ()  # per annotator: rows true class, columns answer (sorted classes)

    def __post_init__(self) -> None:
        if bool(self.noise) == bool(self.confusion):
            raise ConfigError("simulated annotators need either noise rates or confusion matrices")

    @property
    def size(self) -> int:
        return len(self.noise or self.confusion)

    @property
    def names(self) -> list[str]:
        return [f"annotator-{k + 1}" for k in range(self.size)]

    def true_accuracy(self, truth: Sequence[str]) -> list[float]:
        """Each annotator's expected accuracy on labels distributed as ``truth``."""
        if self.noise:
            return [1.0 - p for p in self.noise]
        col = {c: i for i, c in enumerate(self.classes)}
        idx = np.asarray([col[str(t)] for t in truth])
        return [float(np.mean(m[idx, idx])) for m in self.confusion]

    def answer(self, seed: int, row: int, truth: str, who: int) -> str:
        rng = np.random.default_rng([seed, ANSWER, row, who])
        if self.noise:
            if rng.random() >= self.noise[who]:
                return truth
            others = [c for c in self.classes if c != truth]
            return str(others[rng.integers(len(others))]) if others else truth
        k = self.classes.index(truth)
        return str(self.classes[rng.choice(len(self.classes), p=self.confusion[who][k])])

    def next_annotator(self, seed: int, row: int, asked: frozenset[int]) -> Optional[int]:
        """The next annotator to ask for ``row``, skipping those already asked (None: none left)."""
        order = np.random.default_rng([seed, ORDER, row]).permutation(self.size)
        return next((int(k) for k in order if int(k) not in asked), None)


def parse_noise(text: str, annotators: int) -> tuple[float, ...]:
    """``0.1,0.2,0.4`` (one per annotator, or one for all)."""
    try:
        rates = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--annotator-noise {text!r}: comma-separated rates in [0, 1)") from None
    if len(rates) == 1:
        rates = rates * annotators
    if len(rates) != annotators or any(not 0.0 <= r < 1.0 for r in rates):
        raise ConfigError(f"--annotator-noise {text!r}: {annotators} rates in [0, 1) (one per annotator, or one)")
    return rates


def load_confusion(path: Path, classes: Sequence[str]) -> tuple[np.ndarray, ...]:
    """``{"classes": [...], "matrices": [[[...], ...], ...]}``: one row-stochastic matrix per
    annotator (rows: true class, columns: answer, both in ``classes`` order)."""
    try:
        doc = json.loads(Path(path).read_text())
        order = [str(c) for c in doc["classes"]]
        mats = [np.asarray(m, dtype=np.float64) for m in doc["matrices"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"--annotator-confusion {path}: {exc}") from None
    if sorted(order) != sorted(str(c) for c in classes):
        raise ConfigError(f"--annotator-confusion {path}: classes {order} are not the data's {list(classes)}")
    at = [order.index(str(c)) for c in classes]
    out = []
    for m in mats:
        if m.shape != (len(order), len(order)) or (m < 0).any() or not np.allclose(m.sum(axis=1), 1.0):
            raise ConfigError(f"--annotator-confusion {path}: every matrix must be {len(order)}x{len(order)}, "
                              "non-negative, rows summing to 1")
        out.append(m[np.ix_(at, at)])
    return tuple(out)
