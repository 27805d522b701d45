"""A ``triage simulate`` run: full-label accuracy per seed, then every strategy's seeds
advancing together round by round in parallel processes, with a progress bar; then the
summary, table and plot in the report folder.

A strategy's seeds stop together once their mean curve has reached the highest target and
held it for ``EXTRA_ROUNDS`` more rounds (labels to a target are read off the mean curve, so
later rounds cannot change them), or when the budget or the pool runs out.
"""

from __future__ import annotations

import json
import queue
import sys
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import replace
from multiprocessing import Manager
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TextIO

import numpy as np

from triage.settings import Settings
from triage.simulation.datasets import split
from triage.simulation.replay import Replay, ReplayConfig, RunResult, full_label_accuracy
from triage.simulation.strategies import Strategy
from triage.simulation.summary import TARGETS, labels_to, mean_curve, plot, summarize, table
from triage.runtime.threads import limit_blas_threads

EXTRA_ROUNDS = 2


class ProgressBar:
    """Rounds done out of the most there can be (a strategy that stops early jumps ahead):
    one line rewritten in place on a terminal, a line per 10% otherwise (logs, CI)."""

    def __init__(self, total: int, out: TextIO) -> None:
        self.total, self.out, self.done = max(total, 1), out, 0
        self.started = time.monotonic()
        self.tty = out.isatty()
        self.last_decile = -1

    def advance(self, n: int, what: str) -> None:
        # The plan is an estimate (a round can label fewer than asked): never step backwards.
        self.done = min(self.done + max(n, 0), self.total)
        elapsed = time.monotonic() - self.started
        filled = int(30 * self.done / self.total)
        line = f"[{'#' * filled}{'.' * (30 - filled)}] {100 * self.done / self.total:3.0f}%  {elapsed:5.0f}s  {what}"
        decile = 10 * self.done // self.total
        if self.tty:
            self.out.write("\r\x1b[2K" + line + ("\n" if self.done == self.total else ""))
        elif decile != self.last_decile:
            self.last_decile = decile
            self.out.write(line + "\n")
        self.out.flush()


def _config_for(strategy: Strategy, cfg: ReplayConfig, pool: int) -> ReplayConfig:
    if strategy.is_random:  # random may spend the whole pool: both targets must exist for it
        return replace(cfg, budget=None)
    if cfg.budget is None:
        # Half the pool: a strategy that needs more cannot need half of random's labels, which
        # are at most the whole pool; the curve still says where it got to.
        return replace(cfg, budget=max(pool // 2, cfg.initial_labels + 1))
    return cfg


def planned_rounds(pool: int, strategy: Strategy, cfg: ReplayConfig, seeds: int) -> int:
    c = _config_for(strategy, cfg, pool)
    budget = min(c.budget or pool, pool)
    per_round = c.labels_per_round or max(1, int(round((c.review_rate or 0.05) * c.round_size)))
    return seeds * -(-(budget - c.initial_labels) // per_round)


def _full(seed: int, X: np.ndarray, y: np.ndarray, test_fraction: float, cfg: ReplayConfig,
          flat: dict[str, Any]) -> float:
    limit_blas_threads(1)  # one process per core: threads inside each would only contend
    return full_label_accuracy(split(X, y, seed, test_fraction), cfg, seed, Settings(**flat))


def run_strategy(strategy: Strategy, seeds: int, X: np.ndarray, y: np.ndarray, test_fraction: float,
                 cfg: ReplayConfig, flat: dict[str, Any], target: float,
                 tick: Optional[Callable[[str], None]] = None) -> list[RunResult]:
    """Every seed of one strategy, a round each in turn, until the mean curve has held
    ``target`` for ``EXTRA_ROUNDS`` rounds or every seed is done."""
    limit_blas_threads(1)
    base = Settings(**flat)
    splits = [split(X, y, seed, test_fraction) for seed in range(seeds)]
    cfg = _config_for(strategy, cfg, len(splits[0].X_pool))
    replays = [Replay(data, strategy, seed, cfg, base) for seed, data in enumerate(splits)]
    held = 0
    try:
        while not all(r.done for r in replays):
            for r in replays:
                if not r.done:
                    r.step()
                    if tick is not None:
                        tick(strategy.name)
            if labels_to(mean_curve([r.result() for r in replays]), target) is not None:
                held += 1
                if held > EXTRA_ROUNDS:
                    break
        return [r.result() for r in replays]
    finally:
        for r in replays:
            r.close()


class QueueTick:
    """A round done, reported from a worker process to the parent's progress bar."""

    def __init__(self, ticks: Any) -> None:
        self.ticks = ticks

    def __call__(self, name: str) -> None:
        self.ticks.put(name)


def run_all(X: np.ndarray, y: np.ndarray, strategies: Sequence[Strategy], seeds: int, cfg: ReplayConfig,
            base: Settings, jobs: int, test_fraction: float, out: TextIO) -> tuple[list[float], list[RunResult]]:
    """(full-label accuracy per seed, every run)."""
    flat = base.flat()
    pool = len(X) - int(round(len(X) * test_fraction))
    plans = {s.name: planned_rounds(pool, s, cfg, seeds) for s in strategies}
    bar = ProgressBar(seeds + sum(plans.values()), out)
    if jobs <= 1:
        full = []
        for seed in range(seeds):
            full.append(_full(seed, X, y, test_fraction, cfg, flat))
            bar.advance(1, f"full-label accuracy, seed {seed}")
        target = max(TARGETS) * float(np.mean(full))
        runs: list[RunResult] = []
        for s in strategies:
            ticked = Counter[str]()

            def tick(name: str) -> None:
                ticked[name] += 1
                bar.advance(1, name)

            runs += run_strategy(s, seeds, X, y, test_fraction, cfg, flat, target, tick)
            bar.advance(plans[s.name] - ticked[s.name], f"{s.name} done")
        return full, runs
    with ProcessPoolExecutor(max_workers=jobs) as pool_, Manager() as manager:
        full_jobs = [pool_.submit(_full, seed, X, y, test_fraction, cfg, flat) for seed in range(seeds)]
        full = []
        for seed, f in enumerate(full_jobs):
            full.append(f.result())
            bar.advance(1, f"full-label accuracy, seed {seed}")
        target = max(TARGETS) * float(np.mean(full))
        ticks = manager.Queue()
        # Random first: it runs longest, so it should not start last.
        ordered = sorted(strategies, key=lambda s: not s.is_random)
        pending: dict[Future[list[RunResult]], Strategy] = {
            pool_.submit(run_strategy, s, seeds, X, y, test_fraction, cfg, flat, target, QueueTick(ticks)): s
            for s in ordered}
        ticked: Counter[str] = Counter()
        runs = []
        while pending:
            done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            _drain(ticks, ticked, bar)
            for f in done:
                s = pending.pop(f)
                runs += f.result()
                _drain(ticks, ticked, bar)
                bar.advance(plans[s.name] - ticked[s.name], f"{s.name} done")
        return full, runs


def _drain(ticks: Any, ticked: Counter[str], bar: ProgressBar) -> None:
    while True:
        try:
            name = ticks.get_nowait()
        except queue.Empty:
            return
        ticked[name] += 1
        bar.advance(1, name)


def write_report(report_dir: Path, summary: dict[str, Any], config: dict[str, Any]) -> tuple[Path, Path]:
    report_dir.mkdir(parents=True, exist_ok=True)
    summary_path, plot_path = report_dir / "summary.json", report_dir / "learning_curves.png"
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    (report_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    plot(summary, plot_path)
    return summary_path, plot_path


def simulate(dataset: str, X: np.ndarray, y: np.ndarray, strategies: Sequence[Strategy], seeds: int,
             cfg: ReplayConfig, base: Settings, *, jobs: int, test_fraction: float, report_dir: Path,
             out: Optional[TextIO] = None, progress: Optional[TextIO] = None) -> dict[str, Any]:
    """Run, write the report, print the table (``out``, default the current stdout) and the
    progress bar (``progress``, default the current stderr). Streams are looked up per call:
    a default bound at import would miss a later redirection."""
    out = out if out is not None else sys.stdout
    progress = progress if progress is not None else sys.stderr
    started = time.monotonic()
    full, runs = run_all(X, y, strategies, seeds, cfg, base, jobs, test_fraction, progress)
    config = {"initial_labels": cfg.initial_labels, "round_size": cfg.round_size,
              "labels_per_round": cfg.labels_per_round, "review_rate": cfg.review_rate, "budget": cfg.budget,
              "bootstrap": cfg.bootstrap, "test_fraction": test_fraction, "model_family": base.retrain.model_family,
              "rows": int(len(X)), "features": int(X.shape[1]), "classes": int(len(np.unique(y))),
              "full_label_accuracy_per_seed": full, "extra_rounds": EXTRA_ROUNDS,
              "strategies": {s.name: {"settings": dict(s.overrides), "description": s.description} for s in strategies},
              "retrain_outcomes": {s.name: dict(sum((r.outcomes for r in runs if r.strategy == s.name), Counter()))
                                   for s in strategies},
              "seconds": round(time.monotonic() - started, 1)}
    summary = summarize(dataset, float(np.mean(full)), runs, seeds)
    summary_path, plot_path = write_report(report_dir, summary, config)
    out.write(table(summary) + "\n")
    out.write(f"report: {summary_path} and {plot_path} ({config['seconds']:.0f} s)\n")
    return summary
