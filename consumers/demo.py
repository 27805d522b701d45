"""``triage demo``: the whole active-learning loop on the embedded broker, watched live.

digits -> held-out eval set + pool -> static selection of the initial labels -> v1 ->
stream the rest (with outliers and corrupt records) -> scorer routes -> simulated annotator
labels review requests within a budget -> periodic retrain promotes and hot-swaps.
Then the same stream and label budget with random selection, as a baseline: several random
draws (``--baseline-seeds``), reported as a mean with a min-max band, because one random draw
cannot tell whether the active loop beats random or just got a lucky (or unlucky) comparison.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, TextIO

import numpy as np

from consumers.loop import GuardedLoop
from consumers.model_watcher import ModelWatcher
from consumers.scorer import Scorer
from consumers.simulated import SimulatedAnnotator, Streamer
from consumers.trainer import Trainer
from triage.runtime.broker import EmbeddedBroker
from triage.lifecycle.bundles import train_initial
from triage.scoring.calibration import apply_temperature
from triage.contracts import Sample, decode_prediction, decode_review, encode
from triage.errors import ConfigError
from triage.extras import require_extra
from triage.policies import prepare_model
from triage.records import OutRecord, RecordBatch
from triage.lifecycle.registry import Registry
from triage.lifecycle.selection import select
from triage.lifecycle.loading import serving_model_from_registry
from triage.settings import Settings
from triage.lifecycle.training import evaluate, train_model
from triage.transport import ensure_topics, make_consumer


@dataclass
class DemoConfig:
    """Knobs of ``triage demo``; see ``triage/commands/demo.py`` for what each flag means."""

    samples: int = 1200
    duration_s: Optional[float] = None
    rate: float = 40.0
    initial_labels: int = 30
    strategy: str = "stratified-kmeans"
    labels_per_minute: float = 360.0
    annotator_delay_s: float = 0.5
    retrain_every_s: float = 3.0
    drain_grace_s: float = 10.0
    outliers: int = 12
    corrupt: int = 8
    eval_fraction: float = 0.25
    seed: int = 0
    report_dir: Path = Path("demo-report")
    baseline_seeds: int = 5  # random draws behind the baseline's mean and band

    def __post_init__(self) -> None:
        if self.baseline_seeds < 1:
            raise ConfigError(f"baseline_seeds must be at least 1 (got {self.baseline_seeds}): the random "
                              "baseline needs one random draw per seed")


class Tally(threading.Thread):
    """Reads every output topic (no group) and keeps the live numbers."""

    def __init__(self, settings: Settings, truth: dict[str, str], stop: threading.Event) -> None:
        super().__init__(name="demo-tally", daemon=True)
        self.settings, self.truth, self.stop = settings, truth, stop
        self.routes: dict[str, int] = {"predictions": 0, "review": 0, "dlq": 0}
        self.reasons: dict[str, int] = {}
        self.accepted = self.accepted_correct = 0
        self.ids: set[str] = set()
        self.dlq = 0

    def _count(self, batch: RecordBatch) -> list[OutRecord]:
        t, max_bytes = self.settings.topics, self.settings.serving.max_message_bytes
        for topic, value in zip(batch.topics, batch.values):
            if topic == t.dlq_topic:
                self.dlq += 1
                continue
            if topic == t.predictions_topic:
                prediction = decode_prediction(value, max_bytes)
                sid, route, reason = prediction.id, "predictions", "confident"
            else:
                review = decode_review(value, max_bytes)
                if review.reason == "audit":
                    continue  # a copy of an accepted prediction, already counted
                sid, route, reason = review.id, "review", review.reason
            if sid in self.ids:
                continue  # at-least-once duplicates
            self.ids.add(sid)
            self.routes[route] += 1
            self.reasons[reason] = self.reasons.get(reason, 0) + 1
            if route == "predictions" and sid in self.truth:
                self.accepted += 1
                self.accepted_correct += prediction.label == self.truth[sid]
        return []

    def run(self) -> None:
        t = self.settings.topics
        reader = make_consumer(self.settings, [t.predictions_topic, t.review_topic, t.dlq_topic], group_id=None)
        try:
            GuardedLoop("demo-tally", reader, self._count, commit=False, max_records=2000, poll_timeout_ms=200,
                        stop=self.stop).run()
        finally:
            reader.close()

    @property
    def accounted(self) -> int:
        return len(self.ids) + self.dlq


class LiveView:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.lines = 0
        self.last_plain = 0.0

    def show(self, lines: list[str], final: bool = False) -> None:
        if self.tty:
            if self.lines:
                self.out.write(f"\x1b[{self.lines}F")
            for line in lines:
                self.out.write("\x1b[2K" + line + "\n")
            self.lines = len(lines)
        elif final or time.monotonic() - self.last_plain > 5:
            self.last_plain = time.monotonic()
            self.out.write(" | ".join(lines[1:4]) + "\n")
        self.out.flush()


def _dataset(cfg: DemoConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_pool, X_eval, y_pool, y_eval = train_test_split(X, y.astype(str), test_size=cfg.eval_fraction,
                                                      random_state=cfg.seed, stratify=y)
    return X_pool, y_pool.astype(str), X_eval, y_eval.astype(str)


def _stream(cfg: DemoConfig, X: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[list[tuple[bytes, Optional[bytes]]], dict[str, str]]:
    truth: dict[str, str] = {}
    records: list[tuple[bytes, Optional[bytes]]] = []
    for i in range(len(X)):
        sid = f"s{i}"
        truth[sid] = str(y[i])
        records.append((sid.encode(), encode(Sample(sid, X[i].tolist()))))  # Kafka stamps the time
    for i in range(cfg.outliers):
        sid = f"outlier{i}"
        records.append((sid.encode(), encode(Sample(sid, (rng.random(X.shape[1]) * 16).round().tolist()))))
    corrupt = [b"\xff\xfe binary", b"{not json", b"[1,2,3]", b'{"id": "", "features": []}',
               b'{"id": "short", "features": [1, 2]}', b'{"id": "nan", "features": "NaN"}', None,
               b'{"id": "bool", "features": [true]}']
    for i in range(cfg.corrupt):
        records.append((f"corrupt{i}".encode(), corrupt[i % len(corrupt)]))
    order = rng.permutation(len(records))
    return [records[i] for i in order], truth


def _version_rows(registry: Registry, initial: int) -> list[dict[str, Any]]:
    rows = []
    for v in registry.versions():
        m = registry.manifest(v)
        data = m.get("data", {})
        rows.append({"version": v, "status": m.get("status"), "accuracy": m.get("metrics", {}).get("accuracy"),
                     "labels_used": initial + int(data.get("labels_trained", 0)),
                     "human_labels": int(data.get("labels_trained", 0))})
    return rows


BASELINE_SELECTION = "random (same stream, same label counts, same trainer; mean and min-max band over seeds)"


def draw_seeds(seed: int, seeds: int) -> list[int]:
    """The seeds of the random draws: ``seed + 1 .. seed + seeds``. The first is the single draw
    the demo used before; adding seeds never changes the earlier draws."""
    return [seed + 1 + k for k in range(seeds)]


def random_orders(n_stream: int, seeds: Sequence[int]) -> np.ndarray:
    """One random permutation of the stream per seed, shape ``(len(seeds), n_stream)``. The
    first ``n`` entries of a row are that seed's ``n`` labelled samples, so within a seed the
    labelled sets are nested as they grow (like labels accumulating in a real run), and
    across seeds they are independent draws."""
    if not len(seeds):
        return np.empty((0, n_stream), dtype=np.int64)
    # One generator per seed (not one shared stream): a seed's draw does not depend on how many seeds run.
    return np.stack([np.random.default_rng(s).permutation(n_stream) for s in seeds])


def random_baseline(active: Sequence[dict[str, Any]], X_init: np.ndarray, y_init: np.ndarray,
                    X_stream: np.ndarray, y_stream: np.ndarray, X_eval: np.ndarray, y_eval: np.ndarray, *,
                    family: str, seeds: Sequence[int], train_seed: int) -> list[dict[str, Any]]:
    """Random selection at the active loop's label counts, over several random draws.

    For each active row (``version``, ``human_labels``) and each seed in ``seeds``, the same
    initial labels plus the first ``human_labels`` stream samples of that seed's permutation
    (``random_orders``) are trained with ``train_model`` — the service's trainer — and scored
    on the held-out set. The trainer's own seed (its fit/calibration split) stays fixed at
    ``train_seed``, the seed the service trains with, so the band measures only which samples
    random selection happened to label: the quantity the active loop is compared on.

    Returns one row per active row: ``version`` (``random-<version>``), ``labels_used``,
    ``human_labels``, ``accuracy`` (the mean over seeds, so existing readers see the mean),
    ``accuracy_std`` (sample std; 0 with one seed), ``accuracy_min``, ``accuracy_max`` and
    ``accuracy_per_seed`` (in the order of ``seeds``). Identical training sets (no human
    labels, or the whole stream) are trained once: the cost is at most rows x seeds trainings.
    """
    if not len(seeds):
        raise ConfigError("the random baseline needs at least one seed")
    orders = random_orders(len(X_stream), seeds)
    X_eval32 = X_eval.astype(np.float32)
    cache: dict[bytes, float] = {}  # sorted picks -> accuracy: same training set, same model

    def accuracy(pick: np.ndarray) -> float:
        key = pick.tobytes()
        if key not in cache:
            X = np.vstack([X_init, X_stream[pick]]) if len(pick) else X_init
            y = np.concatenate([y_init, y_stream[pick]])
            trained = train_model(X, y, family=family, seed=train_seed)
            probs = apply_temperature(trained.estimator.predict_proba(X_eval32), trained.temperature)
            cache[key] = float(evaluate(probs, trained.classes, y_eval)["accuracy"])
        return cache[key]

    rows = []
    for row in active:
        n = min(int(row["human_labels"]), len(X_stream))
        # Sorted so the rows keep stream order (as labels arrive) and equal sets share a cache key.
        per_seed = np.array([accuracy(np.sort(orders[k, :n])) for k in range(len(seeds))])
        rows.append({
            "version": f"random-{row['version']}", "labels_used": int(len(X_init) + n), "human_labels": n,
            "accuracy": float(per_seed.mean()),
            "accuracy_std": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else 0.0,
            "accuracy_min": float(per_seed.min()), "accuracy_max": float(per_seed.max()),
            "accuracy_per_seed": [float(a) for a in per_seed],
        })
    return rows


def verdict(active_accuracy: float, row: dict[str, Any]) -> str:
    """Where the active loop's accuracy falls against a baseline row's min-max band."""
    if active_accuracy > row["accuracy_max"]:
        return "above"
    if active_accuracy < row["accuracy_min"]:
        return "below"
    return "inside"


def closing_line(active_row: dict[str, Any], baseline_row: dict[str, Any], seeds: int) -> str:
    """The comparison printed at the end: active vs random's mean and band at the final label count."""
    where = verdict(active_row["accuracy"], baseline_row)
    band = f"{baseline_row['accuracy_min']:.3f}-{baseline_row['accuracy_max']:.3f} over {seeds} seed{'s' if seeds != 1 else ''}"
    meaning = {"above": "the active loop beats every random draw",
               "inside": "the active loop is within random's spread: no clear win either way",
               "below": "every random draw beats the active loop"}[where]
    return (f"random baseline at the same labels ({baseline_row['labels_used']}): {baseline_row['accuracy']:.3f} "
            f"({band}); active {active_row['version']} {active_row['accuracy']:.3f} is {where} the band: {meaning}")


def run_demo(cfg: DemoConfig, base: Settings, out: TextIO = sys.stdout) -> dict[str, Any]:
    # Up front, not at the report after the whole run: the demo trains, plots and embeds the broker.
    require_extra("train", "triage demo")
    require_extra("demo", "triage demo")
    if base.operations.log_level == "INFO":  # the live view is the output; keep routine logs out of it
        logging.getLogger("triage").setLevel(logging.WARNING)
    rng = np.random.default_rng(cfg.seed)
    X_pool, y_pool, X_eval, y_eval = _dataset(cfg)
    init_idx = select(X_pool, cfg.initial_labels, cfg.strategy, seed=cfg.seed)  # unlabelled pool: no y
    rest = np.setdiff1d(np.arange(len(X_pool)), init_idx)[: cfg.samples]
    X_stream, y_stream = X_pool[rest], y_pool[rest]
    cfg.report_dir.mkdir(parents=True, exist_ok=True)
    registry = Registry(cfg.report_dir / "registry")
    stop = threading.Event()
    view = LiveView(out)
    with EmbeddedBroker(log_file=cfg.report_dir / "broker.log") as broker:
        s = base.replace(**{
            "bootstrap_servers": broker.bootstrap_servers, "registry": registry.root, "session_timeout_ms": 6000,
            "min_new_labels": 10, "registry_poll_s": 2.0, "model": None,
        })
        ensure_topics(s, s.topics.all())
        out.write(f"embedded broker on {broker.bootstrap_servers}; report in {cfg.report_dir}\n")
        out.write(f"static bootstrap: {cfg.initial_labels} of {len(X_pool)} pool samples by {cfg.strategy}; "
                  f"held-out eval set: {len(X_eval)}\n")
        # The pool is unlabelled production data: it describes the inliers for the outlier detector.
        train_initial(X_pool[init_idx], y_pool[init_idx], registry, retrain=s.retrain, policy=s.policy,
                      outlier_quantile=s.serving.outlier_quantile, progress=lambda m: out.write(m + "\n"),
                      holdout=(X_eval, y_eval), reference=X_pool)
        records, truth = _stream(cfg, X_stream, y_stream, rng)
        scorer = Scorer(s, prepare_model(s.policy, serving_model_from_registry(registry, registry.current() or "", s.serving)))
        watcher = ModelWatcher(s, registry, scorer).start()
        tally = Tally(s, truth, stop)
        annotator = SimulatedAnnotator(s, truth, delay_s=cfg.annotator_delay_s,
                                       labels_per_minute=cfg.labels_per_minute, stop=stop)
        streamer = Streamer(s, records, cfg.rate, stop)
        retrain_log = open(cfg.report_dir / "retrain.log", "a")
        trainer = Trainer(s, registry, progress=lambda m: print(f"{time.strftime('%H:%M:%S')} {m}", file=retrain_log, flush=True))
        trainer.drain_s = 1.0  # retrain often on what has arrived, rather than wait for quiet
        outcomes: list[str] = []
        retrain_stop = threading.Event()

        def retrain_loop() -> None:
            while not retrain_stop.wait(cfg.retrain_every_s):
                o = trainer.run_once()
                outcomes.append(o.outcome)

        scorer_thread = threading.Thread(target=scorer.run, name="scorer", daemon=True)
        retrainer = threading.Thread(target=retrain_loop, name="retrain", daemon=True)
        for t in (scorer_thread, tally, annotator, streamer, retrainer):
            t.start()
        started = time.monotonic()
        interrupted = False
        drained_at: Optional[float] = None
        try:
            while True:
                elapsed = time.monotonic() - started
                view.show(_lines(registry, scorer, tally, annotator, streamer, outcomes, cfg, elapsed))
                if drained_at is None and not streamer.is_alive() and tally.accounted >= streamer.sent:
                    drained_at = time.monotonic()  # every record is routed; give the annotator a grace period
                if drained_at is not None and (annotator.backlog == 0 or time.monotonic() - drained_at > cfg.drain_grace_s):
                    break
                if cfg.duration_s and elapsed > cfg.duration_s:
                    break
                time.sleep(0.5)
        except KeyboardInterrupt:
            interrupted = True
            out.write("\ninterrupted: stopping cleanly (flushing and committing)...\n")
        stop.set()
        retrain_stop.set()
        retrainer.join(120)
        if not interrupted:
            time.sleep(1.0)  # let the last labels land
            final = trainer.run_once()
            outcomes.append(final.outcome)
        streamer.join(30)
        annotator.join(30)
        scorer.stop_event.set()
        scorer_thread.join(60)
        watcher.stop()
        trainer.close()
        tally.join(10)
        view.show(_lines(registry, scorer, tally, annotator, streamer, outcomes, cfg, time.monotonic() - started), final=True)
    active = _version_rows(registry, cfg.initial_labels)
    promoted = [r for r in active if r["status"] in ("current", "previous")]
    out.write(f"random baseline: {len(promoted)} label counts x {cfg.baseline_seeds} seeds...\n")
    seeds = draw_seeds(cfg.seed, cfg.baseline_seeds)
    baseline = random_baseline(promoted, X_pool[init_idx], y_pool[init_idx], X_stream, y_stream, X_eval, y_eval,
                               family=s.retrain.model_family, seeds=seeds, train_seed=s.policy.seed)
    summary = {
        "dataset": "scikit-learn digits (8x8, 10 classes)",
        "initial_labels": cfg.initial_labels, "initial_strategy": cfg.strategy,
        "eval_samples": int(len(X_eval)), "streamed": streamer.sent,
        "model_versions": active,
        "baseline": {"selection": BASELINE_SELECTION, "seeds": cfg.baseline_seeds, "draw_seeds": seeds,
                     "train_seed": s.policy.seed, "model_versions": baseline},
        "routes": {**tally.routes, "dlq": tally.dlq}, "reasons": dict(tally.reasons), "dlq": tally.dlq,
        "labels_used": annotator.labelled, "review_requests": annotator.requests,
        "accepted_accuracy": tally.accepted_correct / tally.accepted if tally.accepted else None,
        "retrain_outcomes": outcomes, "interrupted": interrupted,
    }
    from triage.report import write_report

    summary_path, plot_path = write_report(cfg.report_dir, summary)
    best = max((r["accuracy"] for r in promoted if r["accuracy"] is not None), default=None)
    out.write(f"\nv1 held-out accuracy {active[0]['accuracy']:.4f} -> best {best:.4f}; "
              f"{promoted[-1]['version']} {promoted[-1]['accuracy']:.4f} with {promoted[-1]['labels_used']} labels\n")
    out.write(closing_line(promoted[-1], baseline[-1], cfg.baseline_seeds) + "\n")
    out.write(f"report: {summary_path} and {plot_path}\n")
    return summary


def _lines(registry: Registry, scorer: Scorer, tally: Tally, annotator: SimulatedAnnotator, streamer: Streamer,
           outcomes: list[str], cfg: DemoConfig, elapsed: float) -> list[str]:
    versions = _version_rows(registry, cfg.initial_labels)
    history = "  ".join(f"{r['version']}={r['accuracy']:.3f}" + ("" if r["status"] != "rejected" else "(rej)")
                        for r in versions[-6:] if r["accuracy"] is not None)
    scored = tally.routes["predictions"] + tally.routes["review"]
    acc = f"{tally.accepted_correct / tally.accepted:.3f}" if tally.accepted else "  -  "
    rate = f"{tally.routes['review'] / scored:.1%}" if scored else "-"
    return [
        f"triage demo  {elapsed:5.1f}s   streamed {streamer.sent}/{len(streamer.records)}",
        f"serving {scorer.model.version} (registry current {registry.current()})   held-out accuracy: {history}",
        f"auto-accepted {tally.routes['predictions']} (accuracy {acc})   review {tally.routes['review']} ({rate})",
        f"labels used {annotator.labelled}   review backlog {annotator.backlog}   DLQ {tally.dlq}   "
        f"retrains {len(outcomes)} ({outcomes.count('promoted')} promoted)",
    ]
