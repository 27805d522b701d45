"""One measured pipeline in its own process (so CPU and peak RSS are its own).

Kinds:
  passthrough  consume -> produce the same bytes -> commit (the transport limit; no model)
  scorer       consumers.scorer.Scorer: consume -> score -> route -> produce -> commit
  naive        per message: json.loads, one ONNX run, outlier distance, json.dumps, one
               produce call; flush and commit once per poll (at-least-once kept)

Every kind reads the same samples with the same client and batch size, and reports the
latency of each sample from its record timestamp to the acknowledgement of its output.
Prints one JSON object on stdout; "READY" first when --wait-ready is given.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
from typing import Any, Optional

import numpy as np

from consumers.loop import Step
from consumers.scorer import Scorer
from triage.examples import example_paths
from triage.scoring.handlers import BatchResult
from triage.records import OutRecord, RecordBatch
from triage.scoring.servable import ServingModel
from triage.lifecycle.loading import serving_model_from_file
from triage.settings import Settings
from triage.runtime.threads import limit_blas_threads
from triage.transport import make_consumer, make_producer


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Recorder:
    """Per-batch ack times and per-sample latencies; ids of acknowledged outputs."""

    def __init__(self, expect: int, track_ids: bool, rss_every: int) -> None:
        self.expect = expect
        self.done = 0
        self.t0: Optional[float] = None
        self.cpu0 = 0.0
        self.latencies: list[np.ndarray] = []
        self.batches: list[tuple[float, int]] = []  # (ack time, samples)
        self.ids: Optional[dict[bytes, int]] = {} if track_ids else None
        self.rss: list[tuple[int, int]] = []
        self.rss_every = rss_every
        self._next_rss = rss_every

    def start(self) -> None:
        if self.t0 is None:
            self.t0 = time.time()
            self.cpu0 = time.process_time()

    def record(self, acked: float, event_ms: np.ndarray, keys: list[Optional[bytes]], n_inputs: int) -> bool:
        if not self.rss_every:  # an RSS run keeps nothing per batch, so it measures the scorer only
            self.latencies.append(np.maximum(acked - event_ms / 1000.0, 0.0))
            self.batches.append((acked, n_inputs))
        self.done += n_inputs
        if self.ids is not None:
            for k in keys:
                self.ids[k or b""] = self.ids.get(k or b"", 0) + 1
        if self.rss_every and self.done >= self._next_rss:
            self.rss.append((self.done, rss_bytes()))
            self._next_rss += self.rss_every
        return self.done >= self.expect

    def summary(self, warmup_fraction: float) -> dict[str, Any]:
        elapsed = time.time() - (self.t0 or time.time())
        cpu = time.process_time() - self.cpu0
        lat = np.concatenate(self.latencies) if self.latencies else np.zeros(0)
        steady = lat[int(len(lat) * warmup_fraction):]
        out: dict[str, Any] = {
            "samples": self.done,
            "elapsed_s": elapsed,
            "samples_per_s": self.done / elapsed if elapsed > 0 else 0.0,
            "cpu_s_per_1k": cpu / max(self.done, 1) * 1000,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "p50_ms": float(np.percentile(steady, 50) * 1000) if len(steady) else None,
            "p99_ms": float(np.percentile(steady, 99) * 1000) if len(steady) else None,
            "batches": [(round(t, 4), n) for t, n in self.batches],
            "batch_p99_ms": [float(np.percentile(x, 99) * 1000) if len(x) else 0.0 for x in self.latencies],
        }
        if self.ids is not None:
            out["unique_ids"] = len(self.ids)
            out["duplicates"] = sum(c - 1 for c in self.ids.values())
            out["ids"] = sorted(k.decode() for k in self.ids)
        if self.rss:
            out["rss_trace"] = self.rss
        return out


def _settings(args: argparse.Namespace) -> Settings:
    model, ref = example_paths()
    return Settings(
        bootstrap_servers=args.bootstrap, kafka_client=args.backend, session_timeout_ms=6000,
        group_id=args.group, samples_topic=args.topic, predictions_topic=args.out + ".predictions",
        review_topic=args.out + ".review", dlq_topic=args.out + ".dlq", model=model, reference=ref,
        batch_size=args.batch_size, create_topics=False, metrics_port=0,
    )


def _wait_assigned(consumer: Any, args: argparse.Namespace) -> None:
    if not args.wait_ready:
        return
    deadline = time.monotonic() + 60
    while not consumer.assigned() and time.monotonic() < deadline:
        batch = consumer.poll_batch(1, 100)
        assert not len(batch), "records arrived before READY (the topic must start empty)"
    print("READY", flush=True)


class BenchScorer(Scorer):
    """The real Scorer; only ``_observe`` is extended to record latencies and stop."""

    recorder: Recorder

    def _handle(self, batch: RecordBatch) -> BatchResult:
        self.recorder.start()
        return super()._handle(batch)

    def _observe(self, step: Step[BatchResult]) -> None:
        super()._observe(step)
        event_ms = np.asarray(step.batch.timestamps_ms, dtype=np.float64)
        keys = [r.key for r in step.delivered if r.reason in ("confident", "uncertain", "outlier")]
        if self.recorder.record(step.acked_at, event_ms, keys, len(step.batch)):
            self.stop_event.set()


def _swap_window(rec: Recorder, start: float, end: float, warmup: float) -> dict[str, Any]:
    """p99 inside [start, end] (model load + swap + 1 s) against the steady state before it,
    and the worst 0.5 s output rate inside the window against the median outside it."""
    acks = np.array([t for t, _ in rec.batches])
    counts = np.array([n for _, n in rec.batches])
    skip = int(len(acks) * warmup)
    inside = (acks >= start) & (acks <= end)
    before = (acks < start) & (np.arange(len(acks)) >= skip)
    def p99(mask: np.ndarray) -> Optional[float]:
        sel = [rec.latencies[i] for i in np.flatnonzero(mask)]
        return float(np.percentile(np.concatenate(sel), 99) * 1000) if sel else None
    edges = np.arange(acks[skip] if len(acks) else 0, (acks[-1] if len(acks) else 0) + 0.5, 0.5)
    bins = np.histogram(acks, bins=edges, weights=counts)[0] / 0.5 if len(edges) > 1 else np.zeros(0)
    mids = (edges[:-1] + edges[1:]) / 2 if len(edges) > 1 else np.zeros(0)
    win = (mids >= start) & (mids <= end)
    steady_rate = float(np.median(bins[~win])) if (~win).any() else 0.0
    return {
        "window_s": end - start,
        "p99_steady_ms": p99(before),
        "p99_window_ms": p99(inside),
        "rate_steady_per_s": steady_rate,
        "rate_min_window_per_s": float(bins[win].min()) if win.any() else None,
    }


def run_scorer(args: argparse.Namespace, rec: Recorder) -> dict[str, Any]:
    s = _settings(args)
    scorer = BenchScorer(s, serving_model_from_file(s.serving, s.policy))
    scorer.recorder = rec
    _wait_assigned(scorer.consumer, args)
    swap: dict[str, Any] = {}
    if args.swap_at:
        def swapper() -> None:
            while rec.t0 is None or time.time() - rec.t0 < args.swap_at:
                time.sleep(0.01)
            swap["load_start"] = time.time()
            # Load first, exactly as a registry watcher would: build, verify, warm, then offer.
            second = serving_model_from_file(s.replace(**{"model_version": "bench-v2"}).serving, s.policy)
            swap["offered"] = time.time()
            scorer.offer_model(second)
            scorer.on_swap.append(lambda old, new: swap.setdefault("swapped", time.time()))

        threading.Thread(target=swapper, daemon=True).start()
    scorer.run()
    out = rec.summary(args.warmup)
    out["swap"] = swap
    if "swapped" in swap:
        out["swap_window"] = _swap_window(rec, swap["load_start"], swap["swapped"] + 1.0, args.warmup)
    out["final_model"] = scorer.model.version
    return out


def run_passthrough(args: argparse.Namespace, rec: Recorder) -> dict[str, Any]:
    s = _settings(args)
    consumer = make_consumer(s, [s.topics.samples_topic], group_id=s.connection.group_id)
    producer = make_producer(s)
    _wait_assigned(consumer, args)
    out_topic = s.topics.predictions_topic
    try:
        while True:
            batch = consumer.poll_batch(s.serving.batch_size, s.serving.poll_timeout_ms)
            if not len(batch):
                continue
            rec.start()
            outs = [OutRecord(out_topic, k, v) for k, v in zip(batch.keys, batch.values)]
            errors = producer.send_all(outs, 60)
            assert not any(errors), [e for e in errors if e][:3]
            acked = time.time()
            consumer.commit(batch.next_offsets())
            if rec.record(acked, np.asarray(batch.timestamps_ms, dtype=np.float64), batch.keys, len(batch)):
                break
    finally:
        producer.close()
        consumer.close()
    return rec.summary(args.warmup)


def run_naive(args: argparse.Namespace, rec: Recorder) -> dict[str, Any]:
    """What people write by hand: a loop over messages, one model call and one produce each."""
    s = _settings(args)
    limit_blas_threads(s.serving.blas_threads)  # same native-thread setup as the scorer: a fair baseline
    model: ServingModel = serving_model_from_file(s.serving, s.policy)
    session = model.classifier.session
    spec = model.classifier.spec
    outlier = model.outlier
    classes = model.classes
    consumer = make_consumer(s, [s.topics.samples_topic], group_id=s.connection.group_id)
    producer = make_producer(s)
    raw = producer._p  # type: ignore[attr-defined]  # the client itself, as hand-written code uses it
    confluent = args.backend == "confluent"
    _wait_assigned(consumer, args)
    try:
        while True:
            batch = consumer.poll_batch(s.serving.batch_size, s.serving.poll_timeout_ms)
            if not len(batch):
                continue
            rec.start()
            for key, value in zip(batch.keys, batch.values):
                doc = json.loads(value)
                x = np.asarray(doc["features"], dtype=spec.input_dtype)[None, :]
                p = np.asarray(session.run([spec.output_name], {spec.input_name: x})[0], dtype=np.float64)[0]
                top = np.sort(p)[::-1]
                dist = float(outlier.score(x.astype(np.float64))[0]) if outlier is not None else None
                reason = "outlier" if dist and dist > 1 else ("uncertain" if 1 - (top[0] - top[1]) > s.policy.uncertainty_threshold else "confident")
                body = json.dumps({"id": doc["id"], "label": classes[int(p.argmax())], "confidence": float(top[0]),
                                   "scores": {"margin": float(top[0] - top[1]), "outlier": dist},
                                   "reason": reason, "model_version": model.version, "meta": doc.get("meta")}).encode()
                topic = s.topics.predictions_topic if reason == "confident" else s.topics.review_topic
                if confluent:
                    raw.produce(topic, body, key)
                    raw.poll(0)
                else:
                    raw.send(topic, value=body, key=key)
            raw.flush()
            acked = time.time()
            consumer.commit(batch.next_offsets())
            if rec.record(acked, np.asarray(batch.timestamps_ms, dtype=np.float64), batch.keys, len(batch)):
                break
    finally:
        producer.close()
        consumer.close()
    return rec.summary(args.warmup)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", choices=["passthrough", "scorer", "naive"], required=True)
    ap.add_argument("--backend", choices=["confluent", "kafka-python"], required=True)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--wait-ready", action="store_true")
    ap.add_argument("--warmup", type=float, default=0.0)
    ap.add_argument("--swap-at", type=float, default=0.0)
    ap.add_argument("--track-ids", action="store_true")
    ap.add_argument("--rss-every", type=int, default=0)
    ap.add_argument("--profile", default="")
    args = ap.parse_args(argv)
    rec = Recorder(args.expect, args.track_ids, args.rss_every)
    runner = {"passthrough": run_passthrough, "scorer": run_scorer, "naive": run_naive}[args.kind]
    if args.profile:
        from pyinstrument import Profiler

        prof = Profiler(interval=0.001)
        prof.start()
        result = runner(args, rec)
        prof.stop()
        with open(args.profile, "w") as fh:
            fh.write(prof.output_text(unicode=False, color=False))
    else:
        result = runner(args, rec)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
