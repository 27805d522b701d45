"""The order of a batch's review requests: which of them annotators see first.

Annotators work the review queue by priority, so when they label only part of a batch, the
order decides which part. Most-uncertain-first spends labels on near-copies: the rows that
are uncertain for the same reason sit together, and one label teaches most of what the
others would. The orders here keep the batch's set of priority values and only re-assign
them, so priorities stay comparable across batches (the queue interleaves batches).

- ``priority``: most uncertain first (no change).
- ``diverse``: greedy; each next request maximizes uncertainty x distance to the requests
  already ranked (standardized features), so the first few cover the uncertain region
  instead of its densest corner (in the spirit of cluster-margin and ranked batch-mode).
- ``badge``: k-means++ seeding over gradient embeddings (p - onehot(predicted)) (x) x, as in
  BADGE: the embedding's length is uncertainty, its direction says which class boundary and
  where; seeded (D^2 sampling) from the policy seed.
Pure numpy on the review rows only (a small share of a batch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping, Optional, Protocol

import numpy as np

from triage.settings import ReviewOrder

if TYPE_CHECKING:
    from triage.scoring.scores import Scores

MAX_RANKED = 512  # beyond this many requests in one batch the tail keeps priority order
TIE_STEP = 1e-9


class Ranker(Protocol):
    def __call__(self, scores: Scores, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``rows`` (review rows, highest priority first) re-ordered: the first is shown first."""
        ...


def _standardized(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    std = X.std(axis=0)
    return (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)


def _greedy(points: np.ndarray, weight: np.ndarray, pick_next: Callable[[np.ndarray], int]) -> np.ndarray:
    """Order of ``points`` by repeatedly taking ``pick_next(weight * min squared distance to
    the points taken)``, starting from the heaviest point."""
    n = len(points)
    sq = (points**2).sum(axis=1)
    order = [int(np.argmax(weight))]
    d2 = np.maximum(sq + sq[order[0]] - 2 * points @ points[order[0]], 0.0)
    taken = np.zeros(n, dtype=bool)
    taken[order[0]] = True
    for _ in range(n - 1):
        gain = np.where(taken, -1.0, weight * d2)
        nxt = pick_next(gain)
        order.append(nxt)
        taken[nxt] = True
        d2 = np.minimum(d2, np.maximum(sq + sq[nxt] - 2 * points @ points[nxt], 0.0))
    return np.asarray(order, dtype=np.int64)


def by_priority(scores: Scores, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rows


def diverse(scores: Scores, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if scores.X is None or len(rows) < 3:
        return rows
    Z = _standardized(scores.X)[rows]
    u = np.asarray(scores.uncertainty, dtype=np.float64)[rows]
    # weight u^2 against squared distance: the argmax of u^2 d^2 is that of u x d
    return rows[_greedy(Z, u**2, lambda gain: int(np.argmax(gain)))]


def badge(scores: Scores, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if scores.X is None or len(rows) < 3:
        return rows
    p = np.asarray(scores.probs, dtype=np.float64)[rows]
    residual = p.copy()
    residual[np.arange(len(rows)), scores.predicted[rows]] -= 1.0
    x = _standardized(scores.X)[rows]
    G = (residual[:, :, None] * x[:, None, :]).reshape(len(rows), -1)

    def d2_sample(gain: np.ndarray) -> int:
        w = np.maximum(gain, 0.0)
        total = w.sum()
        return int(rng.choice(len(w), p=w / total)) if total > 0 else int(np.argmax(gain))

    # k-means++ starts from the longest embedding: the largest expected gradient
    return rows[_greedy(G, np.ones(len(rows)), d2_sample)]


RANKERS: Mapping[ReviewOrder, Ranker] = {"priority": by_priority, "diverse": diverse, "badge": badge}


class ReviewRanking:
    """Re-assigns the review rows' priorities in the configured order (the stack's last step)."""

    def __init__(self, order: ReviewOrder, seed: int) -> None:
        self.rank = RANKERS[order]
        self.enabled = order != "priority"
        self.rng = np.random.default_rng([seed, 11])

    def apply(self, scores: Scores, review: np.ndarray, priority: np.ndarray) -> Optional[np.ndarray]:
        """Re-order ``priority`` (in place) over the ``review`` rows; returns the new order."""
        if not self.enabled:
            return None
        rows = np.flatnonzero(review)
        if len(rows) < 3:
            return None
        rows = rows[np.argsort(-priority[rows], kind="stable")]
        head, tail = rows[:MAX_RANKED], rows[MAX_RANKED:]
        ranked = self.rank(scores, head, self.rng)
        # The k-th shown gets the k-th highest priority, nudged so that ties (near-copies have
        # equal uncertainty) cannot undo the order.
        values = np.sort(priority[head])[::-1] - TIE_STEP * np.arange(len(head))
        priority[ranked] = values
        return np.concatenate([ranked, tail])
