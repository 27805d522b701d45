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
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from triage.contracts import decode_label, decode_review
from triage.errors import ConfigError, InputError, LabelError
from triage.lifecycle.labeljoin import label_row
from triage.lifecycle.labelstore import LabelRows
from triage.lifecycle.registry import Registry
from triage.lifecycle.retraining import current_version
from triage.records import RecordBatch
from triage.runtime import failpoints
from triage.settings import Settings
from triage.transport import make_consumer
from triage.transport.base import batches_to_end

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
    try:
        for batch in batches_to_end(reader, topic, limit_s=limit_s, stop=stop):
            handle(batch)
    finally:
        reader.close()


def store_lost(store: LabelRows, labels_upto: int) -> bool:
    """The label store must be rebuilt from the topic: a rebuild was cut short, or it is empty
    while CURRENT was trained on stored labels (lost, not never written)."""
    return store.rebuilding() or (store.count() == 0 and labels_upto > 0)


def rebuild_label_store(settings: Settings, registry: Registry, *, replace: bool = False,
                        progress: Callable[[str], None] = lambda m: log.info("%s", m),
                        stop: Optional[threading.Event] = None) -> RebuildReport:
    """Rebuild ``registry``'s label store from the labels topic (see the module doc)."""
    store = registry.label_store()
    existing = store.count()
    if existing and not replace and not store.rebuilding():  # a rebuild cut short left them: not the store
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
    # marked until the rows are all in: a rebuild that a full disk or SIGKILL cuts short leaves
    # the mark, and the retrain job's next start rebuilds (``store_lost``) instead of taking a part
    store.mark_rebuilding(True)
    if existing:
        store.clear()
    failpoints.hit("labels.rebuild_append")
    report.rows = store.append(rows)  # one write and fsync, or one segment
    store.mark_rebuilding(False)
    progress(f"rebuilt {registry.location}'s label store: {report.rows} rows from {len(labels)} labels"
             + (f"; not stored: {dict(report.skipped)}" if report.skipped else ""))
    return report
