"""The audit consumer: joins human labels to audited predictions and exports the realized
accuracy of auto-accepted predictions per model version (``triage audit``), and the live risk
certificate of each version (``triage.policies.live_risk``).

It reads ``triage.review`` (keeps only reason ``audit`` records: a uniformly random slice of
the auto-accepted, hence unbiased) and ``triage.labels`` with no consumer group, from the
beginning, so every instance sees everything and a restart rebuilds the estimate. It is
independent of the retrain job and commits nothing.

With ``--risk-live-control`` and ``--registry`` it also moves the scorers' risk threshold: each
change is appended to ``models/<v>/live_risk.json`` (atomically), which every scorer's model
watcher applies within one registry poll. That file is also this consumer's memory: after a
restart it replays the topics from the beginning (each sample id counted once) against the
same history, and acts only once it has caught up (its first empty poll), so a restart neither
resets the state nor repeats a change.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from typing import Any, Optional

from consumers.loop import GuardedLoop, blocked_reasons, not_blocked
from triage.contracts import decode_label, decode_review
from triage.errors import InputError, TriageError
from triage.lifecycle.labelstore import MARKERS
from triage.lifecycle.registry import Registry, registry_from
from triage.metrics import AuditMetrics, LoopMetrics
from triage.policies.audit import AuditEstimator
from triage.policies.live_risk import (
    UNBOUNDED, Change, LiveCertificate, LiveRows, decide, default_min_rows, uncertainty_of,
)
from triage.policies.risk import NEVER
from triage.records import OutRecord, RecordBatch
from triage.settings import Settings
from triage.transport import Consumer, make_consumer
from triage.transport.retention import check_history

log = logging.getLogger("triage.audit")


class LiveControl:
    """Per version: the threshold its manifest certified and the live control's changes, read
    from and written to the registry (without a registry: unknown, and nothing is moved)."""

    def __init__(self, settings: Settings, registry: Optional[Registry]) -> None:
        p = settings.policy
        self.registry = registry
        self.enabled = p.risk_live_control and registry is not None
        self.key = {"alpha": p.risk_alpha, "delta": p.risk_delta, "acquisition": p.acquisition}
        self.base: dict[str, float] = {}
        self.history: dict[str, list[Change]] = {}

    def load(self, version: str) -> None:
        if version in self.base:
            return
        self.base[version], self.history[version] = UNBOUNDED, []
        if self.registry is None:
            return
        try:
            risk = (self.registry.manifest(version).get("routing") or {}).get("risk") or {}
            doc = self.registry.live_risk(version)
        except TriageError as exc:
            log.warning("live risk for %s: cannot read its bundle (%s); its threshold is unknown", version, exc)
            return
        if {k: risk.get(k) for k in ("alpha", "delta")} == {k: self.key[k] for k in ("alpha", "delta")}:
            self.base[version] = float(risk.get("threshold", NEVER))
        if doc is not None and {k: doc.get(k) for k in self.key} == self.key:
            self.history[version] = [Change(float(c["threshold"]), int(c["since_ms"])) for c in doc.get("history", [])]

    def record(self, cert: LiveCertificate, now_ms: int) -> None:
        assert self.registry is not None
        history = self.history[cert.version] + [Change(cert.target, now_ms)]
        doc: dict[str, Any] = {
            **self.key, "version": cert.version, "base": self.base[cert.version], "threshold": cert.target,
            "history": [{"threshold": c.threshold, "since_ms": c.since_ms} for c in history],
            "last": {"action": cert.action, "samples": cert.samples, "errors": cert.errors,
                     "upper_bound": cert.upper_bound, "certified_rows": cert.certified_rows},
        }
        self.registry.write_live_risk(cert.version, doc)  # first: a failed write changes nothing
        self.history[cert.version] = history


class AuditConsumer:
    def __init__(self, settings: Settings, *, metrics: Optional[AuditMetrics] = None,
                 consumer: Optional[Consumer] = None, estimator: Optional[AuditEstimator] = None,
                 registry: Optional[Registry] = None, clock: Any = time.time) -> None:
        self.settings = settings
        self.metrics = metrics or AuditMetrics()
        self.loop_metrics = LoopMetrics(self.metrics.registry)
        self.estimator = estimator or AuditEstimator(recent=settings.policy.audit_recent_labels)
        self.live: LiveRows = self.estimator.rows  # one join feeds the accuracy and the certificate
        if registry is None and settings.serving.registry is not None:
            registry = registry_from(settings.serving)
        self.control = LiveControl(settings, registry)
        p = settings.policy
        self.min_rows = p.risk_live_min_rows or default_min_rows(p.risk_alpha, p.risk_delta)
        self.settle_ms = int(2 * settings.serving.registry_poll_s * 1000)  # scorers apply a change within one poll
        self.caught_up = False  # acts only after replaying what the topics held at start-up
        self.certificates: dict[str, LiveCertificate] = {}
        self._refused: set[tuple[str, float, int]] = set()
        self._unwritten = False  # a change the registry refused: retried at every idle poll too
        self._decided: dict[str, tuple[int, int]] = {}  # version -> (row changes, history length) decided on
        self._exported: dict[str, int] = {}  # version -> row changes its accuracy series show
        self._clock = clock
        self._consumer = consumer
        self.stop_event = threading.Event()
        self.loop: Optional[GuardedLoop[list[OutRecord]]] = None  # while running, for /readyz
        self.metrics.risk_alpha.set(p.risk_alpha)
        self.metrics.live_required.set(self.min_rows)

    def handle(self, batch: RecordBatch) -> list[OutRecord]:
        """Fold one polled batch in (pure apart from the metrics and the live control)."""
        t, est, max_bytes = self.settings.topics, self.estimator, self.settings.serving.max_message_bytes
        acquisition = self.settings.policy.acquisition
        kinds = self.metrics.records
        for topic, value, ts_ms in zip(batch.topics, batch.values, batch.timestamps_ms):
            try:
                if topic == t.review_topic:
                    review = decode_review(value, max_bytes)
                    if review.reason != "audit":
                        kinds.labels(kind="other").inc()
                        continue
                    s = review.scores
                    u = uncertainty_of(acquisition, review.confidence, s.margin, s.entropy)
                    est.add_audit(review.id, review.model_version, review.predicted, u, int(ts_ms))
                    self.control.load(review.model_version)
                    kinds.labels(kind="audit").inc()
                elif topic == t.labels_topic:
                    label = decode_label(value, max_bytes)
                    if label.label in MARKERS:  # the retrain job asked again: not an answer
                        kinds.labels(kind="other").inc()
                        continue
                    est.add_label(label.id, label.label, label.annotator)
                    kinds.labels(kind="label").inc()
                else:
                    kinds.labels(kind="other").inc()
            except InputError:
                kinds.labels(kind="invalid").inc()
        self.export()
        if self.caught_up:  # while replaying, once at the end (each pass costs O(rows))
            self.recertify()
        return []

    def after_poll(self, batch: Optional[RecordBatch]) -> None:
        if batch is None or not len(batch):
            if not self.caught_up or self._unwritten:
                self.caught_up = True
                self.recertify()

    def export(self) -> None:
        """Every audited version's accuracy. A version whose labels were all taken back shows 0
        samples and no estimate: an undo must not leave the old estimate on /metrics."""
        m = self.metrics
        for version, rows in self.live.versions.items():
            if self._exported.get(version) == rows.changes:
                continue  # unchanged: each estimate costs O(rows), and export runs every batch
            self._exported[version] = rows.changes
            e, recent = self.estimator.estimate(version), self.estimator.estimate_recent(version)
            m.samples.labels(model_version=version).set(0 if e is None else e.n)
            m.recent_samples.labels(model_version=version).set(0 if recent is None else recent.n)
            for gauge, value in ((m.estimate, e and e.estimate), (m.lower, e and e.lower), (m.upper, e and e.upper),
                                 (m.recent_upper, recent and recent.upper)):
                if value is not None:
                    gauge.labels(model_version=version).set(value)
                else:
                    with contextlib.suppress(KeyError):  # absent: prometheus-client < 0.22 raises
                        gauge.remove(version)

    def recertify(self) -> None:
        """The live certificate of every audited version; act on it once caught up."""
        m = self.metrics
        for version, rows in self.live.versions.items():
            self.control.load(version)
            state = (rows.changes, len(self.control.history[version]))
            if self._decided.get(version) == state and not self._unwritten:
                continue  # nothing new for this version (most batches: review records of other reasons)
            cert = self._decide(version)
            if self.caught_up and self.control.enabled and self._act(cert):
                cert = self._decide(version)  # export the state the scorers are moving to
            self._decided[version] = (rows.changes, len(self.control.history[version]))
            self.certificates[version] = cert
            m.live_upper.labels(version=version).set(cert.upper_bound)
            m.live_samples.labels(version=version).set(cert.samples)
            m.live_threshold.labels(version=version).set(cert.deployed)
            m.live_certified.labels(version=version).set(cert.certified)

    def _decide(self, version: str) -> LiveCertificate:
        p = self.settings.policy
        return decide(version, self.live.versions[version], base=self.control.base[version],
                      history=self.control.history[version], alpha=p.risk_alpha, delta=p.risk_delta,
                      min_rows=self.min_rows, settle_ms=self.settle_ms)

    def _act(self, cert: LiveCertificate) -> bool:
        """Move the threshold as ``cert`` says; True when a change was written."""
        if cert.action == "refuse-loosen":
            key = (cert.version, cert.certified, cert.certified_rows)
            if key not in self._refused:
                self._refused.add(key)
                self.metrics.live_actions.labels(action="refuse_loosen").inc()
                log.warning("live risk %s: the audit labels certify threshold %.6g, above the deployed %.6g, "
                            "but on %d rows; loosening needs %d (--risk-live-min-rows)", cert.version,
                            cert.certified, cert.deployed, cert.certified_rows, self.min_rows)
            return False
        if cert.action not in ("tighten", "loosen") or math.isinf(cert.deployed):
            return False  # keep, or a version whose threshold is unknown (no risk manifest)
        try:
            self.control.record(cert, int(self._clock() * 1000))
        except (OSError, TriageError) as exc:  # the world's fault: retried at the next batch or empty poll
            self._unwritten = True
            self.metrics.live_write_errors.inc()
            log.error("live risk %s: could not write the threshold %.6g to the registry (%s); the scorers keep "
                      "%.6g, retrying", cert.version, cert.target, exc, cert.deployed)
            return False
        self._unwritten = False
        self.metrics.live_actions.labels(action=cert.action).inc()
        log.warning("live risk %s: %s the auto-accept threshold %.6g -> %.6g (live bound %.4f on %d audit "
                    "samples, alpha %g)", cert.version, cert.action, cert.deployed, cert.target, cert.upper_bound,
                    cert.samples, self.settings.policy.risk_alpha)
        return True

    def readiness(self) -> dict[str, bool]:
        return {"running": True, "not_blocked": not_blocked(self.loop)}

    def readiness_reasons(self) -> dict[str, str]:
        return blocked_reasons(self.loop)

    def run(self, *, idle_exit_s: Optional[float] = None) -> None:
        s = self.settings
        check_history(s, [s.topics.review_topic, s.topics.labels_topic], self.loop_metrics, process="audit")
        consumer = self._consumer or make_consumer(s, [s.topics.review_topic, s.topics.labels_topic], group_id=None)
        self.loop = GuardedLoop("audit", consumer, self.handle, commit=False, max_records=s.serving.batch_size,
                                poll_timeout_ms=s.serving.poll_timeout_ms, metrics=self.loop_metrics,
                                after_poll=self.after_poll, stop=self.stop_event,
                                blocked_exit_s=s.operations.blocked_exit_s)
        try:
            self.loop.run(idle_exit_s=idle_exit_s)
        finally:
            consumer.close()
