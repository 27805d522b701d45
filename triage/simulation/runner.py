"""Every (strategy, seed) replay of a ``triage simulate`` run, in parallel processes, with a
progress bar; then the summary, table and plot in the report folder."""

from __future__ import annotations

import json
import sys
from collections import Counter
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence, TextIO

import numpy as np

from triage.settings import Settings
from triage.threads import limit_blas_threads
from triage.simulation.datasets import split
from triage.simulation.replay import ReplayConfig, RunResult, replay
from triage.simulation.strategies import Strategy
from triage.simulation.summary import plot, summarize, table


@dataclass(frozen=True)
class Job:
    strategy: Strategy
    seed: int


class ProgressBar:
    """One line, rewritten in place on a terminal; a line per 10% otherwise (logs, CI)."""

    def __init__(self, total: int, out: TextIO) -> None:
        self.total, self.out, self.done = total, out, 0
        self.started = time.monotonic()
        self.tty = out.isatty()
        self.last_decile = -1

    def step(self, what: str) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.done * (self.total - self.done)
        filled = int(30 * self.done / self.total)
        line = (f"[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} runs  "
                f"{elapsed:5.0f}s elapsed, ~{eta:4.0f}s left  ({what})")
        if self.tty:
            self.out.write("\r\x1b[2K" + line + ("\n" if self.done == self.total else ""))
        elif self.done * 10 // self.total != self.last_decile or self.done == self.total:
            self.last_decile = self.done * 10 // self.total
            self.out.write(line + "\n")
        self.out.flush()


def _run(job: Job, X: np.ndarray, y: np.ndarray, test_fraction: float, cfg: ReplayConfig,
         flat: dict[str, Any]) -> RunResult:
    """One replay (in a worker process: settings travel as their flat dict)."""
    limit_blas_threads(1)  # one process per core: threads inside each would only contend
    base = Settings(**flat)
    data = split(X, y, job.seed, test_fraction)
    if job.strategy.is_random:  # random always spends the whole pool: full-label accuracy is its end
        cfg = replace(cfg, budget=None)
    elif cfg.budget is None:
        # Half the pool: a strategy that needs more cannot need half of random's labels, which
        # are at most the whole pool; the curve still says where it got to.
        cfg = replace(cfg, budget=max(len(data.X_pool) // 2, cfg.initial_labels + 1))
    return replay(data, job.strategy, job.seed, cfg, base)


def run_all(X: np.ndarray, y: np.ndarray, strategies: Sequence[Strategy], seeds: int, cfg: ReplayConfig,
            base: Settings, jobs: int, test_fraction: float, out: TextIO = sys.stderr) -> list[RunResult]:
    # Random first: it runs longest (the whole pool), so it should not start last.
    work = [Job(s, seed) for s in sorted(strategies, key=lambda s: not s.is_random) for seed in range(seeds)]
    bar = ProgressBar(len(work), out)
    flat = base.flat()
    results: list[RunResult] = []
    if jobs <= 1:
        for job in work:
            results.append(_run(job, X, y, test_fraction, cfg, flat))
            bar.step(f"{job.strategy.name} seed {job.seed}")
        return results
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(_run, job, X, y, test_fraction, cfg, flat): job for job in work}
        for future in as_completed(futures):
            job = futures[future]
            results.append(future.result())
            bar.step(f"{job.strategy.name} seed {job.seed}")
    return results


def write_report(report_dir: Path, summary: dict[str, Any], config: dict[str, Any]) -> tuple[Path, Path]:
    report_dir.mkdir(parents=True, exist_ok=True)
    summary_path, plot_path = report_dir / "summary.json", report_dir / "learning_curves.png"
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    (report_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    plot(summary, plot_path)
    return summary_path, plot_path


def simulate(dataset: str, X: np.ndarray, y: np.ndarray, strategies: Sequence[Strategy], seeds: int,
             cfg: ReplayConfig, base: Settings, *, jobs: int, test_fraction: float, report_dir: Path,
             out: TextIO = sys.stdout, progress: TextIO = sys.stderr) -> dict[str, Any]:
    started = time.monotonic()
    runs = run_all(X, y, strategies, seeds, cfg, base, jobs, test_fraction, progress)
    config = {"initial_labels": cfg.initial_labels, "round_size": cfg.round_size,
              "labels_per_round": cfg.labels_per_round, "review_rate": cfg.review_rate, "budget": cfg.budget,
              "bootstrap": cfg.bootstrap, "test_fraction": test_fraction, "model_family": base.retrain.model_family,
              "rows": int(len(X)), "features": int(X.shape[1]), "classes": int(len(np.unique(y))),
              "strategies": {s.name: {"settings": dict(s.overrides), "description": s.description} for s in strategies},
              "retrain_outcomes": {s.name: dict(sum((r.outcomes for r in runs if r.strategy == s.name), Counter()))
                                   for s in strategies},
              "seconds": round(time.monotonic() - started, 1)}
    summary = summarize(dataset, runs, seeds)
    summary_path, plot_path = write_report(report_dir, summary, config)
    out.write(table(summary) + "\n")
    out.write(f"report: {summary_path} and {plot_path} ({config['seconds']:.0f} s)\n")
    return summary
