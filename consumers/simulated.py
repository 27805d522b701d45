"""The demo's simulated world: production traffic and a human annotator with a budget."""

from __future__ import annotations

import heapq
import threading
import time
from typing import Optional

from consumers.loop import GuardedLoop
from triage.contracts import decode_review, encode_label
from triage.errors import InputError, TransportError
from triage.lifecycle.labelstore import EDGE_CASE
from triage.records import OutRecord, RecordBatch
from triage.settings import Settings
from triage.transport import Producer, make_consumer, make_producer, send_until_acked


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
                try:
                    send_until_acked(producer, [OutRecord(self.settings.topics.samples_topic, k, v) for k, v in part],
                                     stop=self.stop)
                except TransportError:
                    break  # only raised once stopped
                self.sent += len(part)
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
        self.invalid = 0
        self.queue: list[tuple[float, float, str, list[float]]] = []  # (-priority, arrival, id, features)
        self._seen: set[str] = set()
        self._next_label = time.monotonic()
        self._producer: Optional[Producer] = None

    @property
    def backlog(self) -> int:
        return len(self.queue)

    def _enqueue(self, batch: RecordBatch) -> list[OutRecord]:
        now = time.monotonic()
        for value in batch.values:
            try:
                review = decode_review(value, self.settings.serving.max_message_bytes)
            except InputError:
                self.invalid += 1
                continue
            if review.id in self._seen:
                continue  # at-least-once duplicates
            self._seen.add(review.id)
            self.requests += 1
            heapq.heappush(self.queue, (-review.priority, now, review.id, review.features))
        return []

    def _answer(self) -> None:
        now = time.monotonic()
        answers = []
        while self.queue and now >= self._next_label and now - self.queue[0][1] >= self.delay_s:
            _, _, sid, feats = heapq.heappop(self.queue)
            value = encode_label(sid, self.truth.get(sid, EDGE_CASE), annotator="simulated", features=feats,
                                 ts=int(time.time() * 1000))
            answers.append(OutRecord(self.settings.topics.labels_topic, sid.encode(), value))
            self._next_label = max(self._next_label + self.interval, now - 1.0)
        if answers and self._producer is not None:
            send_until_acked(self._producer, answers, stop=self.stop)
            self.labelled += len(answers)

    def run(self) -> None:
        s = self.settings
        consumer = make_consumer(s, [s.topics.review_topic], group_id="triage-demo-annotators")
        self._producer = make_producer(s)
        try:
            GuardedLoop("simulated-annotator", consumer, self._enqueue, max_records=500, poll_timeout_ms=100,
                        before_poll=self._answer, stop=self.stop).run()
        except TransportError:
            pass  # stopped while the broker was unreachable: nothing left to do
        finally:
            self._producer.close()
            consumer.close()
