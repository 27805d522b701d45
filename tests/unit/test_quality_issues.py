"""Label issues: out-of-fold predictions and cleanlab flag planted label errors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from triage.quality.issues import label_issues, out_of_fold_probs


def test_cleanlab_flags_planted_errors_first_and_little_else() -> None:
    X, y = load_digits(return_X_y=True)
    y = y.astype(str)
    rng = np.random.default_rng(0)
    rows = rng.permutation(len(y))[:500]
    trusted_rows, rows = rows[:100], rows[100:]
    Xs, ys = X[rows], y[rows].copy()
    classes = sorted(set(y))
    planted = rng.choice(len(rows), 40, replace=False)
    for i in planted:
        ys[i] = rng.choice([c for c in classes if c != ys[i]])
    probs = out_of_fold_probs(Xs, ys, classes, trusted=(X[trusted_rows], y[trusted_rows]), seed=0)
    assert probs.shape == (len(rows), 10) and np.allclose(probs.sum(axis=1), 1.0)
    flagged = label_issues(ys, probs, classes)
    caught = set(flagged.tolist()) & set(planted.tolist())
    assert len(caught) >= 32  # at least 80% of the planted errors
    assert len(flagged) <= 2 * len(planted)  # and at least half of what it flags is wrong
    top = label_issues(ys, probs, classes, limit=20)
    assert len(top) == 20 and len(set(top.tolist()) & set(planted.tolist())) >= 18  # worst first


def test_clean_labels_raise_few_flags_and_tiny_inputs_none() -> None:
    X, y = load_digits(return_X_y=True)
    y = y.astype(str)
    classes = sorted(set(y))
    probs = out_of_fold_probs(X[:400], y[:400], classes, seed=1)
    assert len(label_issues(y[:400], probs, classes)) <= 12
    assert len(label_issues(y[:3], probs[:3], classes)) == 0


def test_label_issues_start_no_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """cleanlab's default forks a Pool and ends it with SIGTERM; in the retrain job the workers
    inherited its stop handler, and a run hung in the pool's join (CI, 2026-12-04)."""
    import multiprocessing

    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("label_issues started a process pool")

    monkeypatch.setattr(multiprocessing, "Pool", refuse)
    X, y = load_digits(return_X_y=True)
    y = y.astype(str)
    classes = sorted(set(y))
    probs = out_of_fold_probs(X[:400], y[:400], classes, seed=1)
    label_issues(y[:400], probs, classes)
