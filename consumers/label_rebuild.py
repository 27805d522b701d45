"""``triage labels rebuild``: the label store rebuilt from ``triage.labels`` alone.

Reads the labels topic to the end offsets it had when the rebuild began (no consumer group, so
the retrain job's position is untouched), joins each label as the retrain ingest does
(``labeljoin.label_row``; format-1 labels without features join to ``triage.review`` while it
still holds them) and writes the rows in (partition, offset) order. Labels the ingest would
dead-letter are counted, not stored. The retrain ingest later skips the labels already stored
(same partition, offset and id), so nothing is stored twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from triage.contracts import decode_label, decode_review
from triage.errors import ConfigError, InputError, LabelError, TransportError
from triage.lifecycle.labeljoin import label_row
from triage.lifecycle.registry import Registry
from triage.lifecycle.retraining import current_version
from triage.records import RecordBatch
from triage.settings import Settings
from triage.transport import make_consumer
from triage.transport.base import read_to_end

log = logging.getLogger("triage.labels")
READ_LIMIT_S = 600.0


@dataclass
class RebuildReport:
    rows: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> labels not stored


def read_topic(settings: Settings, topic: str, handle: Callable[[RecordBatch], None], *,
               stop: Optional[threading.Event] = None, limit_s: float = READ_LIMIT_S) -> None:
    """Every record of ``topic`` up to the end offsets it has now, or a TransportError."""
    reader = make_consumer(settings, [topic], group_id=None)
    deadline = time.monotonic() + limit_s
    try:
        ends = reader.watermarks()
        read: dict[tuple[str, int], int] = {}
        while ends and not read_to_end(ends, read):
            if stop is not None and stop.is_set():
                raise TransportError("stopped while reading " + topic, retriable=True)
            if time.monotonic() > deadline:
                raise TransportError(f"could not read {topic} to its end within {limit_s:.0f} s", retriable=True)
            batch = reader.poll_batch(1000, 300)
            for tp in zip(batch.topics, batch.partitions, batch.offsets):
                read[tp[:2]] = max(read.get(tp[:2], 0), tp[2] + 1)
            handle(batch)
    finally:
        reader.close()


def rebuild_label_store(settings: Settings, registry: Registry, *, replace: bool = False,
                        progress: Callable[[str], None] = lambda m: log.info("%s", m),
                        stop: Optional[threading.Event] = None) -> RebuildReport:
    """Rebuild ``registry``'s label store from the labels topic (see the module doc)."""
    store = registry.label_store()
    existing = store.count()
    if existing and not replace:
        raise ConfigError(f"the label store of {registry.location} holds {existing} rows; rebuilding would "
                          "replace them: pass --replace")
    manifest = registry.manifest(current_version(registry))
    classes, feature_count = frozenset(manifest["classes"]), int(manifest["feature_count"])
    limit = settings.serving.max_message_bytes
    topics = settings.topics
    review: dict[str, list[float]] = {}

    def index_review(batch: RecordBatch) -> None:
        for value in batch.values:
            try:
                r = decode_review(value, limit)
            except InputError:
                continue
            review[r.id] = r.features

    labels: list[tuple[int, int, Any]] = []

    def collect(batch: RecordBatch) -> None:
        for p, o, value in zip(batch.partitions, batch.offsets, batch.values):
            labels.append((p, o, value))

    progress(f"reading {topics.review_topic} (features of format-1 labels) and {topics.labels_topic}")
    read_topic(settings, topics.review_topic, index_review, stop=stop)
    read_topic(settings, topics.labels_topic, collect, stop=stop)
    report = RebuildReport()
    rows: list[dict[str, Any]] = []
    for p, o, value in sorted(labels, key=lambda t: (t[0], t[1])):
        try:
            rows.append(label_row(decode_label(value, limit), p, o, review_features=review, classes=classes,
                                  feature_count=feature_count,
                                  accept_new_classes=settings.retrain.accept_new_classes))
        except InputError as exc:
            report.skipped[exc.reason_code if isinstance(exc, LabelError) else "invalid"] += 1
    if existing:
        store.clear()
    # one append (one write and fsync, or one segment): a rebuild killed halfway leaves the store
    # empty or whole, never a part that a restart would take for the store
    report.rows = store.append(rows)
    progress(f"rebuilt {registry.location}'s label store: {report.rows} rows from {len(labels)} labels"
             + (f"; not stored: {dict(report.skipped)}" if report.skipped else ""))
    return report
