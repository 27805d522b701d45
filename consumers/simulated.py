"""The demo's simulated world: production traffic and a human annotator with a budget."""

from __future__ import annotations

import heapq
import json
import threading
import time
from typing import Optional

from triage.codec import encode
from triage.labelstore import EDGE_CASE
from triage.records import OutRecord
from triage.settings import Settings
from triage.transport import make_consumer, make_producer


class Streamer(threading.Thread):
    """Publish (key, value) records to the samples topic at ``rate`` per second."""

    def __init__(self, settings: Settings, records: list[tuple[bytes, Optional[bytes]]], rate: float,
                 stop: threading.Event) -> None:
        super().__init__(name="demo-streamer", daemon=True)
        self.settings, self.records, self.rate, self.stop = settings, records, rate, stop
        self.sent = 0

    def run(self) -> None:
        producer = make_producer(self.settings)
        chunk = max(int(self.rate / 10), 1)
        started = time.monotonic()
        try:
            for i in range(0, len(self.records), chunk):
                if self.stop.is_set():
                    break
                part = self.records[i:i + chunk]
                errors = producer.send_all([OutRecord(self.settings.topics.samples_topic, k, v) for k, v in part], 60)
                self.sent += sum(1 for e in errors if e is None)
                lag = started + (i + chunk) / self.rate - time.monotonic()
                if lag > 0:
                    self.stop.wait(lag)
        finally:
            producer.close()


class SimulatedAnnotator(threading.Thread):
    """Answers review requests with the true label, highest priority first, after ``delay_s``,
    at most ``labels_per_minute``. Samples without a true label (outliers) get ``__edge_case__``."""

    def __init__(self, settings: Settings, truth: dict[str, str], *, delay_s: float, labels_per_minute: float,
                 stop: threading.Event, name: str = "simulated-annotator") -> None:
        super().__init__(name=name, daemon=True)
        self.settings, self.truth, self.delay_s, self.stop = settings, truth, delay_s, stop
        self.interval = 60.0 / labels_per_minute
        self.requests = 0
        self.labelled = 0
        self.queue: list[tuple[float, float, str, list[float]]] = []  # (-priority, arrival, id, features)
        self._seen: set[str] = set()

    @property
    def backlog(self) -> int:
        return len(self.queue)

    def run(self) -> None:
        s = self.settings
        consumer = make_consumer(s, [s.topics.review_topic], group_id="triage-demo-annotators")
        producer = make_producer(s)
        next_label = time.monotonic()
        try:
            while not self.stop.is_set():
                batch = consumer.poll_batch(500, 100)
                now = time.monotonic()
                for value in batch.values:
                    doc = json.loads(value) if value else {}
                    if doc.get("id") in self._seen:
                        continue  # at-least-once duplicates
                    self._seen.add(doc["id"])
                    self.requests += 1
                    heapq.heappush(self.queue, (-float(doc.get("priority", 0)), now, doc["id"], doc["features"]))
                if batch.offsets:
                    consumer.commit(batch.next_offsets())
                answers = []
                while self.queue and now >= next_label and now - self.queue[0][1] >= self.delay_s:
                    _, _, sid, feats = heapq.heappop(self.queue)
                    label = self.truth.get(sid, EDGE_CASE)
                    answers.append(OutRecord(s.topics.labels_topic, sid.encode(), encode(
                        {"id": sid, "label": label, "annotator": "simulated", "features": feats, "ts": int(time.time() * 1000)})))
                    next_label = max(next_label + self.interval, now - 1.0)
                if answers:
                    producer.send_all(answers, 60)
                    self.labelled += len(answers)
        finally:
            producer.close()
            consumer.close()
