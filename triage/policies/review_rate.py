"""Keep the share of samples sent for review near a target, online, under drift.

A sliding-window quantile controller: the window holds the uncertainties of the last
``window`` samples (the current batch included: its scores are known before any of it is
routed). The review threshold is the uncertainty quantile that puts ``target`` of the window
above it, after subtracting what must go to review anyway (outliers, risk rejections).

How fast it adapts: after a step change in the score distribution the threshold is exact
once the window holds only post-drift samples, i.e. within ``window`` samples; halfway there
(window/2 samples) the realized rate is typically already within ~2x of the target. A batch
larger than the window is handled with its own quantile immediately.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np

from triage.policies.base import RuleSnapshot, Routing
from triage.settings import PolicySettings

if TYPE_CHECKING:
    from triage.scoring.scores import Scores


class RateController:
    """Fraction of samples above the returned threshold ~= target (pure; no clock)."""

    def __init__(self, target: float, window: int) -> None:
        self.target = float(target)
        self.window = int(window)
        self._u = np.zeros(self.window, dtype=np.float64)
        self._forced = np.zeros(self.window, dtype=bool)
        self._reviewed = np.zeros(self.window, dtype=bool)
        self._accepted = np.zeros(self.window, dtype=bool)
        self._pos = 0
        self._filled = 0
        self.threshold = 1.0

    def _push(self, buf: np.ndarray, values: np.ndarray) -> None:
        values = values[-self.window:]
        n = len(values)
        end = self._pos + n
        if end <= self.window:
            buf[self._pos:end] = values
        else:
            cut = self.window - self._pos
            buf[self._pos:] = values[:cut]
            buf[: n - cut] = values[cut:]

    def push(self, u: np.ndarray, forced: np.ndarray) -> None:
        """Add a batch: its uncertainties and which of its rows must be reviewed anyway."""
        n = min(len(u), self.window)
        self._push(self._u, np.asarray(u, dtype=np.float64))
        self._push(self._forced, np.asarray(forced, dtype=bool))
        self._pos = (self._pos + n) % self.window
        self._filled = min(self._filled + n, self.window)

    def quantile(self, target: float) -> float:
        """The threshold that sends ``target`` of the window to review, forced rows included.
        Non-increasing in ``target``, so a cap is ``max(quantile(a), quantile(b))``."""
        u_w, f_w = self._u[: self._filled], self._forced[: self._filled]
        free = u_w[~f_w]
        if not len(free):  # everything must be reviewed anyway: nothing optional to add
            self.threshold = np.inf
            return self.threshold
        # Share of the optional (non-forced) samples to send so the total lands on target.
        need = (target * len(u_w) - f_w.sum()) / len(free)
        if need <= 0:
            self.threshold = np.inf
        elif need >= 1:
            self.threshold = -np.inf
        else:
            self.threshold = float(np.quantile(free, 1.0 - need, method="higher"))
        return self.threshold

    def update(self, u: np.ndarray, forced: np.ndarray, target: float | None = None) -> float:
        """Add a batch (uncertainty, must-review mask) and return the threshold for it."""
        self.push(u, forced)
        return self.quantile(self.target if target is None else target)

    def record(self, reviewed: np.ndarray, accepted: np.ndarray) -> None:
        """Record where the batch given to ``update`` actually went (observed rates)."""
        n = min(len(reviewed), self.window)
        saved, self._pos = self._pos, (self._pos - n) % self.window
        self._push(self._reviewed, np.asarray(reviewed, dtype=bool))
        self._push(self._accepted, np.asarray(accepted, dtype=bool))
        self._pos = saved

    @property
    def observed(self) -> float:
        """Share of the window actually sent to review."""
        return float(self._reviewed[: self._filled].mean()) if self._filled else 0.0

    @property
    def coverage(self) -> float:
        """Share of the window auto-accepted."""
        return float(self._accepted[: self._filled].mean()) if self._filled else 0.0

    @property
    def forced_rate(self) -> float:
        return float(self._forced[: self._filled].mean()) if self._filled else 0.0


class ReviewRateRule:
    """Base rule ``review-rate``: the threshold that keeps the review share near the target
    (the stack's budget cap may lower the share further)."""

    name = "review-rate"
    requires_routing = False

    def __init__(self, policy: PolicySettings) -> None:
        self.target = float(policy.review_rate)

    def on_routing(self, routing: Routing, version: str) -> None:
        pass  # the window is about the stream, not the model

    def forced(self, scores: Scores) -> np.ndarray:
        return np.zeros(len(scores), dtype=bool)

    def threshold(self, window: RateController) -> float:
        return window.quantile(self.target)

    def snapshot(self, budget_rate: Optional[float]) -> RuleSnapshot:
        target = self.target if budget_rate is None else min(self.target, budget_rate)
        return RuleSnapshot(review_rate_target=target)
