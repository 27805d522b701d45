"""The audit consumer: joins human labels to audited predictions and exports the realized
accuracy of auto-accepted predictions per model version (``triage audit``).

It reads ``triage.review`` (keeps only reason ``audit`` records: a uniformly random slice of
the auto-accepted, hence unbiased) and ``triage.labels`` with no consumer group, from the
beginning, so every instance sees everything and a restart rebuilds the estimate. It is
independent of the retrain job and commits nothing.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Optional

from triage.metrics import AuditMetrics
from triage.policies.audit import AuditEstimator
from triage.records import RecordBatch
from triage.settings import Settings
from triage.transport import Consumer, make_consumer

log = logging.getLogger("triage.audit")


class AuditConsumer:
    def __init__(self, settings: Settings, *, metrics: Optional[AuditMetrics] = None,
                 consumer: Optional[Consumer] = None, estimator: Optional[AuditEstimator] = None) -> None:
        self.settings = settings
        self.metrics = metrics or AuditMetrics()
        self.estimator = estimator or AuditEstimator()
        self._consumer = consumer
        self.stop_event = threading.Event()
        self.metrics.risk_alpha.set(settings.policy.risk_alpha)

    def handle(self, batch: RecordBatch) -> None:
        """Fold one polled batch in (pure apart from the metrics)."""
        s, est = self.settings, self.estimator
        for topic, value in zip(batch.topics, batch.values):
            try:
                doc = json.loads(value) if value else None
            except ValueError:
                doc = None
            if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
                self.metrics.records.labels(kind="other").inc()
                continue
            if topic == s.topics.review_topic and doc.get("reason") == "audit":
                est.add_audit(doc["id"], str(doc.get("model_version", "")), str(doc.get("predicted")))
                self.metrics.records.labels(kind="audit").inc()
            elif topic == s.topics.labels_topic and isinstance(doc.get("label"), str):
                est.add_label(doc["id"], doc["label"])
                self.metrics.records.labels(kind="label").inc()
            else:
                self.metrics.records.labels(kind="other").inc()
        self.export()

    def export(self) -> None:
        m = self.metrics
        for e in self.estimator.estimates():
            m.estimate.labels(model_version=e.model_version).set(e.estimate)
            m.lower.labels(model_version=e.model_version).set(e.lower)
            m.upper.labels(model_version=e.model_version).set(e.upper)
            m.samples.labels(model_version=e.model_version).set(e.n)

    def run(self, *, idle_exit_s: Optional[float] = None) -> None:
        s = self.settings
        consumer = self._consumer or make_consumer(s, [s.topics.review_topic, s.topics.labels_topic], group_id=None)
        idle = 0.0
        try:
            while not self.stop_event.is_set():
                batch = consumer.poll_batch(s.serving.batch_size, s.serving.poll_timeout_ms)
                if len(batch):
                    idle = 0.0
                    self.handle(batch)
                else:
                    idle += s.serving.poll_timeout_ms / 1000.0
                    if idle_exit_s is not None and idle > idle_exit_s:
                        break
        finally:
            consumer.close()
