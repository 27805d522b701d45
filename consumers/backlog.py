"""The review backlog, measured from the topics: labels asked for minus labels received (a
review request asks for ``annotators - len(labelled_by)`` labels: one, unless it wants several
people). A daemon thread reads both topics (all partitions, no consumer group, from the
beginning) and hands the difference to a sink, e.g. ``Scorer.feed_backlog``, which the
budget controller uses. Counting records (not joining ids) is cheap and is what matters for
the budget: how much annotation work is queued.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Optional

import msgspec

from consumers.loop import GuardedLoop
from triage.lifecycle.labelstore import MARKERS, UNDO
from triage.metrics import LoopMetrics
from triage.records import OutRecord, RecordBatch
from triage.settings import Settings
from triage.runtime.threads import Supervised
from triage.transport import Consumer, make_consumer
from triage.transport.retention import check_history

log = logging.getLogger("triage.backlog")
CHUNK = 10_000


class _Asks(msgspec.Struct):
    """The two fields of a review request the count needs (the rest is skipped unread)."""

    annotators: int = 1
    labelled_by: list[str] = []


class _Deletion(msgspec.Struct):
    deleted: Optional[int] = None


class _Answer(msgspec.Struct):
    label: str = ""
    origin: Optional[_Deletion] = None


_asks = msgspec.json.Decoder(_Asks)
_answer = msgspec.json.Decoder(_Answer)


def labels_asked(value: Optional[bytes]) -> int:
    """Labels a review request asks for; one for a request that does not decode (counted as before)."""
    try:
        asks = _asks.decode(value or b"")
    except (msgspec.DecodeError, msgspec.ValidationError):
        return 1
    return max(asks.annotators - len(asks.labelled_by), 0)


def labels_answered(value: Optional[bytes]) -> int:
    """1 for a label; -1 for an undo (the console shows the sample again, and Label Studio's task
    wants the deleted annotation again); 0 for the retrain job's markers (a relabel or tiebreak
    asked, not an answer: counted as one, they would cancel the request they come with) and for
    a label the Label Studio bridge republishes when it reports a deletion (an answer that
    already stood)."""
    try:
        answer = _answer.decode(value or b"")
    except (msgspec.DecodeError, msgspec.ValidationError):
        return 1
    if answer.label == UNDO:
        return -1
    if answer.label in MARKERS or (answer.origin is not None and answer.origin.deleted is not None):
        return 0
    return 1


class BacklogWatcher:
    def __init__(self, settings: Settings, sink: Callable[[int], None], *, consumer: Optional[Consumer] = None,
                 metrics: Optional[LoopMetrics] = None,
                 on_fatal: Optional[Callable[[BaseException], None]] = None) -> None:
        self.settings = settings
        self.sink = sink
        self._consumer = consumer
        self.metrics = metrics or LoopMetrics()
        self.reviews = 0
        self.labels = 0
        self._loop: Optional[GuardedLoop[list[OutRecord]]] = None
        restarts = self.metrics.helper_restarts.labels(thread="backlog-watcher")
        self._helper = Supervised("backlog-watcher", self.run, on_fatal=on_fatal or (lambda exc: None),
                                  on_restart=lambda exc: restarts.inc())

    @property
    def stop_event(self) -> threading.Event:
        return self._helper.stop_event

    def start(self) -> "BacklogWatcher":
        self._helper.start()
        return self

    def _count(self, batch: RecordBatch) -> list[OutRecord]:
        t = self.settings.topics
        for topic, value in zip(batch.topics, batch.values):
            if topic == t.review_topic:
                self.reviews += labels_asked(value)
            elif topic == t.labels_topic:
                self.labels += labels_answered(value)
        return []

    def poll_once(self, timeout_ms: int = 500) -> int:
        """Read what is new, update the counts, feed the sink; returns the backlog."""
        if self._loop is None:
            t = self.settings.topics
            check_history(self.settings, [t.review_topic, t.labels_topic], self.metrics, process="backlog watcher")
            consumer = self._consumer or make_consumer(self.settings, [t.review_topic, t.labels_topic], group_id=None)
            self._consumer = consumer
            self._loop = GuardedLoop("backlog", consumer, self._count, commit=False, max_records=CHUNK,
                                     poll_timeout_ms=timeout_ms, metrics=self.metrics, stop=self.stop_event,
                                     blocked_exit_s=self.settings.operations.blocked_exit_s)
        while True:
            batch = self._loop.poll()
            if batch is None:  # broker trouble: the loop counted and logged it
                break
            if len(batch):
                self._loop.process(batch)
            if len(batch) < CHUNK:
                break
        backlog = max(self.reviews - self.labels, 0)
        self.sink(backlog)
        return backlog

    def run(self, stop: Optional[threading.Event] = None) -> None:
        stop = stop or self.stop_event
        while not stop.is_set():
            self.poll_once()
            stop.wait(self.settings.policy.backlog_poll_s)

    def stop(self) -> None:
        self._helper.stop(10)
        if self._consumer is not None:
            self._consumer.close()
