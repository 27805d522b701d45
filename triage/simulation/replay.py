"""One ``triage simulate`` run: a labelled pool replayed as a stream through the service's code.

1. Static bootstrap: ``selection.select`` picks ``initial_labels`` pool rows without looking
   at labels; ``bundles.train_initial`` trains v1 on them, as ``triage train`` does (its
   holdout is split off those labels; the unlabelled pool is the outlier reference).
2. Rounds: the not-yet-labelled pool is streamed in a seeded order, ``round_size`` samples
   per round. The CURRENT model scores each round (``scoring.score_batch``) and the scorer's
   policy routes it (``PolicyStack.decide``). The annotator answers review requests in
   priority order, as annotators work the review queue, up to ``labels_per_round``
   (or every request, with ``review_rate``). Random instead labels uniformly drawn samples.
3. The labels go to the registry's ``LabelStore`` and ``retraining.retrain_once`` trains a
   candidate and promotes or rejects it (the promotion gate); a promoted version is loaded
   from the registry as the scorer's hot-swap loads it.
4. When the stream is exhausted the samples never labelled come round again (a new pass),
   until the label budget or the pool runs out.

The curve is the test accuracy of the CURRENT model against the labels spent so far (initial
labels included, and the share the retrainer reserves for evaluation: they cost an annotator
as much as any other). The test rows are never streamed.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from triage.bundles import train_initial
from triage.labelstore import LabelStore
from triage.policies import make_policy, prepare_model
from triage.policies.stack import PolicyStack
from triage.registry import Registry
from triage.retraining import retrain_once
from triage.scoring import score_batch
from triage.selection import select
from triage.serving import ServingModel, serving_model_from_registry
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


@dataclass
class RunResult:
    strategy: str
    seed: int
    curve: Curve
    outcomes: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


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
    is judged by its own uncertainty quantile rather than by older models' scores)."""
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


def pick(strategy: Strategy, chunk: np.ndarray, policy: PolicyStack, scores: Any, limit: Optional[int],
         rng: np.random.Generator) -> np.ndarray:
    """Positions (in ``chunk``) the annotator labels this round."""
    k = len(chunk) if limit is None else min(limit, len(chunk))
    if strategy.is_random:
        return rng.choice(len(chunk), size=k, replace=False)
    decisions = policy.decide(scores)
    review = np.flatnonzero(decisions.review)
    # Highest priority first; ties (rare) broken by stream position, as a queue would.
    order = review[np.argsort(-decisions.priority[review], kind="stable")]
    return order[:k]


def replay(split: Split, strategy: Strategy, seed: int, cfg: ReplayConfig, base: Settings,
           on_round: Callable[[int], None] = lambda labels: None) -> RunResult:
    started = time.monotonic()
    s = run_settings(base, strategy, seed, cfg)
    X, y = split.X_pool, split.y_pool
    n = len(X)
    budget = min(cfg.budget or n, n)
    rng = np.random.default_rng([seed, 7])
    init = select(X, min(cfg.initial_labels, n), cfg.bootstrap, seed=seed)  # unlabelled: no y
    labelled = np.zeros(n, dtype=bool)
    labelled[init] = True
    outcomes: Counter[str] = Counter()
    logging.getLogger("triage").setLevel(logging.ERROR)  # thousands of routine lines otherwise
    with tempfile.TemporaryDirectory(prefix="triage-simulate-", dir=scratch_dir()) as tmp:
        registry = Registry(Path(tmp) / "registry")
        train_initial(X[init], y[init], registry, retrain=s.retrain, policy=s.policy,
                      outlier_quantile=s.serving.outlier_quantile, progress=_quiet, reference=X)
        store = LabelStore(registry.data_dir)
        model = _served(registry, s)
        policy = make_policy(s.policy, model)
        spent = int(labelled.sum())
        curve: Curve = [(spent, accuracy(model, split.X_test, split.y_test, s))]
        while spent < budget and not labelled.all():
            stream = rng.permutation(np.flatnonzero(~labelled))  # one pass over what is unlabelled
            for start in range(0, len(stream), cfg.round_size):
                chunk = stream[start:start + cfg.round_size]
                scores = score_batch(model, X[chunk], s.policy.acquisition)
                limit = budget - spent if cfg.labels_per_round is None else min(cfg.labels_per_round, budget - spent)
                chosen = chunk[pick(strategy, chunk, policy, scores, limit, rng)]
                store.append({"id": f"s{i}", "label": str(y[i]), "features": X[i].tolist(), "annotator": ANNOTATOR,
                              "partition": 0, "offset": int(spent + j)} for j, i in enumerate(chosen))
                labelled[chosen] = True
                spent += len(chosen)
                result = retrain_once(registry, store, retrain=s.retrain, policy=s.policy,
                                      outlier_quantile=s.serving.outlier_quantile, progress=_quiet)
                outcomes[result.outcome] += 1
                if result.outcome == "promoted":
                    model = _served(registry, s)
                    policy.on_model(model)
                curve.append((spent, accuracy(model, split.X_test, split.y_test, s)))
                on_round(spent)
                if spent >= budget:
                    break
    return RunResult(strategy.name, seed, curve, outcomes, time.monotonic() - started)
