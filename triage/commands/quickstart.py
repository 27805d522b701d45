"""``triage quickstart``: the embedded broker, the bundled example model, a scorer, and a
short mixed stream (valid, outlier, corrupt) sent through it, with the routing tallied."""

from __future__ import annotations

import argparse
import threading
import time
from collections import Counter

from triage.commands.base import subcommand
from triage.examples import example_paths
from triage.settings import Settings
from triage.transport import ensure_topics, make_consumer, make_producer, send_until_acked


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", type=int, default=300, help="valid samples to send")


def sample_stream(n: int, seed: int = 0) -> list[tuple[bytes, bytes]]:
    """Digits samples plus a few far-out outliers and corrupt records, as (key, value)."""
    import numpy as np

    from triage.contracts import Sample, encode

    _, ref_path = example_paths()
    with np.load(ref_path) as data:
        X = data["X"]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        row = X[rng.integers(len(X))]
        out.append((f"s{i}".encode(), encode(Sample(f"s{i}", row.tolist(), int(time.time() * 1000)))))
    for i in range(max(n // 50, 3)):
        out.append((f"o{i}".encode(), encode(Sample(f"o{i}", (rng.random(64) * 60).tolist()))))
    for i, bad in enumerate([b"\xff\xfenot json", b'{"id": "", "features": []}', b'{"id": "x", "features": [1, 2]}', b"[1,2,3]"]):
        out.append((f"bad{i}".encode(), bad))
    return out


@subcommand("quickstart", "Start the embedded broker, score a short mixed stream with the bundled "
            "example model, and print where every sample went.", (), _args)
def run(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.scorer import Scorer
    from triage.lifecycle.loading import serving_model_from_file
    from triage.records import OutRecord
    from triage.runtime.broker import EmbeddedBroker

    model_path, ref_path = example_paths()
    with EmbeddedBroker() as broker:
        s = settings.replace(**{
            "bootstrap_servers": broker.bootstrap_servers, "model": model_path,
            "reference": ref_path, "session_timeout_ms": 6000,
        })
        print(f"embedded broker on {broker.bootstrap_servers}; model {model_path.name}")
        ensure_topics(s, s.topics.all())
        scorer = Scorer(s, serving_model_from_file(s.serving, s.policy))
        worker = threading.Thread(target=scorer.run, name="scorer", daemon=True)
        worker.start()
        records = sample_stream(args.samples)
        producer = make_producer(s)
        send_until_acked(producer, [OutRecord(s.topics.samples_topic, k, v) for k, v in records], deadline_s=30.0)
        producer.close()
        print(f"sent {len(records)} records to {s.topics.samples_topic}")
        reader = make_consumer(s, s.topics.outputs(), group_id=None)
        seen: dict[str, Counter[str]] = {t: Counter() for t in s.topics.outputs()}
        deadline = time.monotonic() + 60
        while sum(sum(c.values()) for c in seen.values()) < len(records) and time.monotonic() < deadline:
            batch = reader.poll_batch(1000, 500)
            for topic, value in zip(batch.topics, batch.values):
                seen[topic][_reason(topic, value, s)] += 1
        reader.close()
        scorer.stop_event.set()
        worker.join(30)
    for topic, counts in seen.items():
        print(f"  {topic:20s} {sum(counts.values()):5d}  {dict(counts)}")
    total = sum(sum(c.values()) for c in seen.values())
    print(f"{total} of {len(records)} records accounted for")
    return 0 if total >= len(records) else 1


def _reason(topic: str, value: bytes, s: Settings) -> str:
    from triage.contracts import decode_review

    if topic == s.topics.dlq_topic:
        return "dlq"
    if topic == s.topics.review_topic:
        return decode_review(value, s.serving.max_message_bytes).reason
    return "confident"
