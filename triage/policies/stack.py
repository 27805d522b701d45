"""The routing policy the scorer runs: base rule -> budget cap -> gate -> audit -> hygiene.

One object per scorer, kept across model swaps (its windows and counters are about the
stream, not the model); ``on_model`` swaps in the per-version parts (the rule's fitted
parameters, the gate) and drops per-class state when the class set changes.

Per batch (vectorized except the hygiene pass over review-bound rows, a small minority):
1. forced review: outliers, plus whatever the base rule refuses (risk: everything its
   certified thresholds reject).
2. optional review: uncertainty above the rule's threshold tau (threshold: fixed;
   review-rate: the window quantile that hits the target; risk: +inf).
3. budget: when annotators fall behind, a cap raises tau so the total review rate stays
   under what they can absorb; forced reviews are never capped. If forced reviews alone
   exceed the budget the forced rule wins and the conflict is reported (metric + WARNING).
4. gate: while closed, nothing is auto-accepted (review with reason gate, or provisional).
5. audit: a seeded random share of the auto-accepted is copied to review (reason audit).
6. hygiene: near-duplicates of recent review requests, and requests over a class quota,
   are published to predictions marked provisional (never dropped, always counted);
   priority = informativeness x (0.5 + 0.5 x diversity).
7. review order: the batch's review priorities re-assigned in the configured order
   (``--review-order``: most uncertain first, diverse, or BADGE), so the part of a batch
   annotators get to is spread out rather than a cluster of near-copies.
8. annotators: the most uncertain share of the batch's uncertain/outlier requests asks for
   several people (``triage.policies.consensus``); the budget of step 3 counts these human
   actions, not requests (the allowed rate is divided by the recent actions per request).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import numpy as np

from triage.policies.audit import AuditSampler
from triage.policies.base import BaseRule, Routing
from triage.policies.budget import BudgetCap
from triage.policies.consensus import ActionsPerRequest, AnnotatorPlanner
from triage.policies.gate import Gate
from triage.policies.hygiene import ReviewHygiene
from triage.policies.review_order import ReviewRanking
from triage.policies.review_rate import RateController
from triage.scoring.routing import (
    CONFIDENT, HELD_DUPLICATE, HELD_QUOTA, HOLDS, NOT_HELD, OUTLIER, UNCERTAIN, Decisions, ModelInfo, PolicySnapshot,
)
from triage.scoring.scores import Scores
from triage.settings import PolicySettings

if TYPE_CHECKING:
    from triage.quality.consensus import ConsensusPolicy


def informativeness(scores: Scores, is_out: np.ndarray) -> np.ndarray:
    """Review priority before hygiene: uncertainty; outliers rank by how far out they are,
    capped so a wildly corrupt point does not starve the uncertain queue."""
    far = np.minimum(np.nan_to_num(scores.outlier), 2.0) / 2.0
    return np.where(is_out, far, scores.uncertainty).astype(np.float64)


class PolicyStack:
    """Implements ``triage.scoring.routing.RoutingPolicy`` around one ``BaseRule``."""

    def __init__(
        self,
        policy: PolicySettings,
        rule: BaseRule,
        routing: Optional[Routing] = None,
        *,
        version: str = "",
        classes: Optional[Sequence[str]] = None,
        clock: Callable[[], float] = time.monotonic,
        consensus: Optional["ConsensusPolicy"] = None,
    ) -> None:
        self.rule = rule
        self.planner = AnnotatorPlanner(consensus)  # None: one annotator per request
        self.actions = ActionsPerRequest(self.planner.expected)
        # The window serves the review-rate rule, the budget cap and the observed rates.
        self.rate = RateController(policy.review_rate, policy.review_rate_window)
        self.budget = BudgetCap(policy, clock)
        self.gate = Gate(policy)
        self.audit = AuditSampler(policy.audit_rate, policy.seed)
        self.hygiene = ReviewHygiene(policy)
        self.ranking = ReviewRanking(policy.review_order, policy.seed)
        self.suppressed: Counter[str] = Counter()  # drained by the metrics after each batch
        self.tau = float(policy.uncertainty_threshold)
        self.classes: Optional[tuple[str, ...]] = None if classes is None else tuple(classes)
        self.routing: Routing = {}
        self.version = ""
        self.set_routing(routing, version)

    # --- per model version -----------------------------------------------------------------
    def on_model(self, model: ModelInfo) -> None:
        """Scorer swap hook: load the new version's fitted parameters."""
        classes = tuple(model.classes)
        if classes != self.classes:  # per-class windows mean nothing for another class set
            self.hygiene.reset_classes()
            self.classes = classes
        self.set_routing((model.manifest or {}).get("routing"), model.version)

    def set_routing(self, routing: Optional[Routing], version: str) -> None:
        self.routing = routing or {}
        self.version = version
        self.rule.on_routing(self.routing, version)
        self.gate.on_routing(self.routing, version)
        self.hygiene.on_routing(self.routing)

    def set_live_risk(self, version: str, doc: dict[str, Any]) -> None:
        """The audit consumer's live-certified risk threshold for ``version`` (risk rule only)."""
        apply = getattr(self.rule, "set_live", None)
        if apply is not None:
            apply(version, doc)

    def feed_backlog(self, backlog: float) -> None:
        """Hook for the backlog watcher: review requests produced minus labels received."""
        self.budget.feed_backlog(backlog)

    # --- per batch -----------------------------------------------------------------------------
    def decide(self, scores: Scores) -> Decisions:
        n = len(scores)
        u = scores.uncertainty
        is_out = scores.outlier > 1.0  # NaN (detection off) compares False
        forced = is_out | self.rule.forced(scores)

        max_rate = self.budget.observe(n)  # human actions per sample the annotators can absorb
        per_request = self.actions.ratio
        self.rate.push(u, forced)
        tau = self.rule.threshold(self.rate)
        if max_rate is not None:  # the cap only ever raises tau (quantile falls with the rate)
            tau = max(tau, self.rate.quantile(max_rate / per_request))
        self.tau = float(tau)
        self.budget.check(self.rate.forced_rate * per_request, self.rule.name)

        reason = np.full(n, CONFIDENT, dtype=np.int8)
        reason[forced | (u > tau)] = UNCERTAIN
        reason[is_out] = OUTLIER
        hold = np.zeros(n, dtype=np.int8)
        self.gate.apply(reason, hold)
        audit = self.audit.draw((reason == CONFIDENT) & (hold == NOT_HELD))
        priority = informativeness(scores, is_out)
        if self.hygiene.enabled:
            self.hygiene.apply(scores, reason, hold, priority, is_out)
        for code in (HELD_DUPLICATE, HELD_QUOTA):  # review requests withheld (gate holds are not)
            k = int((hold == code).sum())
            if k:
                self.suppressed[HOLDS[code]] += k
        review = (reason != CONFIDENT) & (hold == NOT_HELD)
        self.ranking.apply(scores, review, priority)
        annotators = self.planner.plan(reason, review, priority)
        self.actions.record(annotators, review)
        decisions = Decisions(reason=reason, priority=priority, audit=audit, hold=hold, annotators=annotators)
        self.rate.record(decisions.review, decisions.accepted)
        return decisions

    # --- what the metrics export -------------------------------------------------------------
    def snapshot(self) -> PolicySnapshot:
        rule = self.rule.snapshot(self.budget.max_rate)
        ece = self.routing.get("ece") or {}
        return PolicySnapshot(
            policy=self.rule.name,
            tau=self.tau,
            review_rate_observed=self.rate.observed,
            coverage_stream=self.rate.coverage,
            gate_open=self.gate.open,
            budget_conflict=self.budget.conflict,
            review_rate_target=rule.review_rate_target,
            coverage_holdout=rule.coverage_holdout,
            risk_alpha=rule.risk_alpha,
            risk_threshold=rule.risk_threshold,
            risk_thresholds=rule.risk_thresholds,
            ece_before=ece.get("before"),
            ece_after=ece.get("after"),
            budget_max_rate=self.budget.max_rate,
            backlog=self.budget.backlog,
        )

    def drain_suppressed(self) -> dict[str, int]:
        out = dict(self.suppressed)
        self.suppressed.clear()
        return out
