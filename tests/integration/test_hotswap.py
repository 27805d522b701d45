"""Registry, retrain and hot-swap against the real embedded broker."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from typing import Any, Callable

import numpy as np

from consumers.model_watcher import ModelWatcher
from consumers.scorer import Scorer
from consumers.trainer import Trainer
from tests.fixtures import produce, read_all, read_headers
from tests.helpers import DEADLINE_S, REPO, ScorerProcess, wait_until
from triage.contracts import encode
from triage.lifecycle.labelstore import MARKERS
from triage.lifecycle.registry import Registry
from triage.lifecycle.loading import serving_model_from_registry
from triage.settings import Settings


def samples(X: np.ndarray, start: int, stop: int) -> list[tuple[bytes, bytes]]:
    return [(f"d{i}".encode(), encode({"id": f"d{i}", "features": X[i].tolist()})) for i in range(start, stop)]


def labels_for(review: list[dict[str, Any]], y: np.ndarray, wrong: bool = False) -> list[tuple[bytes, bytes]]:
    out = []
    for doc in review:
        i = int(doc["id"][1:])
        label = (int(y[i]) + 3) % 10 if wrong else int(y[i])
        out.append((doc["id"].encode(), encode({"id": doc["id"], "label": str(label), "annotator": "test"})))
    return out


def start_inprocess(s: Settings, reg: Registry) -> tuple[Scorer, ModelWatcher, threading.Thread]:
    scorer = Scorer(s, serving_model_from_registry(reg, reg.current() or "", s.serving))
    watcher = ModelWatcher(s, reg, scorer).start()
    worker = threading.Thread(target=scorer.run, kwargs={"idle_exit_s": 60.0})
    worker.start()
    return scorer, watcher, worker


def stop_inprocess(scorer: Scorer, watcher: ModelWatcher, worker: threading.Thread) -> None:
    scorer.stop_event.set()
    worker.join(60)
    watcher.stop()


def test_retrain_promotes_and_both_replicas_swap_without_loss(
    settings_factory: Callable[..., Settings], registry: Registry, digits: tuple[np.ndarray, np.ndarray],
    scorer_process: Callable[..., ScorerProcess],
) -> None:
    X, y = digits
    s = settings_factory(registry=registry.root, min_new_labels=20, registry_poll_s=5.0)
    replicas = [scorer_process(s, "--registry", str(registry.root)) for _ in range(2)]
    first = samples(X, 300, 1000)
    produce(s, s.topics.samples_topic, first)
    out1 = read_all(s, s.topics.outputs(), expect=len(first))
    review = [json.loads(r["value"]) for r in out1 if r["topic"] == s.topics.review_topic]
    assert len(review) >= 20
    produce(s, s.topics.labels_topic, labels_for(review, y))

    trainer = Trainer(s, registry, progress=lambda m: None)
    try:
        outcome = trainer.run_once()
    finally:
        trainer.close()
    assert outcome.outcome == "promoted", outcome
    assert outcome.candidate["holdout"]["accuracy"] > outcome.current["holdout"]["accuracy"]
    stored = [row for _, row in registry.label_store().rows()]  # the labels and the relabel markers
    assert registry.current() == "v2" and registry.manifest("v2")["data"]["labels_upto"] == len(stored)
    assert sum(row["label"] not in MARKERS for row in stored) == len(review)
    assert registry.manifest("v2")["parent"] == "v1"

    for proc in replicas:
        wait_until(lambda: proc.metric("triage_model_info", version="v2") == 1, "both replicas to serve v2",
                   alive=proc.dead)
    second = samples(X, 1000, 1400)
    produce(s, s.topics.samples_topic, second)
    out = read_all(s, s.topics.outputs(), expect=len(first) + len(second))
    docs = [json.loads(r["value"]) for r in out if r["topic"] != s.topics.dlq_topic]
    ids = {d["id"] for d in docs}
    assert ids == {k.decode() for k, _ in first + second}, "a sample was lost"
    late = [d for d in docs if int(d["id"][1:]) >= 1000]
    assert late and all(d["model_version"] == "v2" for d in late)
    for proc in replicas:
        assert proc.metric("triage_model_swaps_total", result="success") == 1


def test_unjoinable_and_unknown_labels_go_to_the_dlq(settings_factory: Callable[..., Settings], registry: Registry) -> None:
    s = settings_factory(registry=registry.root)
    bad = [(b"nobody", encode({"id": "nobody", "label": "3"})),
           (b"x1", encode({"id": "x1", "label": "cat", "features": [0.0] * 64})),
           (b"x2", b"not json")]
    produce(s, s.topics.labels_topic, bad)
    trainer = Trainer(s, registry, progress=lambda m: None)
    try:
        outcome = trainer.run_once()
    finally:
        trainer.close()
    assert outcome.outcome == "skipped" and outcome.rejected == 3
    dlq = read_headers(s, s.topics.dlq_topic, 3)
    assert sorted(d["key"] for d in dlq) == [b"nobody", b"x1", b"x2"]
    messages = " ".join(d["headers"]["triage.error.message"] for d in dlq)
    assert "no review record" in messages and "unknown class 'cat'" in messages
    assert all(d["headers"]["triage.error.stage"] == "label" for d in dlq)


def test_stream_keeps_flowing_through_a_swap(settings_factory: Callable[..., Settings], registry: Registry,
                                             digits: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = digits
    s = settings_factory(registry=registry.root, batch_size=50)
    scorer, watcher, worker = start_inprocess(s, registry)
    sent: list[int] = []
    swapped = threading.Event()

    def feed() -> None:  # a steady stream: 25 samples every 50 ms, 20 chunks past the swap
        n, after = 0, 0
        deadline = time.monotonic() + DEADLINE_S
        while after < 20 and time.monotonic() < deadline:
            chunk = [(f"d{i}".encode(), encode({"id": f"d{i}", "features": X[i % len(X)].tolist()})) for i in range(n, n + 25)]
            produce(s, s.topics.samples_topic, chunk)
            sent.extend(range(n, n + 25))
            n += 25
            after += swapped.is_set()
            time.sleep(0.05)

    feeder = threading.Thread(target=feed)
    try:
        feeder.start()
        wait_until(lambda: scorer.metrics.batches._value.get() >= 3, "the first batches")
        # v2: the same bytes under a new version, promoted while the stream flows
        manifest = {k: v for k, v in registry.manifest("v1").items() if k not in ("version", "sha256", "path", "status")}
        v2 = registry.add_bundle(registry.model_path("v1").read_bytes(), manifest, registry.canary("v1"))
        registry.promote(v2)
        from consumers.trainer import announce
        from triage.transport import make_producer

        producer = make_producer(s)
        announce(s, producer, registry.model_event(v2, "promote"))
        producer.close()
        wait_until(lambda: scorer.metrics.swaps.labels(result="success")._value.get() >= 1, "the swap")
        swapped.set()
        feeder.join(DEADLINE_S)
        out = read_all(s, s.topics.outputs(), expect=len(sent))
    finally:
        swapped.set()
        feeder.join(DEADLINE_S)
        stop_inprocess(scorer, watcher, worker)
    docs = [(r["partition"], r["offset"], r["topic"], json.loads(r["value"])) for r in out]
    assert {d["id"] for *_, d in docs} == {f"d{i}" for i in sent}, "a sample was lost"
    versions = {d["model_version"] for *_, d in docs}
    assert versions == {"v1", "v2"}
    # per output partition, once v2 appears no v1 output follows (swaps happen between batches)
    for topic in (s.topics.predictions_topic, s.topics.review_topic):
        for p in {p for p, _, t, _ in docs if t == topic}:
            seq = [d["model_version"] for pp, o, t, d in sorted(docs, key=lambda x: x[1]) if t == topic and pp == p]
            if "v2" in seq:
                assert "v1" not in seq[seq.index("v2"):]


def test_corrupt_bundle_and_bad_events_are_refused(settings_factory: Callable[..., Settings], registry: Registry,
                                                   digits: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = digits
    s = settings_factory(registry=registry.root)
    scorer, watcher, worker = start_inprocess(s, registry)
    try:
        manifest = {k: v for k, v in registry.manifest("v1").items() if k not in ("version", "sha256", "path", "status")}
        v2 = registry.add_bundle(registry.model_path("v1").read_bytes(), manifest)
        registry.promote(v2)
        registry.model_path(v2).write_bytes(b"\x08corrupt onnx")
        from triage.transport import make_producer
        from consumers.trainer import announce

        producer = make_producer(s)
        announce(s, producer, registry.model_event(v2, "promote"))  # its bundle no longer matches sha256
        announce(s, producer, {"version": "v9", "sha256": "0" * 64, "path": "../../etc/passwd", "action": "promote"})
        producer.close()
        wait_until(lambda: scorer.metrics.refusals.labels(reason="sha256")._value.get() >= 1
                 and scorer.metrics.refusals.labels(reason="path")._value.get() >= 1, "both refusals")
        produce(s, s.topics.samples_topic, samples(X, 300, 500))
        out = read_all(s, s.topics.outputs(), expect=200)
    finally:
        stop_inprocess(scorer, watcher, worker)
    assert scorer.model.version == "v1"
    assert {json.loads(r["value"])["model_version"] for r in out} == {"v1"}
    assert len({json.loads(r["value"])["id"] for r in out}) == 200


def test_rollback_cli_announces_and_scorer_follows(settings_factory: Callable[..., Settings], registry: Registry,
                                                   digits: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = digits
    s = settings_factory(registry=registry.root)
    manifest = {k: v for k, v in registry.manifest("v1").items() if k not in ("version", "sha256", "path", "status")}
    v2 = registry.add_bundle(registry.model_path("v1").read_bytes(), manifest, registry.canary("v1"))
    registry.promote(v2)
    scorer, watcher, worker = start_inprocess(s, registry)
    try:
        assert scorer.model.version == "v2"
        env_args = ["--bootstrap-servers", s.connection.bootstrap_servers, "--models-topic", s.topics.models_topic,
                    "--kafka-client", s.connection.kafka_client]
        done = subprocess.run([sys.executable, "-m", "triage", "models", "--registry", str(registry.root), *env_args, "rollback"],
                              capture_output=True, text=True, cwd=REPO, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "CURRENT = v1" in done.stdout
        wait_until(lambda: scorer.metrics.swaps.labels(result="success")._value.get() >= 1, "the swap back to v1")
        produce(s, s.topics.samples_topic, samples(X, 300, 400))
        out = read_all(s, s.topics.outputs(), expect=100)
    finally:
        stop_inprocess(scorer, watcher, worker)
    assert registry.current() == "v1" and registry.manifest("v2")["status"] == "rejected"
    assert {json.loads(r["value"])["model_version"] for r in out} == {"v1"}
    listing = subprocess.run([sys.executable, "-m", "triage", "models", "--registry", str(registry.root), "list"],
                             capture_output=True, text=True, cwd=REPO, timeout=60)
    assert "* " in listing.stdout and "v2" in listing.stdout and "rolled back" in listing.stdout
