"""The routing policy the scorer runs: base rule -> budget cap -> gate -> audit -> hygiene.

One object per scorer, kept across model swaps (its windows and counters are about the
stream, not the model); ``on_model`` swaps in the per-version parts (risk thresholds, gate).

Per batch (vectorized except the hygiene pass over review-bound rows, a small minority):
1. forced review: outliers; under ``risk``, everything the certified thresholds reject.
2. optional review: uncertainty above tau, where tau is fixed (threshold), controlled to
   hit the review-rate target (review-rate) or +inf (risk: accept all that is certified).
3. budget: when annotators fall behind, a cap raises tau so the total review rate stays
   under what they can absorb; forced reviews are never capped. If forced reviews alone
   exceed the budget the risk policy wins and the conflict is reported (metric + WARNING).
4. gate: while closed, nothing is auto-accepted (review with reason gate, or provisional).
5. audit: a seeded random share of the auto-accepted is copied to review (reason audit).
6. hygiene: near-duplicates of recent review requests, and requests over a class quota,
   are published to predictions marked provisional (never dropped, always counted);
   priority = informativeness x (0.5 + 0.5 x diversity).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any, Callable, Optional

import numpy as np

from triage.policies.budget import BudgetController
from triage.policies.dedupe import ClassMix, NearDuplicateFilter
from triage.policies.gate import GateState, evaluate_gate
from triage.policies.review_rate import RateController
from triage.policies.risk import NEVER, accept_mask
from triage.routing import (
    CONFIDENT, GATE, HELD_DUPLICATE, HELD_GATE, HELD_QUOTA, HOLDS, NOT_HELD, OUTLIER, UNCERTAIN, Decisions,
)
from triage.scoring import Scores
from triage.settings import Settings

log = logging.getLogger("triage.policy")

WARN_EVERY_S = 60.0


def risk_params_usable(routing: Optional[dict[str, Any]], settings: Settings) -> tuple[Optional[dict[str, Any]], str]:
    """The fitted risk parameters if they were certified for these settings, else why not."""
    risk = (routing or {}).get("risk")
    if not risk:
        return None, "no certified risk threshold for this model version (needs held-out labels: --reference with y)"
    wanted = {"alpha": settings.policy.risk_alpha, "delta": settings.policy.risk_delta, "mondrian": settings.policy.risk_mondrian}
    got = {k: risk.get(k) for k in wanted}
    acq = (routing or {}).get("acquisition")
    if got != wanted or acq != settings.policy.acquisition:
        return None, (f"risk threshold was certified for {got} acquisition={acq}, "
                      f"but serving asks {wanted} acquisition={settings.policy.acquisition}")
    return risk, ""


class PolicyStack:
    def __init__(
        self,
        settings: Settings,
        routing: Optional[dict[str, Any]] = None,
        *,
        version: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._rng = np.random.default_rng(settings.policy.seed)
        self.rate = RateController(settings.policy.review_rate, settings.policy.review_rate_window)
        self.budget = (
            BudgetController(settings.policy.annotation_capacity, settings.policy.budget_backlog_hours)
            if settings.policy.annotation_capacity else None
        )
        self.budget_conflict = False
        self.budget_max_rate: Optional[float] = None
        self._last_warn = -np.inf
        self._dedupe: Optional[NearDuplicateFilter] = None
        self._mix: Optional[ClassMix] = None
        self.suppressed: Counter[str] = Counter()  # drained by the metrics after each batch
        self.tau = float(settings.policy.uncertainty_threshold)
        self.gate = GateState(True, "")
        self.routing: dict[str, Any] = {}
        self.risk: Optional[dict[str, Any]] = None
        self.version = ""
        self.set_routing(routing, version)

    # --- per model version -----------------------------------------------------------------
    def on_model(self, model: Any) -> None:
        """Scorer swap hook: load the new version's fitted parameters."""
        self.set_routing((model.manifest or {}).get("routing"), model.version)

    def set_routing(self, routing: Optional[dict[str, Any]], version: str) -> None:
        s = self.settings
        self.routing = routing or {}
        self.version = version
        self.risk = None
        if s.policy.policy == "risk":
            self.risk, why = risk_params_usable(routing, s)
            if self.risk is None:
                log.error("risk policy for model %s: %s -> nothing is auto-accepted (all to review)", version, why)
        old = self.gate
        self.gate = evaluate_gate(routing, min_accuracy=s.policy.gate_min_accuracy, min_coverage=s.policy.gate_min_coverage)
        if self.gate.open != old.open or not old.why:
            if self.gate.open:
                log.info("gate OPEN for model %s: %s", version, self.gate.why)
            else:
                log.warning("gate CLOSED for model %s: %s -> nothing auto-accepted (%s)", version, self.gate.why, s.policy.gate_mode)

    def feed_backlog(self, backlog: float) -> None:
        """Hook for the backlog watcher: review requests produced minus labels received."""
        if self.budget is not None:
            self.budget.feed_backlog(backlog)

    # --- per batch -----------------------------------------------------------------------------
    def decide(self, scores: Scores) -> Decisions:
        s = self.settings
        n = len(scores)
        u = scores.uncertainty
        is_out = scores.outlier > 1.0  # NaN (detection off) compares False
        forced = is_out.copy()
        if s.policy.policy == "risk":
            if self.risk is None:
                forced[:] = True
            else:
                forced |= ~accept_mask(self.risk, u, scores.predicted)

        max_rate = self._budget_rate(n)
        if s.policy.policy == "review-rate":
            target = s.policy.review_rate if max_rate is None else min(s.policy.review_rate, max_rate)
            tau = self.rate.update(u, forced, target)
        else:
            tau = s.policy.uncertainty_threshold if s.policy.policy == "threshold" else np.inf
            if max_rate is not None:
                tau = max(tau, self.rate.update(u, forced, max_rate))
            else:
                self.rate.update(u, forced, 1.0)  # keeps the window (observed rates) current
        self.tau = float(tau)
        self._check_conflict(max_rate)

        reason = np.full(n, CONFIDENT, dtype=np.int8)
        reason[forced | (u > tau)] = UNCERTAIN
        reason[is_out] = OUTLIER
        hold = np.zeros(n, dtype=np.int8)
        if not self.gate.open:
            accepted = reason == CONFIDENT
            if s.policy.gate_mode == "review":
                reason[accepted] = GATE
            else:
                hold[accepted] = HELD_GATE
        accepted = (reason == CONFIDENT) & (hold == NOT_HELD)
        audit = accepted & (self._rng.random(n) < s.policy.audit_rate) if s.policy.audit_rate else np.zeros(n, bool)
        priority = np.where(is_out, np.minimum(np.nan_to_num(scores.outlier), 2.0) / 2.0, u).astype(np.float64)
        if s.policy.dedupe_window or s.policy.review_class_quota:
            self._hygiene(scores, reason, hold, priority, is_out)
        for code in (HELD_DUPLICATE, HELD_QUOTA):  # review requests withheld (gate holds are not)
            k = int((hold == code).sum())
            if k:
                self.suppressed[HOLDS[code]] += k
        decisions = Decisions(reason=reason, priority=priority, audit=audit, hold=hold)
        self.rate.record(decisions.review, decisions.accepted)
        return decisions

    def _budget_rate(self, n: int) -> Optional[float]:
        if self.budget is None:
            return None
        self.budget.observe_samples(n, self.clock())
        self.budget_max_rate = self.budget.max_rate()
        return self.budget_max_rate

    def _check_conflict(self, max_rate: Optional[float]) -> None:
        forced_rate = self.rate.forced_rate
        self.budget_conflict = bool(max_rate is not None and forced_rate > max_rate)
        if self.budget_conflict:
            now = self.clock()
            if now - self._last_warn >= WARN_EVERY_S:
                self._last_warn = now
                log.warning(
                    "BUDGET CONFLICT: the %s policy must send %.1f%% of samples to review but "
                    "annotators can absorb only %.1f%% (capacity %.0f labels/h, backlog %s); "
                    "the risk/outlier requirement wins and the backlog will grow",
                    self.settings.policy.policy, 100 * forced_rate, 100 * max_rate,
                    self.settings.policy.annotation_capacity, self.budget.backlog if self.budget else None,
                )

    def _hygiene(self, scores: Scores, reason: np.ndarray, hold: np.ndarray, priority: np.ndarray,
                 is_out: np.ndarray) -> None:
        s = self.settings
        rows = np.flatnonzero((reason != CONFIDENT) & (hold == NOT_HELD))
        if not len(rows):
            return
        if self._mix is None:
            self._mix = ClassMix(scores.probs.shape[1], max(s.policy.dedupe_window, 500))
        fine = coarse = None
        if s.policy.dedupe_window and scores.X is not None:
            if self._dedupe is None:
                feats = self.routing.get("features") or {}
                self._dedupe = NearDuplicateFilter(
                    scores.X.shape[1], window=s.policy.dedupe_window, radius=s.policy.dedupe_radius, seed=s.policy.seed,
                    mean=feats.get("mean"), scale=feats.get("scale"),
                )
            fine_a, coarse_a = self._dedupe.keys(scores.X[rows])
            fine, coarse = fine_a.tolist(), coarse_a.tolist()
        predicted = scores.predicted[rows].tolist()
        outlier = is_out[rows].tolist()
        quota = s.policy.review_class_quota
        mix = self._mix
        for k, j in enumerate(rows.tolist()):
            crowd = 0
            if fine is not None and self._dedupe is not None:
                dup, crowd = self._dedupe.offer(tuple(fine[k]), coarse[k])
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

    # --- what the metrics export -------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        risk = self.risk or {}
        routing = self.routing
        ece = routing.get("ece") or {}
        target = self.settings.policy.review_rate if self.settings.policy.policy == "review-rate" else None
        if self.settings.policy.policy == "review-rate" and self.budget_max_rate is not None:
            target = min(target or 1.0, self.budget_max_rate)
        thresholds = risk.get("thresholds") if risk.get("mondrian") else None
        return {
            "policy": self.settings.policy.policy,
            "review_rate_target": target,
            "review_rate_observed": self.rate.observed,
            "coverage_stream": self.rate.coverage,
            "coverage_holdout": risk.get("coverage") if risk else None,
            "risk_alpha": self.settings.policy.risk_alpha if self.settings.policy.policy == "risk" else None,
            "risk_threshold": (risk.get("threshold") if risk else (NEVER if self.settings.policy.policy == "risk" else None)),
            "risk_thresholds": thresholds,
            "gate_open": self.gate.open,
            "ece_before": ece.get("before"),
            "ece_after": ece.get("after"),
            "budget_conflict": self.budget_conflict,
            "budget_max_rate": self.budget_max_rate,
            "backlog": self.budget.backlog if self.budget else None,
            "tau": self.tau,
        }

    def drain_suppressed(self) -> dict[str, int]:
        out = dict(self.suppressed)
        self.suppressed.clear()
        return out
