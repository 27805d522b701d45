"""Static active learning: choose which samples of a pool to label before training.

Pure numpy. Every strategy returns pool indices, deterministic for a seed.
- ``kcenter``: k-center greedy (the core-set heuristic): repeatedly take the point farthest
  from everything chosen so far, so the labelled set covers the pool. O(n*k), with an
  incremental min-distance vector.
- ``stratified-kmeans``: k-means into ``budget`` clusters and take the member nearest each
  centroid (diversity plus coverage); with labels, the budget is split across classes in
  proportion and clustering runs per class, so every class is represented.
- ``random``: uniform, the baseline.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from triage.errors import ConfigError


def _standardize(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    std = X.std(axis=0)
    return (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)


def kcenter(X: np.ndarray, budget: int, *, seed: int = 0, y: Optional[np.ndarray] = None) -> np.ndarray:
    Z = _standardize(X)
    rng = np.random.default_rng(seed)
    first = int(rng.integers(len(Z)))
    chosen = [first]
    sq = (Z**2).sum(axis=1)
    min_d = sq + sq[first] - 2 * Z @ Z[first]
    for _ in range(budget - 1):
        nxt = int(np.argmax(min_d))
        chosen.append(nxt)
        min_d = np.minimum(min_d, sq + sq[nxt] - 2 * Z @ Z[nxt])
    return np.asarray(chosen, dtype=np.int64)


def _kmeans_nearest(Z: np.ndarray, k: int, rng: np.random.Generator, iters: int = 25) -> np.ndarray:
    """Indices of the members nearest each of k centroids (k-means++ init, Lloyd steps)."""
    k = min(k, len(Z))
    centers = [Z[int(rng.integers(len(Z)))]]
    d2 = ((Z - centers[0]) ** 2).sum(axis=1)
    for _ in range(k - 1):
        probs = d2 / d2.sum() if d2.sum() > 0 else np.full(len(Z), 1 / len(Z))
        centers.append(Z[int(rng.choice(len(Z), p=probs))])
        d2 = np.minimum(d2, ((Z - centers[-1]) ** 2).sum(axis=1))
    C = np.asarray(centers)
    sq = (Z**2).sum(axis=1)
    for _ in range(iters):
        dist = sq[:, None] + (C**2).sum(axis=1)[None, :] - 2 * Z @ C.T
        assign = dist.argmin(axis=1)
        new = np.array([Z[assign == j].mean(axis=0) if (assign == j).any() else C[j] for j in range(k)])
        if np.allclose(new, C):
            break
        C = new
    dist = sq[:, None] + (C**2).sum(axis=1)[None, :] - 2 * Z @ C.T
    picked: list[int] = []
    for j in range(k):  # nearest unpicked member to each centroid
        for idx in np.argsort(dist[:, j]):
            if int(idx) not in picked:
                picked.append(int(idx))
                break
    return np.asarray(picked, dtype=np.int64)


def stratified_kmeans(X: np.ndarray, budget: int, *, seed: int = 0, y: Optional[np.ndarray] = None) -> np.ndarray:
    Z = _standardize(X)
    rng = np.random.default_rng(seed)
    if y is None:
        return _kmeans_nearest(Z, budget, rng)
    y = np.asarray(y).astype(str)
    classes, counts = np.unique(y, return_counts=True)
    # Largest-remainder apportionment, at least one per class when the budget allows.
    share = counts / counts.sum() * budget
    alloc = np.maximum(np.floor(share).astype(int), 1 if budget >= len(classes) else 0)
    while alloc.sum() > budget:
        alloc[np.argmax(alloc)] -= 1
    for j in np.argsort(-(share - np.floor(share))):
        if alloc.sum() >= budget:
            break
        alloc[j] += 1
    picked: list[np.ndarray] = []
    for cls, k in zip(classes, alloc):
        members = np.flatnonzero(y == cls)
        if k > 0:
            picked.append(members[_kmeans_nearest(Z[members], int(k), rng)])
    return np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)


def random_subset(X: np.ndarray, budget: int, *, seed: int = 0, y: Optional[np.ndarray] = None) -> np.ndarray:
    return np.random.default_rng(seed).choice(len(X), size=budget, replace=False).astype(np.int64)


STRATEGIES: dict[str, Callable[..., np.ndarray]] = {
    "kcenter": kcenter,
    "stratified-kmeans": stratified_kmeans,
    "random": random_subset,
}


def select(X: np.ndarray, budget: int, strategy: str, *, seed: int = 0, y: Optional[np.ndarray] = None) -> np.ndarray:
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if not 1 <= budget <= len(X):
        raise ConfigError(f"--budget must be between 1 and the pool size {len(X)}, got {budget}")
    return STRATEGIES[strategy](X, budget, seed=seed, y=y)


def coverage_radius(X: np.ndarray, chosen: np.ndarray) -> float:
    """Largest distance from any pool point to its nearest chosen point (lower = better cover)."""
    Z = _standardize(X)
    C = Z[chosen]
    d = (Z**2).sum(1)[:, None] + (C**2).sum(1)[None, :] - 2 * Z @ C.T
    return float(np.sqrt(np.maximum(d.min(axis=1), 0)).max())
