"""Label issues: stored labels that are probably wrong, by confident learning (cleanlab).

Every stored label is scored by a model that did not train on it: ``out_of_fold_probs``
splits the labels into folds and trains on the other folds plus the ``trusted`` rows (the
bootstrap's labels, which the check never flags), a scaled logistic regression by default
(fast and well calibrated enough for ranking). ``label_issues`` hands the labels and those
probabilities to ``cleanlab.filter.find_label_issues`` and returns the flagged positions,
the most likely wrong first (lowest self-confidence), at most ``limit`` of them: the caller
sends them back for review (reason ``relabel``) within its budget and keeps them out of
training until they are confirmed or corrected.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Optional, Sequence

import numpy as np

from triage.extras import require_extra

FOLDS = 5


def _default_model(seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, random_state=seed))


def out_of_fold_probs(X: np.ndarray, y: np.ndarray, classes: Sequence[str], *,
                      trusted: Optional[tuple[np.ndarray, np.ndarray]] = None, folds: int = FOLDS, seed: int = 0,
                      model: Optional[Callable[[int], Any]] = None) -> np.ndarray:
    """(len(y), len(classes)) probabilities of each label's row from a model trained without it.
    A class the fold's model never saw gets probability 0 there."""
    require_extra("train", "label issue detection")
    from sklearn.base import clone
    from sklearn.model_selection import KFold, StratifiedKFold

    y = np.asarray(y).astype(str)
    col = {c: i for i, c in enumerate(classes)}
    probs = np.zeros((len(y), len(classes)))
    if len(y) < 2:
        return probs
    tX, ty = trusted if trusted is not None else (np.zeros((0, X.shape[1])), np.zeros(0, dtype=str))
    smallest = int(np.unique(y, return_counts=True)[1].min())
    k = min(folds, len(y))
    splitter = (StratifiedKFold(k, shuffle=True, random_state=seed) if smallest >= k
                else KFold(k, shuffle=True, random_state=seed))
    base = (model or _default_model)(seed)
    for train, test in splitter.split(X, y):
        fit_X, fit_y = np.vstack([tX, X[train]]), np.concatenate([np.asarray(ty).astype(str), y[train]])
        if len(np.unique(fit_y)) < 2:
            probs[test, col[fit_y[0]]] = 1.0
            continue
        fitted = clone(base).fit(fit_X, fit_y)
        p = fitted.predict_proba(X[test])
        for j, c in enumerate(fitted.classes_):
            probs[test, col[str(c)]] = p[:, j]
    return probs


def label_issues(y: np.ndarray, probs: np.ndarray, classes: Sequence[str], *,
                 limit: Optional[int] = None) -> np.ndarray:
    """Positions of the labels cleanlab flags, most likely wrong first, at most ``limit``."""
    require_extra("quality", "label issue detection")
    from cleanlab.filter import find_label_issues

    col = {c: i for i, c in enumerate(classes)}
    labels = np.asarray([col[str(v)] for v in y], dtype=np.int64)
    if len(labels) < len(classes) or len(np.unique(labels)) < 2:
        return np.zeros(0, dtype=np.int64)
    # rows must be distributions; a class no fold model knew leaves zeros (and a row may be all zero)
    p = probs + 1e-6
    p = p / p.sum(axis=1, keepdims=True)
    with warnings.catch_warnings():  # "may not flag all issues in class k": few labels of k so far, expected
        warnings.filterwarnings("ignore", message="May not flag all label issues", category=UserWarning)
        # n_jobs=1: cleanlab's default forks a Pool from this process (threads: the Kafka clients;
        # a SIGTERM handler) and ends it with SIGTERM. The forked workers ran the retrain job's stop
        # handler instead of dying, and one run hung in the pool's join for good. Results do not
        # depend on n_jobs (cleanlab's docs).
        found = find_label_issues(labels, p, return_indices_ranked_by="self_confidence", n_jobs=1)
    found = np.asarray(found, dtype=np.int64)
    return found if limit is None else found[:max(limit, 0)]
