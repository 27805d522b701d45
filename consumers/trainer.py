"""The retrain job: labels in, a checked candidate out, promotions announced.

ingest: read review records (the join index, no group), consume labels as a group, join by
sample id, persist the good ones, dead-letter the rest, then commit (at-least-once); both
reads run the guarded loop. run_once: ingest; aggregate the labels per sample and export annotator
quality; send tiebreaks and cleanlab-flagged labels back to review (a review request and a marker label
each, the markers ingested before training so the held samples are out of it); then
``triage.lifecycle.retraining.retrain_once`` (train, evaluate against current, promote or reject), then
announce a promotion on the models topic.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Mapping, Optional

from consumers.loop import GuardedLoop, blocked_reasons, close_within, drain, not_blocked
from triage.contracts import Label, dead_letter_from_batch, decode_label, decode_review, encode_model_event
from triage.errors import BlockedError, InputError, LabelError, TriageError
from triage.extras import require_extra
from triage.lifecycle.labeljoin import label_row
from triage.lifecycle import askagain, annotatorstats
from triage.lifecycle.labelstore import EDGE_CASE, MARKERS, UNDO
from triage.lifecycle.labelview import LabelView
from triage.metrics import RetrainMetrics
from triage.records import OutRecord, RecordBatch
from triage.lifecycle.registry import Registry
from triage.lifecycle.retraining import RetrainOutcome, current_version, load_npz, retrain_once
from triage.settings import Settings
from triage.transport import Consumer, Producer, make_consumer, make_producer, send_until_acked
from triage.transport.retention import check_history

log = logging.getLogger("triage.retrain")
IDLE_POLLS = 2
JOIN_WAIT_S = 30.0
DRAIN_S = 10.0
ANNOUNCE_DEADLINE_S = 60.0
CLOSE_S = 5.0  # per client: three clients close well within an orchestrator's grace period


def announce(settings: Settings, producer: Producer, event: Mapping[str, Any], *,
             deadline_s: float = ANNOUNCE_DEADLINE_S, stop: Optional[threading.Event] = None) -> None:
    """Publish a promote/rollback event; a broker that stays unreachable fails in bounded time."""
    rec = OutRecord(settings.topics.models_topic, str(event["version"]).encode(), encode_model_event(event))
    send_until_acked(producer, [rec], deadline_s=deadline_s, stop=stop)


def _rejection_reason(exc: InputError) -> str:
    if isinstance(exc, LabelError):
        return exc.reason_code
    return "invalid"


class Trainer:
    def __init__(self, settings: Settings, registry: Registry, *, metrics: Optional[RetrainMetrics] = None,
                 progress: Callable[[str], None] = lambda msg: log.info("%s", msg),
                 stop: Optional[threading.Event] = None) -> None:
        require_extra("train", "the retrain loop")  # at start-up, not as every run's failure
        self.settings = settings
        self.registry = registry
        self.metrics = metrics or RetrainMetrics()
        self.progress = progress
        repairs = self.metrics.store_repairs
        self.store = registry.label_store(on_repair=lambda reason, n: repairs.labels(reason=reason).inc())
        self.drain_s = DRAIN_S
        self.stop = stop or threading.Event()  # SIGTERM: the ingest leaves its batch uncommitted and returns
        self.blocked: Optional[GuardedLoop[list[OutRecord]]] = None  # the ingest loop, for /readyz
        # (partition, offset) of labels appended since the last commit: a held batch handled
        # again (after a fault of the world struck half-way through a bisection) appends none twice
        self._appended: set[tuple[int, int]] = set()
        self._review: dict[str, list[float]] = {}
        self._stored: dict[tuple[int, int], str] = {}  # positions in the store, read at the first run
        self._review_reader: Optional[Consumer] = None
        self._labels: Optional[Consumer] = None
        self._producer: Optional[Producer] = None
        self._classes: frozenset[str] = frozenset()
        self._feature_count = 0
        self._version = ""
        self.folded = self.rejected = 0
        self.names = annotatorstats.AnnotatorNames(settings.quality.annotator_metrics_top)
        self._counted: Optional[int] = None  # store rows whose relabel outcomes are counted
        self._asked: set[tuple[str, int]] = set()  # (sample, its last row) asked again by this process
        self.metrics.quality.accuracy_alert_below.set(settings.quality.annotator_accuracy_alert_below)

    # --- clients (created lazily so `--once` without Kafka work still fails clearly) ------
    @property
    def producer(self) -> Producer:
        if self._producer is None:
            self._producer = make_producer(self.settings)
        return self._producer

    def close(self) -> None:
        for name, client in (("review reader", self._review_reader), ("labels consumer", self._labels),
                             ("producer", self._producer)):
            if client is not None:
                close_within(client, CLOSE_S, name)

    # --- ingest ----------------------------------------------------------------------------
    def _read_review(self, batch: RecordBatch) -> list[OutRecord]:
        """Index review requests by sample id (the features a label joins to)."""
        max_bytes = self.settings.serving.max_message_bytes
        for value in batch.values:
            try:
                review = decode_review(value, max_bytes)
            except InputError:
                self.metrics.review_records.labels(kind="invalid").inc()
                continue  # the scorer wrote it; whatever it is, labels cannot join to it
            self._review[review.id] = review.features
            self.metrics.review_records.labels(kind="indexed").inc()
        return []

    def _fold_labels(self, batch: RecordBatch) -> list[OutRecord]:
        """Validate and join each label; persist the good ones (before the commit), return
        dead letters for the rest."""
        s = self.settings
        rows: list[dict[str, Any]] = []
        dead: list[OutRecord] = []
        reasons: list[str] = []
        for i, value in enumerate(batch.values):
            if (batch.partitions[i], batch.offsets[i]) in self._appended:
                continue
            try:
                row = self._join(decode_label(value, s.serving.max_message_bytes), batch.partitions[i], batch.offsets[i])
                if self._stored.get((row["partition"], row["offset"])) == row["id"]:
                    continue  # already stored (a rebuild from the topic wrote it)
            except InputError as exc:
                reasons.append(_rejection_reason(exc))
                dead.append(dead_letter_from_batch(batch, i, exc, "label", s.topics.dlq_topic, self._version))
                continue
            if row["label"] == EDGE_CASE:
                reasons.append("edge_case")
            rows.append(row)
        self.store.append(rows)
        self.folded += sum(r["label"] not in MARKERS for r in rows)  # the retrain job's own markers are not labels
        self._appended.update((r["partition"], r["offset"]) for r in rows)
        self._stored.update(((r["partition"], r["offset"]), r["id"]) for r in rows)
        self.rejected += len(dead)
        self.metrics.folded.inc(sum(r["label"] not in (EDGE_CASE, UNDO, *MARKERS) for r in rows))
        for r in rows:
            if r["label"] not in (UNDO, *MARKERS):
                self.metrics.quality.annotator_labels.labels(annotator=self.names(r.get("annotator"))).inc()
        for reason in reasons:
            self.metrics.rejected.labels(reason=reason).inc()
        return dead

    def _join(self, label: Label, partition: int, offset: int) -> dict[str, Any]:
        """The label-store row of a valid label, or a LabelError saying why there is none."""
        return label_row(label, partition, offset, review_features=self._review, classes=self._classes,
                         feature_count=self._feature_count, accept_new_classes=self.settings.retrain.accept_new_classes)

    def ingest(self, classes: list[str], feature_count: int) -> tuple[int, int]:
        s = self.settings
        self._classes, self._feature_count = frozenset(classes), feature_count
        self._version = self.registry.current() or ""  # stamped on this ingest's dead letters
        if self._review_reader is None:
            check_history(s, [s.topics.review_topic, s.topics.labels_topic], self.metrics.loop, process="retrain")
            self._review_reader = make_consumer(s, [s.topics.review_topic], group_id=None)
        exit_s = s.operations.blocked_exit_s
        drain(GuardedLoop("retrain-review-index", self._review_reader, self._read_review, commit=False,
                          max_records=s.serving.batch_size, poll_timeout_ms=300, metrics=self.metrics.loop,
                          stop=self.stop, blocked_exit_s=exit_s),
              idle_polls=IDLE_POLLS, max_s=self.drain_s)
        if self.stop.is_set():
            return 0, 0
        if self._labels is None:
            self._labels = make_consumer(s, [s.topics.labels_topic], group_id=s.retrain.retrain_group_id)
        before = (self.folded, self.rejected)
        self.blocked = GuardedLoop("retrain", self._labels, self._fold_labels, producer=self.producer,
                                   dlq_topic=s.topics.dlq_topic, max_records=s.serving.batch_size, poll_timeout_ms=300,
                                   version=lambda: self._version, metrics=self.metrics.loop, stop=self.stop,
                                   blocked_exit_s=exit_s, after=lambda step: self._appended.clear())
        drain(self.blocked, idle_polls=IDLE_POLLS, max_s=self.drain_s, join_wait_s=JOIN_WAIT_S)
        return self.folded - before[0], self.rejected - before[1]

    def readiness(self) -> dict[str, bool]:
        return {"running": True, "not_blocked": not_blocked(self.blocked)}

    def readiness_reasons(self) -> dict[str, str]:
        return blocked_reasons(self.blocked)

    # --- one run -------------------------------------------------------------------------------
    def run_once(self) -> RetrainOutcome:
        started = time.monotonic()
        try:
            outcome = self._run()
        except BlockedError:
            raise  # past --blocked-exit-s: the process exits 1 and is restarted
        except TriageError as exc:
            log.error("retrain failed: %s", exc.message)
            outcome = RetrainOutcome("failed", reason=exc.message)
        except Exception as exc:  # a failed run is counted and reported, never silent
            log.exception("retrain failed")
            outcome = RetrainOutcome("failed", reason=f"{type(exc).__name__}: {exc}")
        self.metrics.runs.labels(outcome=outcome.outcome).inc()
        self.metrics.duration.observe(time.monotonic() - started)
        self.metrics.last_run.set(time.time())
        return outcome

    def _restore_store(self, manifest: Mapping[str, Any]) -> None:
        """Rebuild a lost label store from the topic (``label_rebuild.store_lost``)."""
        from consumers.label_rebuild import rebuild_label_store, store_lost

        if store_lost(self.store, int(manifest.get("data", {}).get("labels_upto", 0))):
            why = ("a rebuild of it was cut short" if self.store.rebuilding() else
                   f"it is empty but {manifest['version']} was trained on {manifest['data']['labels_upto']} stored labels")
            self.progress(f"the label store is lost ({why}): rebuilding it from {self.settings.topics.labels_topic}")
            rebuild_label_store(self.settings, self.registry, replace=True, progress=self.progress, stop=self.stop)
        self._stored = self.store.positions()
        self.names.seed(r.get("annotator") for _, r in self.store.rows() if r["label"] not in (UNDO, *MARKERS))

    def _run(self) -> RetrainOutcome:
        s, reg = self.settings, self.registry
        current = current_version(reg)
        manifest = reg.manifest(current)
        if self._labels is None:  # the first run of this process
            self._restore_store(manifest)
        self.progress(f"ingesting labels from {s.topics.labels_topic} (current model {current})")
        folded, rejected = self.ingest(list(manifest["classes"]), int(manifest["feature_count"]))
        self.progress(f"folded {folded} labels, rejected {rejected}")
        if self.stop.is_set():
            return RetrainOutcome("skipped", reason="stopped", folded=folded, rejected=rejected)
        try:
            if self._quality_step(manifest, current):
                more = self.ingest(list(manifest["classes"]), int(manifest["feature_count"]))  # the markers just sent
                folded, rejected = folded + more[0], rejected + more[1]
            outcome = retrain_once(reg, self.store, retrain=s.retrain, policy=s.policy,
                                   outlier_quantile=s.serving.outlier_quantile, progress=self.progress,
                                   pending=self.metrics.pending.set, quality=s.quality)
        finally:
            self.store.forget_view()
        outcome.folded, outcome.rejected = folded, rejected
        if outcome.candidate:
            self.metrics.eval_accuracy.labels(model="candidate").set(outcome.candidate["holdout"]["accuracy"])
            self.metrics.eval_accuracy.labels(model="current").set(outcome.current["holdout"]["accuracy"])
        if outcome.outcome == "promoted" and outcome.version is not None:
            announce(s, self.producer, reg.model_event(outcome.version, "promote"), stop=self.stop)
            self.metrics.pending.set(0)
            self.progress(f"promoted {outcome.version} and announced it on {s.topics.models_topic}")
        return outcome

    # --- label quality (issue 24) ------------------------------------------------------------
    def _newest_upto(self) -> int:
        """Store rows the newest registered version (promoted or not) was trained on: the previous retrain."""
        versions = self.registry.versions()
        return int(self.registry.manifest(versions[-1]).get("data", {}).get("labels_upto", 0)) if versions else 0

    def _quality_step(self, manifest: Mapping[str, Any], current: str) -> bool:
        """Export annotator quality and relabel outcomes, and send stored labels back to review
        when they need it; True when markers were published (the caller ingests them)."""
        q, classes = self.settings.quality, list(manifest["classes"])
        total = self.store.count()
        if total == self._counted:
            return False  # nothing arrived since the last look: the exported figures stand
        view = self.store.view(total, q.aggregation, len(classes))
        previous = self._newest_upto()
        self._export(view, previous if self._counted is None else self._counted)
        self._counted = total
        new_labels = sum(1 for n in view.human_rows if n >= previous)
        if new_labels < self.settings.retrain.min_new_labels:
            return False  # no retrain this run: nothing is asked either
        asks = [a for a in self._asks(view, classes, new_labels) if _state(view, a.sample) not in self._asked]
        if not asks:
            return False
        self._publish(asks, current)
        self._asked.update(_state(view, a.sample) for a in asks)
        return True

    def _export(self, view: LabelView, since: int) -> None:
        m = self.metrics.quality
        summary = view.summary(since)
        for outcome in ("confirmed", "changed"):
            m.relabels.labels(outcome=outcome).inc(int(summary[f"relabel_{outcome}"]))
        m.samples.labels(kind="all").set(int(summary["samples"]))
        for kind in ("multi_annotator", "contested", "held"):
            m.samples.labels(kind=kind).set(int(summary[kind]))
        m.annotator_accuracy.clear()
        m.annotator_compared.clear()
        for name, acc in annotatorstats.accuracies(view, self.names).items():
            m.annotator_accuracy.labels(annotator=name).set(acc.accuracy)
            m.annotator_compared.labels(annotator=name).set(acc.compared)
        m.agreement.set(annotatorstats.agreement(view))

    def _asks(self, view: LabelView, classes: list[str], new_labels: int) -> list[askagain.Ask]:
        base = self.registry.data_file("base.npz")
        return askagain.asks_for(view, classes, new_labels, self.settings.quality,
                                 trusted=load_npz(base) if base is not None else None, seed=self.settings.policy.seed)

    def _publish(self, asks: list[askagain.Ask], current: str) -> None:
        """Review requests first, then the markers: a crash in between asks again, never holds unasked."""
        t = self.settings.topics
        send_until_acked(self.producer, [OutRecord(t.review_topic, a.sample.encode(), askagain.review_request(a, current))
                                         for a in asks], deadline_s=ANNOUNCE_DEADLINE_S, stop=self.stop)
        send_until_acked(self.producer, [OutRecord(t.labels_topic, a.sample.encode(), askagain.marker(a)) for a in asks],
                         deadline_s=ANNOUNCE_DEADLINE_S, stop=self.stop)
        for a in asks:
            self.metrics.quality.asked.labels(reason=a.reason).inc()
        self.progress(f"sent {len(asks)} stored labels back to review: "
                      + ", ".join(f"{sum(a.reason == r for a in asks)} {r}" for r in ("tiebreak", "relabel")))


def _state(view: LabelView, sid: str) -> tuple[str, int]:
    """A sample's label state: its id and the row number of its latest label."""
    return sid, max(n for n, _ in view.samples[sid].votes.values())
