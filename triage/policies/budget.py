"""Annotation budget: how large a review rate the annotators can keep up with.

Inputs: annotation capacity (labels per hour, configured), the review backlog (review
requests produced minus labels received; fed from outside, e.g. by the backlog watcher that
reads the review/labels topic watermarks) and the sample throughput (counted here).

Allowed review inflow per hour = capacity + (target backlog - backlog) / drain time, where the
target backlog is ``backlog_hours`` of capacity and the drain time is one hour: a backlog
above target is worked off within about an hour, a small one lets the rate go above capacity.
The allowed review *rate* is that inflow over the samples per hour seen. Pure: time comes in.
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Optional

from triage.settings import PolicySettings

log = logging.getLogger("triage.policy")

DRAIN_HOURS = 1.0
RATE_HALF_LIFE_S = 300.0  # throughput estimate forgets with a 5-minute half-life
WARN_EVERY_S = 60.0


class BudgetController:
    def __init__(self, capacity_per_hour: float, backlog_hours: float = 1.0) -> None:
        self.capacity = float(capacity_per_hour)
        self.target_backlog = self.capacity * backlog_hours
        self.backlog: Optional[float] = None  # unknown until fed
        self._rate_per_s: Optional[float] = None
        self._last: Optional[float] = None
        self._pending = 0  # samples seen at the same instant as the last observation

    def feed_backlog(self, backlog: float) -> None:
        self.backlog = max(float(backlog), 0.0)

    def observe_samples(self, n: int, now: float) -> None:
        """Count ``n`` samples seen at time ``now`` (seconds) into the throughput estimate."""
        if self._last is None:
            self._last = now
            return
        dt = now - self._last
        if dt <= 0:
            # Same instant: fold into the next interval.
            self._pending += n
            return
        n, self._pending = n + self._pending, 0
        inst = n / dt
        w = 1.0 - math.exp(-dt * math.log(2) / RATE_HALF_LIFE_S)
        self._rate_per_s = inst if self._rate_per_s is None else (1 - w) * self._rate_per_s + w * inst
        self._last = now

    def allowed_inflow_per_hour(self) -> Optional[float]:
        if self.backlog is None:
            return None
        return max(self.capacity + (self.target_backlog - self.backlog) / DRAIN_HOURS, 0.0)

    def max_rate(self) -> Optional[float]:
        """Largest review rate (share of samples) the budget allows; None = unconstrained."""
        inflow = self.allowed_inflow_per_hour()
        if inflow is None or not self._rate_per_s:
            return None
        return min(inflow / (self._rate_per_s * 3600.0), 1.0)


class BudgetCap:
    """The budget as the policy stack uses it: the review rate allowed for each batch, and
    the conflict when forced reviews alone exceed it (reported, at most one WARNING a minute).
    Without ``annotation_capacity`` it allows everything."""

    def __init__(self, policy: PolicySettings, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.capacity = policy.annotation_capacity
        self.controller = (
            BudgetController(policy.annotation_capacity, policy.budget_backlog_hours)
            if policy.annotation_capacity else None
        )
        self.max_rate: Optional[float] = None
        self.conflict = False
        self._last_warn = -math.inf

    @property
    def backlog(self) -> Optional[float]:
        return self.controller.backlog if self.controller is not None else None

    def feed_backlog(self, backlog: float) -> None:
        if self.controller is not None:
            self.controller.feed_backlog(backlog)

    def observe(self, n: int) -> Optional[float]:
        """Count a batch of ``n`` samples; the most human actions (labels) per sample the
        annotators can absorb now (None = no cap). One label per request makes it a review rate."""
        if self.controller is None:
            return None
        self.controller.observe_samples(n, self.clock())
        self.max_rate = self.controller.max_rate()
        return self.max_rate

    def check(self, forced_rate: float, rule: str) -> None:
        """Forced reviews (outliers, risk rejections) are never capped: flag when they alone
        exceed the budget. ``forced_rate``: the human actions they ask for per sample."""
        cap = self.max_rate
        self.conflict = bool(cap is not None and forced_rate > cap)
        if not self.conflict:
            return
        now = self.clock()
        if now - self._last_warn >= WARN_EVERY_S:
            self._last_warn = now
            log.warning(
                "BUDGET CONFLICT: the %s policy's forced reviews ask for labels on %.1f%% of samples "
                "(counting every annotator a request asks for) but annotators can absorb only %.1f%% "
                "(capacity %.0f labels/h, backlog %s); "
                "the risk/outlier requirement wins and the backlog will grow",
                rule, 100 * forced_rate, 100 * (cap or 0.0), self.capacity, self.backlog,
            )
