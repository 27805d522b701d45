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

import math
from typing import Optional

DRAIN_HOURS = 1.0
RATE_HALF_LIFE_S = 300.0  # throughput estimate forgets with a 5-minute half-life


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
