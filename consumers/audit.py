"""The audit consumer: joins human labels to audited predictions and exports the realized
accuracy of auto-accepted predictions per model version (``triage audit``).

It reads ``triage.review`` (keeps only reason ``audit`` records: a uniformly random slice of
the auto-accepted, hence unbiased) and ``triage.labels`` with no consumer group, from the
beginning, so every instance sees everything and a restart rebuilds the estimate. It is
independent of the retrain job and commits nothing.
"""

from __future__ import annotations

import logging
import threading
from typing import Optional

from consumers.loop import GuardedLoop
from triage.contracts import decode_label, decode_review
from triage.errors import InputError
from triage.metrics import AuditMetrics, LoopMetrics
from triage.policies.audit import AuditEstimator
from triage.records import OutRecord, RecordBatch
from triage.settings import Settings
from triage.transport import Consumer, make_consumer
from triage.transport.retention import check_history

log = logging.getLogger("triage.audit")


class AuditConsumer:
    def __init__(self, settings: Settings, *, metrics: Optional[AuditMetrics] = None,
                 consumer: Optional[Consumer] = None, estimator: Optional[AuditEstimator] = None) -> None:
        self.settings = settings
        self.metrics = metrics or AuditMetrics()
        self.loop_metrics = LoopMetrics(self.metrics.registry)
        self.estimator = estimator or AuditEstimator()
        self._consumer = consumer
        self.stop_event = threading.Event()
        self.metrics.risk_alpha.set(settings.policy.risk_alpha)

    def handle(self, batch: RecordBatch) -> list[OutRecord]:
        """Fold one polled batch in (pure apart from the metrics)."""
        t, est, max_bytes = self.settings.topics, self.estimator, self.settings.serving.max_message_bytes
        kinds = self.metrics.records
        for topic, value in zip(batch.topics, batch.values):
            try:
                if topic == t.review_topic:
                    review = decode_review(value, max_bytes)
                    if review.reason != "audit":
                        kinds.labels(kind="other").inc()
                        continue
                    est.add_audit(review.id, review.model_version, review.predicted)
                    kinds.labels(kind="audit").inc()
                elif topic == t.labels_topic:
                    label = decode_label(value, max_bytes)
                    est.add_label(label.id, label.label)
                    kinds.labels(kind="label").inc()
                else:
                    kinds.labels(kind="other").inc()
            except InputError:
                kinds.labels(kind="invalid").inc()
        self.export()
        return []

    def export(self) -> None:
        m = self.metrics
        for e in self.estimator.estimates():
            m.estimate.labels(model_version=e.model_version).set(e.estimate)
            m.lower.labels(model_version=e.model_version).set(e.lower)
            m.upper.labels(model_version=e.model_version).set(e.upper)
            m.samples.labels(model_version=e.model_version).set(e.n)

    def run(self, *, idle_exit_s: Optional[float] = None) -> None:
        s = self.settings
        check_history(s, [s.topics.review_topic, s.topics.labels_topic], self.loop_metrics, process="audit")
        consumer = self._consumer or make_consumer(s, [s.topics.review_topic, s.topics.labels_topic], group_id=None)
        try:
            GuardedLoop("audit", consumer, self.handle, commit=False, max_records=s.serving.batch_size,
                        poll_timeout_ms=s.serving.poll_timeout_ms, metrics=self.loop_metrics,
                        stop=self.stop_event).run(idle_exit_s=idle_exit_s)
        finally:
            consumer.close()
