"""A ``triage simulate`` run: full-label accuracy per seed and every strategy's seeds advancing
together step by step, in parallel processes, each strategy's random twin on the same label
counts, with a progress bar; then the summary, table and plot in the report folder.

Random is paired by construction: a strategy's run records its label count at every step, and
random replays those counts (``Replay(schedule=...)``). Runs that took the nominal count at
every step share one random run (``RANDOM``), started with the strategies since its counts are
known in advance; a strategy whose counts differ (``--review-rate``, a queue that ran short)
gets its own (``random (NAME)``) once it has finished.

A group's seeds stop together once their mean curve has reached the highest target and held
it for ``EXTRA_ROUNDS`` more steps (labels to a target are read off the mean curve, so later
steps cannot change them), or when the budget or the pool runs out. The target needs the
full-label accuracy, which runs beside the first groups: a group that learns it late is cut
back to the same stop (``StopRule``, ``trim``).
"""

from __future__ import annotations

import json
import queue
import sys
import time
from collections import Counter
from contextlib import nullcontext
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
import multiprocessing
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, TextIO

import numpy as np

from triage.settings import Settings
from triage.simulation.datasets import split
from triage.simulation.replay import Curve, Replay, ReplayConfig, RunResult, full_label_accuracy, planned_steps
from triage.simulation.strategies import RANDOM, STRATEGIES, Strategy
from triage.simulation.summary import TARGETS, labels_to, mean_curve, plot, summarize, table
from triage.runtime.threads import limit_blas_threads

EXTRA_ROUNDS = 2
TARGET = "target"  # the key of the highest target in the dict shared with the workers
Schedules = tuple[tuple[int, ...], ...]  # per seed: the label counts a random run copies


class ProgressBar:
    """Rounds (steps: labels, then a retrain) done out of the most there can be (a group that
    stops early jumps ahead), their rate and the time left at that rate; one line rewritten in
    place. Silent when ``out`` is not a terminal (logs, CI, pipes), as pip and cargo are."""

    def __init__(self, total: int, out: TextIO, enabled: Optional[bool] = None) -> None:
        self.total, self.out, self.done = max(total, 1), out, 0
        self.started = time.monotonic()
        self.enabled = out.isatty() if enabled is None else enabled

    def extend(self, n: int) -> None:
        """More rounds to come (a random twin started once its strategy had finished)."""
        self.total += max(n, 0)

    def line(self, what: str) -> str:
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = f"{_clock((self.total - self.done) / rate)}" if rate > 0 and self.done < self.total else "--:--"
        filled = int(30 * self.done / self.total)
        return (f"[{'#' * filled}{'.' * (30 - filled)}] {100 * self.done / self.total:3.0f}% "
                f"{self.done}/{self.total} rounds  {rate:.2f}/s  {_clock(elapsed)} elapsed  ETA {eta}  {what}")

    def advance(self, n: int, what: str) -> None:
        # The plan is an estimate (a round can label fewer than asked): never step backwards.
        self.done = min(self.done + max(n, 0), self.total)
        if self.enabled:
            self.out.write("\r\x1b[2K" + self.line(what)[:200] + ("\n" if self.done == self.total else ""))
            self.out.flush()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes:02d}:{secs:02d}"


def _config_for(strategy: Strategy, cfg: ReplayConfig, pool: int) -> ReplayConfig:
    if cfg.budget is None:
        # Half the pool: a strategy that needs more cannot need half of random's labels, which
        # are at most the whole pool; the curve still says where it got to.
        cfg = replace(cfg, budget=max(pool // 2, cfg.initial_labels + 1))
    if strategy.is_random:  # random may spend the whole pool: both targets must exist for it
        return replace(cfg, budget=None, step_cap=cfg.budget)
    return cfg


def planned_rounds(pool: int, strategy: Strategy, cfg: ReplayConfig, seeds: int) -> int:
    c = _config_for(strategy, cfg, pool)
    return seeds * planned_steps(c, pool, c.budget or pool)


def _full(seed: int, X: np.ndarray, y: np.ndarray, test_fraction: float, cfg: ReplayConfig,
          flat: dict[str, Any]) -> float:
    limit_blas_threads(1)  # one process per core: threads inside each would only contend
    return full_label_accuracy(split(X, y, seed, test_fraction), cfg, seed, Settings(**flat))


class StopRule:
    """Where a group stops: ``EXTRA_ROUNDS`` rounds after the first round whose mean curve
    (each seed's run as it stood after that round) reaches the target; a round steps every seed
    not yet done. The same rule, whether applied as the group runs or afterwards to what it ran
    (``trim``), so the report does not depend on when the target became known."""

    def __init__(self) -> None:
        self.checked = 0  # rounds looked at
        self.reached: Optional[int] = None

    def last_round(self, curves: Sequence[Curve], target: float) -> Optional[int]:
        """The round to stop after, once the target has been reached (None: not yet)."""
        rounds = max(len(c) for c in curves) - 1
        while self.reached is None and self.checked < rounds:
            self.checked += 1
            prefix = [RunResult("", 0, c[: self.checked + 1]) for c in curves]
            if labels_to(mean_curve(prefix), target) is not None:
                self.reached = self.checked
        return None if self.reached is None else self.reached + EXTRA_ROUNDS


def trim(runs: Sequence[RunResult], target: float) -> list[RunResult]:
    """A group's runs cut where ``StopRule`` stops them: a group that started before the
    full-label accuracy was known may have stepped past that point."""
    last = StopRule().last_round([r.curve for r in runs], target)
    return [r.first_steps(last) if last is not None else r for r in runs]


def run_strategy(strategy: Strategy, seeds: int, X: np.ndarray, y: np.ndarray, test_fraction: float,
                 cfg: ReplayConfig, flat: dict[str, Any], targets: Mapping[str, float],
                 tick: Optional[Callable[[str], None]] = None, schedules: Optional[Schedules] = None,
                 name: Optional[str] = None) -> list[RunResult]:
    """Every seed of one strategy (random: on ``schedules``), a step each in turn, until the
    ``StopRule`` stops them or every seed is done. ``targets[TARGET]`` is the highest target,
    once the full-label accuracy is known (it is computed beside the first groups; until then
    they step on, and ``trim`` cuts what they ran past the stop). The runs are named ``name``
    (default the strategy's)."""
    limit_blas_threads(1)
    name = name or strategy.name
    base = Settings(**flat)
    splits = [split(X, y, seed, test_fraction) for seed in range(seeds)]
    cfg = _config_for(strategy, cfg, len(splits[0].X_pool))
    replays = [Replay(data, strategy, seed, cfg, base, schedules[seed] if schedules else ())
               for seed, data in enumerate(splits)]
    stop, rounds = StopRule(), 0
    try:
        while not all(r.done for r in replays):
            for r in replays:
                if not r.done:
                    r.step()
                    if tick is not None:
                        tick(name)
            rounds += 1
            target = targets.get(TARGET)
            last = None if target is None else stop.last_round([r.curve for r in replays], target)
            if last is not None and rounds >= last:
                break
        return [replace(r.result(), strategy=name) for r in replays]
    finally:
        for r in replays:
            r.close()


class QueueTick:
    """A round done, reported from a worker process to the parent's progress bar."""

    def __init__(self, ticks: Any) -> None:
        self.ticks = ticks

    def __call__(self, name: str) -> None:
        self.ticks.put(name)


class InlineExecutor(Executor):
    """``--jobs 1``: runs each job when it is submitted, in this process."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller through the future, as a pool does
            future.set_exception(exc)
        return future


@dataclass
class Outcome:
    full: list[float]  # full-label accuracy per seed
    runs: list[RunResult]
    baselines: dict[str, str]  # strategy -> the random group it is compared with


def run_all(X: np.ndarray, y: np.ndarray, strategies: Sequence[Strategy], seeds: int, cfg: ReplayConfig,
            base: Settings, jobs: int, test_fraction: float, bar: ProgressBar) -> Outcome:
    flat = base.flat()
    pool = len(X) - int(round(len(X) * test_fraction))
    active = [s for s in strategies if not s.is_random]
    random = STRATEGIES[RANDOM]
    random_plan = planned_rounds(pool, random, cfg, seeds)
    bar.extend(seeds + sum(planned_rounds(pool, s, cfg, seeds) for s in active))
    ticked: Counter[str] = Counter()

    def count(name: str) -> None:
        ticked[name] += 1
        bar.advance(1, name)

    with _executor(jobs) as executor, (_CONTEXT.Manager() if jobs > 1 else nullcontext()) as manager:
        # Worker processes report their rounds through a managed queue and read the target from
        # a managed dict; --jobs 1 counts directly and has the target before any group starts.
        ticks = manager.Queue() if manager is not None else queue.Queue()
        targets: dict[str, float] = manager.dict() if manager is not None else {}
        # Full-label accuracy runs beside the first groups rather than before them: with fewer
        # seeds than workers (one large run) a worker would otherwise wait for it.
        fulls = [executor.submit(_full, seed, X, y, test_fraction, cfg, flat) for seed in range(seeds)]
        full: list[float] = []
        tick: Callable[[str], None] = QueueTick(ticks) if jobs > 1 else count
        pending: dict[Future[list[RunResult]], tuple[str, int]] = {}
        finished: list[tuple[str, int, list[RunResult]]] = []  # waiting for the target to be trimmed
        twins: dict[Schedules, str] = {}

        def settle_full() -> None:
            if not full and all(f.done() for f in fulls):
                full.extend(f.result() for f in fulls)
                targets[TARGET] = max(TARGETS) * float(np.mean(full))
                bar.advance(seeds, "full-label accuracy")

        def twin(schedules: Schedules, name: str) -> str:
            """The random group on ``schedules``, started unless it already runs."""
            if schedules not in twins:
                twins[schedules] = name
                bar.extend(random_plan)
                pending[executor.submit(run_strategy, random, seeds, X, y, test_fraction, cfg, flat, targets,
                                        tick, schedules, name)] = (name, random_plan)
            return twins[schedules]

        settle_full()
        nominal: Schedules = ((),) * seeds
        # With a label count per round every step's count is known in advance: random starts
        # first, as it runs longest. With --review-rate each strategy's counts are its own.
        if cfg.labels_per_round is not None or not active:
            twin(nominal, RANDOM)
        for s in active:
            pending[executor.submit(run_strategy, s, seeds, X, y, test_fraction, cfg, flat, targets, tick)] = (
                s.name, planned_rounds(pool, s, cfg, seeds))
        runs: list[RunResult] = []
        baselines: dict[str, str] = {}
        while pending or finished or not full:
            waiting = [*pending, *(f for f in fulls if not f.done())]
            done, _ = wait(waiting, timeout=0.5, return_when=FIRST_COMPLETED)
            _drain(ticks, count)
            settle_full()
            for f in done:
                if f in pending:
                    name, plan = pending.pop(f)
                    finished.append((name, plan, sorted(f.result(), key=lambda r: r.seed)))
            while full and finished:
                name, plan, results = finished.pop(0)
                results = trim(results, targets[TARGET])
                runs += results
                _drain(ticks, count)
                bar.advance(plan - ticked[name], f"{name} done")
                if name in (s.name for s in active):
                    schedules = tuple(r.schedule_key() for r in results)
                    baselines[name] = twin(schedules, RANDOM if schedules == nominal else f"{RANDOM} ({name})")
        return Outcome(full, runs, baselines)


# Workers are started by a fork server, never forked from this process: it has threads (the
# executor's, the manager's; OpenMP's once torch or a BLAS ran here), and a child forked from a
# threaded parent can inherit a lock held mid-operation. One did: a segfault in numpy's errstate
# in a forked simulation worker, in a test process that had loaded torch.
_CONTEXT = multiprocessing.get_context("forkserver")


def _executor(jobs: int) -> Executor:
    return ProcessPoolExecutor(max_workers=jobs, mp_context=_CONTEXT) if jobs > 1 else InlineExecutor()


def _drain(ticks: Any, count: Callable[[str], None]) -> None:
    while True:
        try:
            count(ticks.get_nowait())
        except queue.Empty:
            return


def write_report(report_dir: Path, summary: dict[str, Any], config: dict[str, Any]) -> tuple[Path, Path]:
    report_dir.mkdir(parents=True, exist_ok=True)
    summary_path, plot_path = report_dir / "summary.json", report_dir / "learning_curves.png"
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    (report_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    plot(summary, plot_path)
    return summary_path, plot_path


def simulate(dataset: str, X: np.ndarray, y: np.ndarray, strategies: Sequence[Strategy], seeds: int,
             cfg: ReplayConfig, base: Settings, *, jobs: int, test_fraction: float, report_dir: Path,
             out: Optional[TextIO] = None, progress: Optional[TextIO] = None,
             show_progress: Optional[bool] = None) -> dict[str, Any]:
    """Run, write the report, print the table (``out``, default the current stdout) and the
    progress bar (``progress``, default the current stderr; ``show_progress`` None: only on a
    terminal). Streams are looked up per call: a default bound at import would miss a later
    redirection."""
    out = out if out is not None else sys.stdout
    progress = progress if progress is not None else sys.stderr
    started = time.monotonic()
    outcome = run_all(X, y, strategies, seeds, cfg, base, jobs, test_fraction, ProgressBar(0, progress, show_progress))
    names = list(dict.fromkeys(r.strategy for r in outcome.runs))
    config = {"initial_labels": cfg.initial_labels, "round_size": cfg.round_size,
              "labels_per_round": cfg.labels_per_round, "review_rate": cfg.review_rate, "budget": cfg.budget,
              "retrain_growth": cfg.retrain_growth, "bootstrap": cfg.bootstrap, "test_fraction": test_fraction,
              "model_family": base.retrain.model_family, "jobs": jobs,
              "rows": int(len(X)), "features": int(X.shape[1]), "classes": int(len(np.unique(y))),
              "full_label_accuracy_per_seed": outcome.full, "extra_rounds": EXTRA_ROUNDS,
              "strategies": {s.name: {"settings": dict(s.overrides), "description": s.description} for s in strategies},
              "compared_with": outcome.baselines,
              "labels_per_step": {n: [r.counts for r in outcome.runs if r.strategy == n] for n in names},
              "retrain_outcomes": {n: dict(sum((r.outcomes for r in outcome.runs if r.strategy == n), Counter()))
                                   for n in names},
              "run_seconds": {n: [round(r.seconds, 1) for r in outcome.runs if r.strategy == n] for n in names},
              "seconds": round(time.monotonic() - started, 1)}
    summary = summarize(dataset, outcome.full, outcome.runs, seeds, outcome.baselines)
    summary_path, plot_path = write_report(report_dir, summary, config)
    out.write(table(summary) + "\n")
    out.write(f"report: {summary_path} and {plot_path} ({config['seconds']:.0f} s)\n")
    return summary
