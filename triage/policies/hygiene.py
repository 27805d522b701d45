"""Review-queue hygiene as the policy stack runs it, over the review-bound rows of a batch:
near-duplicates of recent requests and requests over their class quota are held back
(published as provisional predictions), the rest get priority x (0.5 + 0.5 x diversity).

Its windows are about the stream and survive model swaps, except what is sized by the model:
the class mix is rebuilt when the class set changes (``reset_classes``) and, so that a
mismatched batch never indexes past it, whenever a batch's class count differs; the duplicate
filter likewise when the feature count differs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np

from triage.policies.base import Routing
from triage.policies.dedupe import ClassMix, NearDuplicateFilter
from triage.scoring.routing import CONFIDENT, HELD_DUPLICATE, HELD_QUOTA, NOT_HELD
from triage.settings import PolicySettings

if TYPE_CHECKING:
    from triage.scoring.scores import Scores

MIN_MIX_WINDOW = 500


class ReviewHygiene:
    def __init__(self, policy: PolicySettings) -> None:
        self.dedupe_window = policy.dedupe_window
        self.radius = policy.dedupe_radius
        self.seed = policy.seed
        self.quota = policy.review_class_quota
        self.enabled = bool(policy.dedupe_window or policy.review_class_quota)
        self._features: Routing = {}
        self._dedupe: Optional[NearDuplicateFilter] = None
        self._mix: Optional[ClassMix] = None

    def on_routing(self, routing: Routing) -> None:
        # Feature scaling for a filter built from now on; a running one keeps its window.
        self._features = routing.get("features") or {}

    def reset_classes(self) -> None:
        self._mix = None

    def _class_mix(self, n_classes: int) -> ClassMix:
        if self._mix is None or self._mix.n_classes != n_classes:
            self._mix = ClassMix(n_classes, max(self.dedupe_window, MIN_MIX_WINDOW))
        return self._mix

    def _filter(self, n_features: int) -> NearDuplicateFilter:
        if self._dedupe is None or self._dedupe.n_features != n_features:
            mean, scale = self._features.get("mean"), self._features.get("scale")
            if mean is None or scale is None or len(mean) != n_features or len(scale) != n_features:
                mean = scale = None  # fitted for other features: standardize nothing
            self._dedupe = NearDuplicateFilter(
                n_features, window=self.dedupe_window, radius=self.radius, seed=self.seed,
                mean=None if mean is None else np.asarray(mean, dtype=np.float64),
                scale=None if scale is None else np.asarray(scale, dtype=np.float64),
            )
        return self._dedupe

    def apply(self, scores: Scores, reason: np.ndarray, hold: np.ndarray, priority: np.ndarray,
              is_out: np.ndarray) -> None:
        """Set ``hold`` and scale ``priority`` of the batch's review-bound rows, in place."""
        rows = np.flatnonzero((reason != CONFIDENT) & (hold == NOT_HELD))
        if not len(rows):
            return
        mix = self._class_mix(scores.probs.shape[1])
        dedupe: Optional[NearDuplicateFilter] = None
        fine: list[list[int]] = []
        coarse: list[int] = []
        if self.dedupe_window and scores.X is not None:
            dedupe = self._filter(scores.X.shape[1])
            fine_a, coarse_a = dedupe.keys(scores.X[rows])
            fine, coarse = fine_a.tolist(), coarse_a.tolist()
        predicted = scores.predicted[rows].tolist()
        outlier = is_out[rows].tolist()
        quota = self.quota
        for k, j in enumerate(rows.tolist()):  # review-bound rows only: a small minority
            crowd = 0
            if dedupe is not None:
                dup, crowd = dedupe.offer(tuple(fine[k]), coarse[k])
                if dup:
                    hold[j] = HELD_DUPLICATE
                    continue
            c = predicted[k]
            if quota and not outlier[k] and mix.over_quota(c, quota):
                hold[j] = HELD_QUOTA
                mix.add(c, admitted=False)
                continue
            diversity = mix.diversity(c) / (1.0 + crowd)
            mix.add(c)
            priority[j] *= 0.5 + 0.5 * diversity
