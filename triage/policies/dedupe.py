"""Review-queue hygiene: near-duplicate suppression, per-class quotas, diversity.

Near duplicates: features are standardized (reference mean/std when known), projected on
``DIMS`` seeded random directions and cut into cells ``radius`` wide, in ``TABLES`` grids
with random offsets (E2LSH). Two samples are near-duplicates when they share a cell in any
grid; a review request whose cell was used by one of the last ``window`` review requests is
suppressed. Hashing is vectorized over the batch; only review-bound rows touch the Python
window (they are the small minority).

Diversity: a review request is worth less when many recent requests fell in the same coarse
cell, or share its predicted class; the priority is scaled down accordingly.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Optional

import numpy as np

DIMS = 12
TABLES = 6


class NearDuplicateFilter:
    def __init__(
        self,
        n_features: int,
        *,
        window: int,
        radius: float,
        seed: int = 0,
        mean: Optional[np.ndarray] = None,
        scale: Optional[np.ndarray] = None,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.n_features = n_features
        self.window = window
        self.radius = radius
        self.mean = np.zeros(n_features) if mean is None else np.asarray(mean, dtype=np.float64)
        scale = np.ones(n_features) if scale is None else np.asarray(scale, dtype=np.float64)
        # Floor at the median scale: a near-constant feature must not turn jitter into distance.
        floor = float(np.median(scale[scale > 1e-9])) if (scale > 1e-9).any() else 1.0
        self.inv_scale = 1.0 / np.maximum(scale, floor)
        proj = rng.normal(size=(n_features, DIMS))
        self.proj = proj / np.linalg.norm(proj, axis=0, keepdims=True)
        self.offsets = rng.random((TABLES, DIMS)) * radius
        self.mix = rng.integers(1, 2**62, size=DIMS, dtype=np.int64) | 1
        self._recent: deque[tuple[int, ...]] = deque()
        self._cells: Counter[int] = Counter()
        self._coarse: Counter[int] = Counter()

    def keys(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, TABLES) fine cell keys and (N,) coarse cell keys, as int64 hashes."""
        z = ((np.asarray(X, dtype=np.float64) - self.mean) * self.inv_scale) @ self.proj
        fine = np.floor((z[:, None, :] + self.offsets[None]) / self.radius).astype(np.int64)
        coarse = np.floor(z / (4 * self.radius)).astype(np.int64)
        with np.errstate(over="ignore"):
            fine_keys = (fine * self.mix).sum(axis=2) + np.arange(TABLES, dtype=np.int64)
            coarse_keys = (coarse * self.mix).sum(axis=1)
        return fine_keys, coarse_keys

    def offer(self, fine: tuple[int, ...], coarse: int) -> tuple[bool, int]:
        """(duplicate?, recent requests in the same coarse cell). Non-duplicates are added."""
        if any(k in self._cells for k in fine):
            return True, self._coarse[coarse]
        crowd = self._coarse[coarse]
        self._recent.append((*fine, coarse))
        self._cells.update(fine)
        self._coarse[coarse] += 1
        if len(self._recent) > self.window:
            *old_fine, old_coarse = self._recent.popleft()
            for k in old_fine:
                self._drop(self._cells, k)
            self._drop(self._coarse, old_coarse)
        return False, crowd

    @staticmethod
    def _drop(counter: Counter[int], key: int) -> None:
        counter[key] -= 1
        if counter[key] <= 0:
            del counter[key]


class ClassMix:
    """Predicted classes of the last ``window`` review candidates (quota and diversity).

    The window holds every review-bound candidate, admitted or held back (held ones as -1),
    so a quota q means "a class gets at most q of recent review slots": it can never freeze
    the window, and a stream of a single class still gets a share q reviewed."""

    def __init__(self, n_classes: int, window: int) -> None:
        self.n_classes = n_classes
        self.window = window
        self._recent: deque[int] = deque()
        self._counts = np.zeros(n_classes, dtype=np.int64)
        self._admitted = 0

    def over_quota(self, c: int, quota: float) -> bool:
        # Needs a few candidates in the window before a share means anything.
        n = len(self._recent)
        return n >= 2 * self.n_classes and self._counts[c] / n > quota

    def add(self, c: int, admitted: bool = True) -> None:
        self._recent.append(c if admitted else -1)
        if admitted:
            self._counts[c] += 1
            self._admitted += 1
        if len(self._recent) > self.window:
            old = self._recent.popleft()
            if old >= 0:
                self._counts[old] -= 1
                self._admitted -= 1

    def diversity(self, c: int) -> float:
        """1 when the class is at most its fair share of recent requests, less above it."""
        if not self._admitted:
            return 1.0
        fair = 1.0 / self.n_classes
        return min(1.0, fair / max(self._counts[c] / self._admitted, 1e-12))
