"""``triage monitor``: one process that reads every scorer replica's outputs and watches the
model without waiting for labels (docs/guide/monitoring.md).

It reads ``triage.predictions`` (plain and provisional) and ``triage.review`` (audit copies,
accepted predictions already counted, are kept aside until labelled) in its own consumer group,
and ``triage.labels``: a label joined to an audit copy corrects its version's estimate
(``triage.monitoring.estimate.correction``), and a label of a sample still in its version's
window (reviewed or audited) replaces that sample's expected correctness by its realized one. Per model version it keeps the accuracy estimate
and the drift detectors (``triage.monitoring``), exports them, and publishes a retrain request
on a drift alarm or when the estimate's upper end falls below ``--accuracy-floor``. Labels skip
the reorder (their order does not matter and they lag the outputs by hours): each one is folded
in, and its offset covered, as it is read.

Checkpoint (``triage.monitoring.checkpoint``): the state and the offsets it covers are written
together every ``--monitor-checkpoint-s``, and only then committed; records below the covered
offsets are skipped on a re-read. A full or read-only disk under the checkpoint is the world's
fault: the loop holds the batch (``/readyz`` false, ``triage_blocked``) and retries.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

from consumers.loop import Abandoned, GuardedLoop, Step
from triage.contracts import decode_label, decode_prediction, decode_review, encode
from triage.contracts.retrain_request import RetrainRequest
from triage.errors import InputError, TriageError
from triage.lifecycle.labelstore import MARKERS
from triage.metrics import MonitorMetrics
from triage.monitoring import checkpoint
from triage.monitoring.merge import Reorder
from triage.monitoring.state import MonitorConfig, Observations
from triage.records import OutRecord, RecordBatch
from triage.runtime import failpoints
from triage.settings import Settings
from triage.transport import Consumer, Producer, make_consumer, make_producer

log = logging.getLogger("triage.monitor")


def _ranges(batch: RecordBatch) -> dict[tuple[str, int], tuple[int, int]]:
    out: dict[tuple[str, int], tuple[int, int]] = {}
    for t, p, o in zip(batch.topics, batch.partitions, batch.offsets):
        lo, hi = out.get((t, p), (o, o))
        out[(t, p)] = (min(lo, o), max(hi, o))
    return out


def config_of(settings: Settings) -> MonitorConfig:
    m = settings.monitor
    return MonitorConfig(window=m.monitor_window, ert=m.drift_ert_samples, reference=m.drift_reference_samples,
                         k=m.drift_k, level=m.estimate_level, recent_labels=settings.policy.audit_recent_labels)


class AuditCopy(NamedTuple):
    """An audited prediction (reason ``audit`` on the review topic), kept until its label."""

    sample_id: str
    version: str
    confidence: float
    predicted: str


class MonitorConsumer:
    def __init__(self, settings: Settings, *, consumer: Optional[Consumer] = None,
                 producer: Optional[Producer] = None, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.metrics = MonitorMetrics()
        self.stop_event = threading.Event()
        self._consumer, self._producer, self._clock = consumer, producer, clock
        self.state = checkpoint.load(settings.monitor.monitor_state_dir, config_of(settings))
        self.rng = np.random.default_rng()
        if self.state.rng is not None:
            self.rng.bit_generator.state = self.state.rng
        self.saved_at = time.monotonic()
        self._saved_offsets: dict[tuple[str, int], int] = dict(self.state.covered)
        self._committed: dict[tuple[str, int], int] = {}
        self.loop: Optional[GuardedLoop[list[OutRecord]]] = None
        m = settings.monitor
        self.reorder = Reorder(m.monitor_max_hold_s * 1000, m.monitor_bucket_ms, int(m.monitor_idle_grace_s * 1000))
        self.newest: Optional[str] = None
        self._corrected: set[str] = set()  # versions whose correction took a label since the last export
        if settings.monitor.accuracy_floor is not None:
            self.metrics.floor.set(settings.monitor.accuracy_floor)
        for version in self.state.versions:
            self._export(version)

    # --- one batch -------------------------------------------------------------------------
    def handle(self, batch: RecordBatch) -> list[OutRecord]:
        reorder, covered = self.reorder, self.state.covered
        arrived = time.monotonic() * 1000
        labels_topic = self.settings.topics.labels_topic
        for i in range(len(batch)):
            tp, offset = (batch.topics[i], batch.partitions[i]), batch.offsets[i]
            if offset < covered.get(tp, 0):
                self.metrics.records.labels(kind="replayed").inc()
                continue
            if tp[0] == labels_topic:
                if (version := self._label(batch.values[i])) is not None:
                    self._corrected.add(version)
                covered[tp] = offset + 1
                continue
            if offset < reorder.read_to.get(tp, 0):
                continue  # pushed already: a held batch handled again
            reorder.push(tp, batch.timestamps_ms[i], offset, self._parse(batch.topics[i], batch.values[i]), arrived)
        # the labels' partitions hold no outputs back: they are not ordered with them
        owned = self.loop.consumer.assigned() if self.loop is not None else ()
        assigned = [tp for tp in owned if tp[0] != labels_topic]
        self._fold(reorder.release(reorder.watermark(assigned), self.rng), labelled=True)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("monitor: batch %s; assigned %s; covered %s; held %d", _ranges(batch), sorted(assigned),
                      sorted(covered.items()), len(reorder))
        if time.monotonic() - self.saved_at >= self.settings.monitor.monitor_checkpoint_s:
            self.save()
        failpoints.hit("monitor.batch")  # folded (maybe checkpointed), not yet committed
        return self._requests()

    def after_poll(self, batch: Optional[RecordBatch]) -> None:
        """An empty poll: every partition is read to its end, so what arrived a grace ago can
        leave; and what was folded since the last checkpoint (outputs or labels) is checkpointed
        once it is due (an idle stream must not leave the checkpoint and the committed offsets
        behind for good)."""
        if self.loop is None or (batch is not None and len(batch)):
            return
        released = self.reorder.release_idle(time.monotonic() * 1000, self.rng) if len(self.reorder) else []
        unsaved = self.state.covered != self._saved_offsets
        due = time.monotonic() - self.saved_at >= self.settings.monitor.monitor_checkpoint_s
        if not released and not self.state.pending and not (unsaved and due):
            return
        self._fold(released)
        try:
            if self.state.pending:
                self.loop.deliver(self._requests(), RecordBatch())
                self._acknowledged()
            self.save()
            self.commit_saved()
        except (OSError, TriageError) as exc:  # retried with the next batch, where the loop holds it
            log.warning("monitor: checkpoint or request on an idle poll failed (%s); retrying", exc)

    def _label(self, value: Optional[bytes]) -> Optional[str]:
        """Fold a label in; returns the version whose correction it changed."""
        try:
            label = decode_label(value, self.settings.serving.max_message_bytes)
        except InputError as exc:
            self.metrics.records.labels(kind="invalid").inc()
            log.debug("monitor: skipped an invalid label: %s", exc)
            return None
        self.metrics.records.labels(kind="label").inc()
        if label.label in MARKERS:  # the retrain job asked again: not an answer
            return None
        return self.state.add_label(label.id, label.label, label.annotator)

    def _parse(self, topic: str, value: Optional[bytes]) -> Any:
        """(version, confidence, margin, outlier, label, accepted, id) of a scored sample, an
        ``AuditCopy`` (a prediction already counted, to join to its label), or None (invalid)."""
        t, max_bytes = self.settings.topics, self.settings.serving.max_message_bytes
        try:
            if topic == t.predictions_topic:
                p = decode_prediction(value, max_bytes)
                self.metrics.records.labels(kind="prediction").inc()
                return (p.model_version, p.confidence, p.scores.margin, p.scores.outlier, p.label,
                        not p.provisional, p.id)
            r = decode_review(value, max_bytes)
        except InputError as exc:
            self.metrics.records.labels(kind="invalid").inc()
            log.debug("monitor: skipped an invalid record on %s: %s", topic, exc)
            return None
        if r.reason == "audit":
            self.metrics.records.labels(kind="audit_copy").inc()
            return AuditCopy(r.id, r.model_version, r.confidence, r.predicted)
        self.metrics.records.labels(kind="review").inc()
        return r.model_version, r.confidence, r.scores.margin, r.scores.outlier, r.predicted, False, r.id

    def _fold(self, released: list[tuple[tuple[str, int], int, Any]], labelled: bool = False) -> None:
        """Released entries, in scored order, into the state; offsets become covered. ``labelled``:
        labels were folded in just before (``_corrected``), so versions may need exporting."""
        if not released and not (labelled and self._corrected):
            return
        obs: dict[str, Observations] = defaultdict(Observations)
        for tp, offset, item in released:
            self.state.covered[tp] = max(self.state.covered.get(tp, 0), offset + 1)
            if isinstance(item, AuditCopy):
                if (joined := self.state.add_audit(*item)) is not None:
                    self._corrected.add(joined)
            elif item is not None:
                obs[item[0]].add(*item[1:])
        now_ms = int(self._clock() * 1000)
        # the version with the most records last: it is the most recently updated (checkpoint.KEEP_VERSIONS)
        for version, o in sorted(obs.items(), key=lambda vo: len(vo[1])):
            vm = self.state.version(version)
            self.newest = version
            alarms = vm.observe(o, self.rng)
            self.state.join_waiting(version, o.sample_id)
            for signal in alarms:
                self.metrics.alarms.labels(signal=signal).inc()
                det = vm.detectors[signal]
                if det.alarms == 1 or det.alarms % 100 == 0:  # a lasting shift re-alarms every few samples
                    log.warning("drift %s on %s: threshold %.2f crossed after %d monitored samples (alarm %d)",
                                version, signal, det.h, det.seen, det.alarms)
                self._request(version, "drift", signal, det.alarm_statistic, det.h, now_ms)
            self._check_floor(version, now_ms)
            self._corrected.discard(version)
        for version in self._corrected & set(self.state.versions):  # labels only: the estimate moved
            self._check_floor(version, now_ms)
        self._corrected.clear()
        self.state.rng = self.rng.bit_generator.state

    def _check_floor(self, version: str, now_ms: int) -> None:
        """Request a retrain when the estimate's upper end is below the floor; export the version."""
        vm, floor = self.state.versions[version], self.settings.monitor.accuracy_floor
        est = vm.estimate()
        if floor is not None and vm.calibrated and est.samples >= self.state.config.window and est.upper < floor:
            self._request(version, "estimated_accuracy", "estimated_accuracy", est.upper, floor, now_ms)
        self._export(version)

    def _requests(self) -> list[OutRecord]:
        topic = self.settings.topics.retrain_requests_topic
        return [OutRecord(topic, r["model_version"].encode(), encode(RetrainRequest(**r)), reason="retrain_request")
                for r in self.state.pending]

    def _acknowledged(self) -> None:
        for r in self.state.pending:
            self.metrics.requests.labels(reason=r["reason"]).inc()
        self.state.pending.clear()

    def _request(self, version: str, reason: str, signal: str, statistic: float, threshold: float, now_ms: int) -> None:
        last = self.state.requested_ms.get(version)
        if last is not None and now_ms - last < self.settings.monitor.retrain_request_interval_s * 1000:
            return
        self.state.requested_ms[version] = now_ms
        self.state.pending.append({"model_version": version, "reason": reason, "signal": signal,
                                   "statistic": float(statistic), "threshold": float(threshold), "ts": now_ms})
        log.warning("monitor: requesting a retrain of %s (%s on %s)", version, reason, signal)

    # --- after the outputs are acknowledged ------------------------------------------------
    def after(self, step: Step[list[OutRecord]]) -> None:
        if step.delivered:
            self._acknowledged()
        self.commit_saved()

    def save(self) -> None:
        checkpoint.save(self.settings.monitor.monitor_state_dir, self.state)
        self.saved_at = time.monotonic()
        self._saved_offsets = dict(self.state.covered)

    def commit_saved(self) -> None:
        """Commit what the last checkpoint covers (never more)."""
        todo = {tp: o for tp, o in self._saved_offsets.items() if self._committed.get(tp) != o}
        if not todo or self.loop is None:
            return
        batch = RecordBatch()
        for (topic, partition), offset in todo.items():
            batch.append(topic, partition, offset - 1, 0, None, None)
        self.loop.commit_offsets(batch)
        self._committed.update(todo)

    def _export(self, version: str) -> None:
        vm = self.state.versions[version]
        est = vm.estimate()
        m = self.metrics
        if est.samples:
            m.estimate.labels(model_version=version).set(est.accuracy)
            m.lower.labels(model_version=version).set(est.lower)
            m.upper.labels(model_version=version).set(est.upper)
        m.samples.labels(model_version=version).set(est.samples)
        m.labelled.labels(model_version=version).set(vm.labelled())
        fix = vm.correction()
        m.correction.labels(model_version=version).set(fix.shift if fix is not None else 0.0)
        m.correction_labels.labels(model_version=version).set(len(vm.residuals.filled()))
        acc = vm.estimate_accepted()
        if acc.samples:
            m.accepted.labels(model_version=version).set(acc.accuracy)
            m.accepted_lower.labels(model_version=version).set(acc.lower)
            m.accepted_upper.labels(model_version=version).set(acc.upper)
        m.reference.labels(model_version=version).set(
            self.state.config.reference if vm.calibrated else len(vm.reference_labels))
        if version == (self.newest or version):
            for name, det in vm.detectors.items():
                m.statistic.labels(signal=name).set(det.statistic)
                m.threshold.labels(signal=name).set(det.h)

    def ready(self) -> dict[str, bool]:
        loop = self.loop
        return {"broker": loop is None or loop.broker_ok, "not_blocked": loop is None or loop.blocked_since is None}

    # --- the loop --------------------------------------------------------------------------
    def run(self, *, idle_exit_s: Optional[float] = None) -> None:
        s = self.settings
        consumer = self._consumer or make_consumer(s, [s.topics.predictions_topic, s.topics.review_topic,
                                                       s.topics.labels_topic],
                                                   group_id=s.monitor.monitor_group_id)
        producer = self._producer or make_producer(s)
        self.loop = GuardedLoop("monitor", consumer, self.handle, producer=producer, commit=False,
                                max_records=s.serving.batch_size, poll_timeout_ms=s.serving.poll_timeout_ms,
                                metrics=self.metrics.loop, after=self.after, after_poll=self.after_poll,
                                stop=self.stop_event,
                                blocked_exit_s=s.operations.blocked_exit_s)
        self.metrics.checkpoint_age.set_function(lambda: time.monotonic() - self.saved_at)
        try:
            self.loop.run(idle_exit_s=idle_exit_s)
            try:
                self.save()  # the final checkpoint: a clean stop loses nothing
                self.commit_saved()
            except OSError as exc:
                log.error("monitor: the final checkpoint could not be written (%s); the restart re-reads from "
                          "the previous one", exc)
            except Abandoned:  # stopped while the broker held the commit: the checkpoint skips what it covers
                log.warning("monitor: stopped before the final commit was acknowledged; the restart skips what "
                            "the checkpoint covers")
        finally:
            consumer.close()
            producer.close()
