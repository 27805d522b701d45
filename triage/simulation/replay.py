"""One ``triage simulate`` run: a labelled pool replayed as a stream through the service's code.

1. Static bootstrap: ``selection.select`` picks ``initial_labels`` pool rows without looking
   at labels; ``bundles.train_initial`` trains v1 on them, as ``triage train`` does (its
   holdout is split off those labels; the unlabelled pool is the outlier reference).
2. Steps, each ending in one retrain. A step streams rounds of ``round_size`` samples from the
   not-yet-labelled pool (a seeded order); the CURRENT model scores each round
   (``scoring.score_batch``) and the scorer's policy routes it (``PolicyStack.decide``). The
   annotator answers review requests in priority order, as annotators work the review queue,
   up to ``labels_per_round`` (or every request, with ``review_rate``). A step takes one round,
   or with ``retrain_growth`` g as many as it needs for g x the labels already spent (the model
   between retrains is the one a service would be serving too).
3. The labels go to the registry's ``LabelStore`` and ``retraining.retrain_once`` trains a
   candidate and promotes or rejects it (the promotion gate); a promoted version is loaded
   from the registry as the scorer's hot-swap loads it.
4. When the stream is exhausted the samples never labelled come round again (a new pass),
   until the label budget or the pool runs out.

Random is paired: it is given the per-step label counts of the strategy it is compared with
(``schedule``) and labels exactly as many uniformly drawn stream samples at each step, so both
get the same labels per retrain and the same retrains; past the end of the schedule it takes
the nominal count (``step_labels``).

The curve is the test accuracy of the CURRENT model against the labels spent so far (initial
labels included, and the share the retrainer reserves for evaluation: they cost an annotator
as much as any other). The test rows are never streamed.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from triage.lifecycle.bundles import train_initial
from triage.lifecycle.labelstore import LabelStore
from triage.policies import make_policy, prepare_model
from triage.policies.stack import PolicyStack
from triage.lifecycle.registry import Registry
from triage.lifecycle.retraining import RetrainOutcome, retrain_once
from triage.scoring.scores import score_batch
from triage.lifecycle.selection import select
from triage.scoring.servable import ServingModel
from triage.lifecycle.loading import serving_model_from_registry
from triage.settings import Settings
from triage.simulation.datasets import Split
from triage.simulation.strategies import Strategy

Curve = list[tuple[int, float]]
ANNOTATOR = "triage-simulate"


@dataclass(frozen=True)
class ReplayConfig:
    initial_labels: int = 20
    round_size: int = 100
    labels_per_round: Optional[int] = 25  # None: label every review request
    review_rate: Optional[float] = None  # the policy's review share; default labels_per_round / round_size
    budget: Optional[int] = None  # total labels, initial ones included; None: the whole pool
    bootstrap: str = "stratified-kmeans"
    # A step gathers at least this share of the labels spent (0: a retrain after every round);
    # 0.1: 25 retrains instead of 60 to 1,500 labels, 32 instead of 120 to 3,000 (docs/performance.md).
    retrain_growth: float = 0.1
    step_cap: Optional[int] = None  # random: the strategies' budget, where their last step is cut short

    @property
    def round_labels(self) -> int:
        """Labels a round gives at the nominal rate (every review request: the review share)."""
        if self.labels_per_round is not None:
            return self.labels_per_round
        return max(1, int(round((self.review_rate or 0.05) * self.round_size)))


def step_labels(cfg: ReplayConfig, spent: int) -> int:
    """The nominal labels of a step after ``spent`` labels: whole rounds until ``retrain_growth``
    x ``spent`` (at least one round). A strategy labels fewer when its queue runs short."""
    per = cfg.round_labels
    want = max(1, math.ceil(cfg.retrain_growth * spent))
    return per * math.ceil(want / per)


def planned_steps(cfg: ReplayConfig, pool: int, budget: int) -> int:
    """Steps (retrains) from the bootstrap to ``budget`` labels at the nominal counts."""
    spent, steps = min(cfg.initial_labels, pool), 0
    while spent < min(budget, pool):
        spent += step_labels(cfg, spent)
        steps += 1
    return steps


@dataclass
class RunResult:
    strategy: str
    seed: int
    curve: Curve
    retrains: list[str] = field(default_factory=list)  # per step: the retrain's outcome
    seconds: float = 0.0
    full: list[bool] = field(default_factory=list)  # per step: labelled the nominal count (capped by the budget)

    @property
    def outcomes(self) -> Counter[str]:
        return Counter(self.retrains)

    def first_steps(self, steps: int) -> "RunResult":
        """This run as it stood after ``steps`` steps."""
        return replace(self, curve=self.curve[: steps + 1], retrains=self.retrains[:steps], full=self.full[:steps])

    @property
    def counts(self) -> list[int]:
        """Labels given at each step."""
        return [b[0] - a[0] for a, b in zip(self.curve, self.curve[1:])]

    def schedule_key(self) -> tuple[int, ...]:
        """What a paired random run must copy: the counts up to the last step that fell short
        of the nominal count (beyond it random's nominal counts are the same)."""
        short = [i for i, full in enumerate(self.full) if not full]
        return tuple(self.counts[: short[-1] + 1]) if short else ()


def _quiet(message: str) -> None:
    pass


def scratch_dir() -> Optional[str]:
    """Memory-backed /dev/shm for the throwaway registries when there is one: the registry
    fsyncs every write, which on a busy disk costs more than the training."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def run_settings(base: Settings, strategy: Strategy, seed: int, cfg: ReplayConfig) -> Settings:
    """The service settings this run uses: the user's, the strategy's overrides, and a
    review-rate policy at the round's label share (its window is one round, so every round
    is judged by its own uncertainty quantile rather than by older models' scores). Labels
    go straight into the label store, standing in for the trainer's Kafka ingest; as with
    ``accept_new_classes`` there, a class the bootstrap missed is learned from its first label."""
    rate = cfg.review_rate
    if rate is None:
        rate = min((cfg.labels_per_round or cfg.round_size) / cfg.round_size, 0.99)
    return base.replace(**{**strategy.overrides, "policy": "review-rate", "review_rate": rate,
                           "review_rate_window": max(cfg.round_size, 50), "seed": seed,
                           "accept_new_classes": True})


def _served(registry: Registry, settings: Settings) -> ServingModel:
    """CURRENT as a scorer loads it on a hot-swap (verified, warmed, routing attached)."""
    current = registry.current()
    assert current is not None
    return prepare_model(settings.policy, serving_model_from_registry(registry, current, settings.serving))


def accuracy(model: ServingModel, X: np.ndarray, y: np.ndarray, settings: Settings) -> float:
    scores = score_batch(model, X, settings.policy.acquisition)
    return float((np.asarray(model.classes)[scores.predicted] == y).mean())


def pick(policy: PolicyStack, scores: Any, limit: int) -> np.ndarray:
    """Positions (in the round) the annotator labels: review requests, highest priority first."""
    decisions = policy.decide(scores)
    review = np.flatnonzero(decisions.review)
    # Highest priority first; ties (rare) broken by stream position, as a queue would.
    order = review[np.argsort(-decisions.priority[review], kind="stable")]
    return order[:limit]


class Replay:
    """One (strategy, seed) run, a step at a time (``step``), so that the seeds of a strategy
    can advance together and stop once their mean has reached the target. ``schedule``
    (random only): the label count of each step, from the paired strategy's run."""

    def __init__(self, split: Split, strategy: Strategy, seed: int, cfg: ReplayConfig, base: Settings,
                 schedule: Sequence[int] = ()) -> None:
        self.started = time.monotonic()
        self.split, self.strategy, self.seed, self.cfg = split, strategy, seed, cfg
        self.schedule = list(schedule)
        self.s = run_settings(base, strategy, seed, cfg)
        X = split.X_pool
        self.budget = min(cfg.budget or len(X), len(X))
        self.rng = np.random.default_rng([seed, 7])
        self.labelled = np.zeros(len(X), dtype=bool)
        self.labelled[bootstrap(split, cfg, seed)] = True
        self.retrains: list[str] = []
        self.full: list[bool] = []
        self.stream = np.zeros(0, dtype=np.int64)  # what is left of the current pass
        logging.getLogger("triage").setLevel(logging.ERROR)  # thousands of routine lines otherwise
        self._tmp = tempfile.TemporaryDirectory(prefix="triage-simulate-", dir=scratch_dir())
        self.registry = new_registry(Path(self._tmp.name), split, self.labelled, self.s)
        self.store = LabelStore(self.registry.data_dir)
        self.model = _served(self.registry, self.s)
        self.policy = make_policy(self.s.policy, self.model)
        self.spent = int(self.labelled.sum())
        self.curve: Curve = [(self.spent, accuracy(self.model, split.X_test, split.y_test, self.s))]

    @property
    def done(self) -> bool:
        return self.spent >= self.budget or bool(self.labelled.all())

    def _next(self, n: int) -> np.ndarray:
        """The next ``n`` stream samples; a pass that runs short is topped up by the next pass
        (a seeded order of the unlabelled rows not still waiting in this one)."""
        if len(self.stream) < n:
            waiting = np.zeros(len(self.labelled), dtype=bool)
            waiting[self.stream] = True
            self.stream = np.concatenate([self.stream, self.rng.permutation(np.flatnonzero(~self.labelled & ~waiting))])
        chunk, self.stream = self.stream[:n], self.stream[n:]
        return chunk

    def _label(self, rows: np.ndarray, limit: Optional[int] = None) -> None:
        """Label the picked ``rows`` (one action each; ``limit``: what the round may spend)."""
        X, y = self.split.X_pool, self.split.y_pool
        self.store.append(label_rows(X, y, rows, first_offset=self.spent))
        self.labelled[rows] = True
        self.spent += len(rows)

    def _nominal(self) -> int:
        """This step's nominal labels, cut short at the budget (for random also where the
        strategies' budget cuts theirs, so that its nominal steps are theirs)."""
        n = step_labels(self.cfg, self.spent)
        for cap in (self.cfg.step_cap, self.budget):
            if cap is not None and self.spent < cap:
                n = min(n, cap - self.spent)
        return n

    def _annotate(self, nominal: int) -> None:
        """Stream rounds until the annotator has given ``nominal`` labels (or the stream has
        gone round once without enough review requests). With ``labels_per_round`` a round
        gives at most that many and the step no more than ``nominal``; without, every review
        request of a round is answered (within the budget), so a step may give more."""
        X, s, cfg = self.split.X_pool, self.s, self.cfg
        goal, streamed, unlabelled = self.spent + nominal, 0, int((~self.labelled).sum())
        self._before_annotating(goal)
        while self.spent < goal and streamed < unlabelled:
            chunk = self._next(cfg.round_size)
            streamed += len(chunk)
            scores = score_batch(self.model, X[chunk], s.policy.acquisition)
            limit = self.budget - self.spent
            if cfg.labels_per_round is not None:
                limit = min(goal - self.spent, cfg.labels_per_round)
            self._label(chunk[pick(self.policy, scores, limit)], limit)

    def _before_annotating(self, goal: int) -> None:
        """A step's labelling starts (to spend up to ``goal``): nothing here; a subclass's hook."""

    def step(self) -> None:
        """One step's labels (a strategy's annotator, or random's paired count), one retrain,
        the accuracy of what is then served."""
        s = self.s
        before = self.spent
        nominal = self._nominal()
        if self.strategy.is_random:
            step = len(self.full)
            count = self.schedule[step] if step < len(self.schedule) else nominal
            self._label(self._next(min(count, int((~self.labelled).sum()))))
        else:
            self._annotate(nominal)
        self.full.append(self.spent - before == nominal)
        result = self._retrain()
        self.retrains.append(result.outcome)
        if result.outcome == "promoted":
            self.model = _served(self.registry, s)
            self.policy.on_model(self.model)
        self.curve.append((self.spent, accuracy(self.model, self.split.X_test, self.split.y_test, s)))

    def _retrain(self) -> RetrainOutcome:
        """The step's retrain (latest-wins: the label store as the simulator writes it)."""
        s = self.s
        return retrain_once(self.registry, self.store, retrain=s.retrain, policy=s.policy,
                            outlier_quantile=s.serving.outlier_quantile, progress=_quiet)

    def result(self) -> RunResult:
        return RunResult(self.strategy.name, self.seed, list(self.curve), list(self.retrains),
                         time.monotonic() - self.started, list(self.full))

    def close(self) -> None:
        self._tmp.cleanup()


def label_rows(X: np.ndarray, y: np.ndarray, rows: np.ndarray, *, first_offset: int) -> list[dict[str, Any]]:
    """Label-store rows for pool ``rows``, as the trainer's ingest would write them."""
    return [{"id": f"s{i}", "label": str(y[i]), "features": X[i].tolist(), "annotator": ANNOTATOR,
             "partition": 0, "offset": int(first_offset + j)} for j, i in enumerate(rows)]


def bootstrap(split: Split, cfg: ReplayConfig, seed: int) -> np.ndarray:
    """The static bootstrap: pool rows chosen without their labels."""
    return select(split.X_pool, min(cfg.initial_labels, len(split.X_pool)), cfg.bootstrap, seed=seed)


def new_registry(root: Path, split: Split, labelled: np.ndarray, s: Settings) -> Registry:
    """v1 trained on the ``labelled`` pool rows as `triage train` trains it (the unlabelled
    pool is the outlier reference: the production data the detector should know)."""
    registry = Registry(root / "registry")
    X, y = split.X_pool, split.y_pool
    train_initial(X[labelled], y[labelled], registry, retrain=s.retrain, policy=s.policy,
                  outlier_quantile=s.serving.outlier_quantile, progress=_quiet, reference=X)
    return registry


def full_label_accuracy(split: Split, cfg: ReplayConfig, seed: int, base: Settings) -> float:
    """What the loop makes of every pool label: the same bootstrap and v1, then one retrain
    with all the other pool labels at once; the candidate's test accuracy (promoted or not)."""
    s = run_settings(base, Strategy("full"), seed, cfg)
    X, y = split.X_pool, split.y_pool
    labelled = np.zeros(len(X), dtype=bool)
    labelled[bootstrap(split, cfg, seed)] = True
    logging.getLogger("triage").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="triage-simulate-", dir=scratch_dir()) as tmp:
        registry = new_registry(Path(tmp), split, labelled, s)
        store = LabelStore(registry.data_dir)
        store.append(label_rows(X, y, np.flatnonzero(~labelled), first_offset=0))
        retrained = s.retrain.model_copy(update={"min_new_labels": 1})
        result = retrain_once(registry, store, retrain=retrained, policy=s.policy,
                              outlier_quantile=s.serving.outlier_quantile, progress=_quiet)
        assert result.version is not None
        candidate = prepare_model(s.policy, serving_model_from_registry(registry, result.version, s.serving))
        return accuracy(candidate, split.X_test, split.y_test, s)
