"""The review backlog, measured from the topics: review requests produced minus labels
received. A daemon thread reads both topics (all partitions, no consumer group, from the
beginning) and hands the difference to a sink, e.g. ``Scorer.feed_backlog``, which the
budget controller uses. Counting records (not joining ids) is cheap and is what matters for
the budget: how much annotation work is queued.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

from triage.errors import TransportError
from triage.settings import Settings
from triage.transport import Consumer, make_consumer

log = logging.getLogger("triage.backlog")


class BacklogWatcher:
    def __init__(self, settings: Settings, sink: Callable[[int], None], *, consumer: Optional[Consumer] = None) -> None:
        self.settings = settings
        self.sink = sink
        self._consumer = consumer
        self.reviews = 0
        self.labels = 0
        self.stop_event = threading.Event()
        self._thread = threading.Thread(target=self.run, name="backlog-watcher", daemon=True)

    def start(self) -> "BacklogWatcher":
        self._thread.start()
        return self

    def poll_once(self, timeout_ms: int = 500) -> int:
        """Read what is new, update the counts, feed the sink; returns the backlog."""
        if self._consumer is None:
            s = self.settings
            self._consumer = make_consumer(s, [s.topics.review_topic, s.topics.labels_topic], group_id=None)
        while True:
            batch = self._consumer.poll_batch(10_000, timeout_ms)
            for topic in batch.topics:
                if topic == self.settings.topics.review_topic:
                    self.reviews += 1
                elif topic == self.settings.topics.labels_topic:
                    self.labels += 1
            if len(batch) < 10_000:
                break
        backlog = max(self.reviews - self.labels, 0)
        self.sink(backlog)
        return backlog

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                try:
                    self.poll_once()
                except TransportError as exc:
                    log.warning("backlog read failed (%s); retrying", exc.message)
                self.stop_event.wait(self.settings.policy.backlog_poll_s)
        finally:
            if self._consumer is not None:
                self._consumer.close()

    def stop(self) -> None:
        self.stop_event.set()
        self._thread.join(10)
