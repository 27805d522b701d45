"""Prometheus metrics in a private CollectorRegistry (tests build a fresh one each).

Names follow the project conventions (docs/contracts.md): prefix ``triage_``, base units, ``_total`` counters, and label
values from closed sets (routes, reasons, stages, results, partitions).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Optional

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from triage.contracts.dlq import DLQ_STAGES

if TYPE_CHECKING:
    from triage.scoring.outlier import OutlierDetector  # ScorerMetrics.set_model
    from triage.scoring.routing import PolicySnapshot  # PolicyMetrics.update

REFUSAL_REASONS = ("sha256", "incompatible", "registry", "load", "path", "bad_event", "error", "runtime")
UNIT_BUCKETS = tuple(i / 20 for i in range(1, 21))
OUTLIER_BUCKETS = (0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096, 10000)


class LoopMetrics:
    """What every guarded consumer loop exports (each process has its own registry)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.records = Counter("triage_records_consumed", "Records polled and given an outcome, by loop.", ["loop"], registry=r)
        self.internal_errors = Counter(
            "triage_internal_errors", "Records whose handling raised unexpectedly (dead-lettered with stage "
            "internal, or skipped by readers without a consumer group), by loop.", ["loop"], registry=r)
        self.broker_errors = Counter("triage_broker_errors", "Poll/produce/commit failures, by operation.", ["operation"], registry=r)
        self.produce_retries = Counter("triage_produce_retries", "Output batches re-sent after a retriable failure.", registry=r)
        self.helper_restarts = Counter("triage_helper_restarts", "Helper threads restarted after a crash, by thread.", ["thread"], registry=r)
        self.blocked = Gauge(
            "triage_blocked", "1 while the loop holds a batch uncommitted because of a fault of the environment, by "
            "loop and reason (io|memory|broker|refused|model|dependency|handler).", ["loop", "reason"], registry=r)
        self.blocked_seconds = Gauge(
            "triage_blocked_seconds", "Seconds the loop has held its current batch (0 when not blocked); the process "
            "exits 1 past --blocked-exit-s.", ["loop"], registry=r)
        self.blocked_retries = Counter(
            "triage_blocked_retries", "Retries of a held batch (or of its outputs), by loop and reason.",
            ["loop", "reason"], registry=r)
        self.history_complete = Gauge(
            "triage_topic_history_complete", "1 when a topic this process rebuilds state from still holds every record "
            "ever written to it (unlimited retention, no compaction, nothing deleted), 0 when earlier records may be gone; "
            "checked at start.", ["topic"], registry=r)
        for operation in ("poll", "produce", "commit", "connection"):
            self.broker_errors.labels(operation=operation)


class ScorerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.loop = LoopMetrics(r)
        self.samples = Counter(
            "triage_samples", "Samples by route (predictions|review|dlq) and reason.",
            ["route", "reason"], registry=r,
        )
        self.dlq = Counter("triage_dlq_records", "Records dead-lettered, by stage.", ["stage"], registry=r)
        self.confidence = Histogram("triage_confidence", "Calibrated max probability.", buckets=UNIT_BUCKETS, registry=r)
        self.margin = Histogram("triage_margin", "Top-1 minus top-2 probability.", buckets=UNIT_BUCKETS, registry=r)
        self.entropy = Histogram("triage_entropy", "Normalized prediction entropy.", buckets=UNIT_BUCKETS, registry=r)
        self.outlier = Histogram("triage_outlier_score", "Outlier distance over threshold (>1 = outlier).", buckets=OUTLIER_BUCKETS, registry=r)
        self.inference = Histogram("triage_inference_seconds", "ONNX run time per batch.", buckets=SECONDS_BUCKETS, registry=r)
        self.batch_size = Histogram("triage_batch_size", "Records per polled batch.", buckets=BATCH_BUCKETS, registry=r)
        self.end_to_end = Histogram("triage_end_to_end_seconds", "Sample timestamp to output acknowledgement.", buckets=SECONDS_BUCKETS, registry=r)
        self.model_info = Gauge("triage_model_info", "The model being served (value 1).", ["version", "sha256"], registry=r)
        self.outlier_enabled = Gauge("triage_outlier_detection_enabled", "1 when outlier routing is on (reference data given).", registry=r)
        self.outlier_rows = Gauge("triage_outlier_reference_rows", "Reference rows whose out-of-fold distances set the serving "
                                  "model's outlier threshold (0 = detection off, -1 = unknown: detector from an older manifest).", registry=r)
        self.outlier_certified = Gauge("triage_outlier_threshold_certified", "1 when the outlier reference is big enough to certify "
                                       "the outlier quantile (rows >= q/(1-q)), 0 when it is not, -1 = detection off or unknown.", registry=r)
        self.lag = Gauge("triage_consumer_lag_records", "Records behind the high watermark, per input partition.", ["partition"], registry=r)
        self.lag_seconds = Gauge("triage_consumer_lag_seconds", "Age of the newest processed record, per input partition.", ["partition"], registry=r)
        self.swaps = Counter("triage_model_swaps", "Model swap attempts by result (success|refused).", ["result"], registry=r)
        self.refusals = Counter("triage_model_refusals", "Refused models by reason.", ["reason"], registry=r)
        self.last_swap = Gauge("triage_last_model_swap_timestamp_seconds", "Unix time of the last successful swap.", registry=r)
        self.produce_retries = self.loop.produce_retries
        self.broker_errors = self.loop.broker_errors
        self.ready = Gauge("triage_ready", "1 when the scorer is ready (model loaded, partitions assigned, broker reachable).", registry=r)
        self.review_annotators = Counter("triage_review_annotators", "Review requests routed, by how many annotators "
                                         "each asks for (human actions = sum of annotators x count).", ["annotators"],
                                         registry=r)
        self.batches = Counter("triage_batches", "Batches fully processed and committed.", registry=r)
        self.last_batch = Gauge("triage_last_batch_timestamp_seconds", "Unix time of the last committed batch.", registry=r)

        # Export every label value from the start, so rates and alerts see zeros, not gaps.
        for result in ("success", "refused"):
            self.swaps.labels(result=result)
        for reason in REFUSAL_REASONS:
            self.refusals.labels(reason=reason)
        for stage in DLQ_STAGES:
            self.dlq.labels(stage=stage)
        self.outlier_certified.set(-1)  # not 0 before the first model is set: 0 raises an alert

    def set_model(self, version: str, sha256: str, outlier_enabled: bool,
                  outlier: Optional["OutlierDetector"] = None) -> None:
        """The serving model's info and outlier gauges; ``outlier`` is its detector (None with
        ``outlier_enabled`` = enabled, detector unknown: reference rows and certified -1)."""
        self.model_info.clear()
        self.model_info.labels(version=version, sha256=sha256).set(1)
        self.outlier_enabled.set(1 if outlier_enabled else 0)
        rows = outlier.calibration_rows if outlier is not None else None
        sufficient = outlier.sufficient if outlier is not None else None
        self.outlier_rows.set(0 if not outlier_enabled else -1 if rows is None else rows)
        self.outlier_certified.set(-1 if sufficient is None else 1 if sufficient else 0)


class WorkerMetrics:
    """The parent of ``triage serve --workers N``: its own metrics, beside its workers' merged ones."""

    def __init__(self, registry: CollectorRegistry, workers: int) -> None:
        r = registry
        self.restarts = Counter("triage_worker_restarts", "Scorer worker processes restarted after they died, by "
                                "worker slot (serve --workers).", ["worker"], registry=r)
        self.configured = Gauge("triage_workers", "Scorer worker processes configured (serve --workers).", registry=r)
        self.running = Gauge("triage_workers_running", "Scorer worker processes running now.", registry=r)
        self.configured.set(workers)
        for slot in range(workers):
            self.restarts.labels(worker=str(slot))


def observe_many(hist: Histogram, values: np.ndarray) -> None:
    """Observe a whole batch into an unlabelled Histogram with one vectorized bucket count
    (per-value ``observe`` would be a Python loop on the hot path). NaNs are skipped."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if not len(values):
        return
    buckets = getattr(hist, "_buckets", None)
    bounds = getattr(hist, "_upper_bounds", None)
    if buckets is None or bounds is None:  # client internals changed: stay correct, be slower
        for v in values.tolist():
            hist.observe(v)
        return
    # Buckets are stored non-cumulative: value v lands in the first bound >= v.
    counts = np.bincount(np.searchsorted(np.asarray(bounds), values, side="left"), minlength=len(bounds))
    for i, c in enumerate(counts.tolist()):
        if c:
            buckets[i].inc(c)
    hist._sum.inc(float(values.sum()))


class RetrainMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.loop = LoopMetrics(r)
        self.store_repairs = Counter("triage_label_store_repairs", "Label-store lines dropped on read or repaired "
                                     "(torn tail after a crash, corrupt line), by reason.", ["reason"], registry=r)
        self.review_records = Counter("triage_retrain_review_records", "Review records read as the label join "
                                      "index, by kind (indexed|invalid).", ["kind"], registry=r)
        self.runs = Counter("triage_retrain_runs", "Retrain runs by outcome (promoted|rejected|skipped|failed).", ["outcome"], registry=r)
        self.duration = Histogram("triage_retrain_duration_seconds", "Wall time of a retrain run.",
                                  buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800), registry=r)
        self.folded = Counter("triage_labels_folded", "Labels folded into the persisted training set.", registry=r)
        self.rejected = Counter("triage_labels_rejected", "Labels not folded, by reason.", ["reason"], registry=r)
        self.pending = Gauge("triage_labels_pending", "Labels folded but not yet in the current model.", registry=r)
        self.eval_accuracy = Gauge("triage_eval_accuracy", "Held-out accuracy at the last evaluation.", ["model"], registry=r)
        self.last_run = Gauge("triage_last_retrain_timestamp_seconds", "Unix time of the last finished retrain run.", registry=r)
        for outcome in ("promoted", "rejected", "skipped", "failed"):
            self.runs.labels(outcome=outcome)
        for reason in ("unjoinable", "unknown_class", "invalid", "edge_case"):
            self.rejected.labels(reason=reason)
        for reason in ("torn_tail", "corrupt_line"):
            self.store_repairs.labels(reason=reason)
        for model in ("candidate", "current"):
            self.eval_accuracy.labels(model=model).set(float("nan"))
        self.quality = LabelQualityMetrics(r)


class LabelQualityMetrics:
    """Label quality in the retrain job (issue 24): the aggregate's counts, what went back to
    review, and each annotator's accuracy and throughput. Annotators are named as the tools
    name them; only the ``top`` most active keep their name, the rest are ``other``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.relabels = Counter("triage_relabels", "Labels held for a relabel that got a new human label, by outcome "
                                "(confirmed: the same class; changed).", ["outcome"], registry=r)
        self.asked = Counter("triage_labels_reasked", "Review requests the retrain job sent for stored labels, by reason "
                             "(relabel: cleanlab flagged it; tiebreak: no strict majority).", ["reason"], registry=r)
        self.samples = Gauge("triage_label_samples", "Labelled samples at the last retrain, by kind (all|multi_annotator|"
                             "contested|held).", ["kind"], registry=r)
        self.annotator_labels = Counter("triage_annotator_labels", "Labels ingested per annotator (throughput; the most "
                                        "active by name, the rest as other; anonymous for labels without one).",
                                        ["annotator"], registry=r)
        self.annotator_accuracy = Gauge("triage_annotator_accuracy", "Each annotator's estimated accuracy against the "
                                        "aggregate on samples labelled by more than one annotator (smoothed towards "
                                        "0.8 by 4 samples), at the last retrain.", ["annotator"], registry=r)
        self.annotator_compared = Gauge("triage_annotator_compared_samples", "Samples behind triage_annotator_accuracy "
                                        "(their labels compared with the aggregate).", ["annotator"], registry=r)
        self.agreement = Gauge("triage_annotator_agreement", "Inter-annotator agreement (Krippendorff's alpha, nominal) "
                               "on samples labelled by more than one annotator; NaN when undefined.", registry=r)
        self.accuracy_alert_below = Gauge("triage_annotator_accuracy_alert_below", "The accuracy TriageAnnotatorAccuracyLow "
                                          "fires below (quality.annotator_accuracy_alert_below).", registry=r)
        for outcome in ("confirmed", "changed"):
            self.relabels.labels(outcome=outcome)
        for reason in ("relabel", "tiebreak"):
            self.asked.labels(reason=reason)
        for kind in ("all", "multi_annotator", "contested", "held"):
            self.samples.labels(kind=kind).set(0)
        self.agreement.set(float("nan"))
class PolicyMetrics:
    """Routing-policy state (issue 8) in the scorer's registry. ``update`` takes the policy's
    ``snapshot()`` and its drained suppression counts after every batch."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.risk_alpha = Gauge("triage_risk_alpha", "Target error rate among auto-accepted predictions (risk policy).", registry=r)
        self.risk_threshold = Gauge("triage_risk_threshold", "Certified auto-accept uncertainty threshold (-1 = accept nothing); class=all or per class (Mondrian).", ["class"], registry=r)
        self.coverage = Gauge("triage_coverage_ratio", "Share auto-accepted: certified on held-out rows, or observed on the recent stream.", ["source"], registry=r)
        self.rate_target = Gauge("triage_review_rate_target", "Review-rate controller target (after the budget cap).", registry=r)
        self.rate_observed = Gauge("triage_review_rate_observed", "Share of recent samples sent to review (window of review_rate_window).", registry=r)
        self.suppressed = Counter("triage_review_suppressed", "Review requests published as provisional predictions instead, by reason.", ["reason"], registry=r)
        self.gate_open = Gauge("triage_gate_open", "1 when the acceptable-performance gate lets predictions be auto-accepted.", registry=r)
        self.ece = Gauge("triage_calibration_ece", "Expected calibration error on held-out rows, before/after calibration.", ["stage"], registry=r)
        self.budget_conflict = Gauge("triage_budget_conflict", "1 when the reviews the risk/outlier rules require exceed the annotation budget.", registry=r)
        self.budget_rate = Gauge("triage_budget_max_review_rate", "Largest review rate the annotation budget allows (-1 = unconstrained/unknown).", registry=r)
        self.backlog = Gauge("triage_review_backlog", "Labels the review requests ask for minus labels received (-1 = not measured).", registry=r)
        for reason in ("near_duplicate", "class_quota"):
            self.suppressed.labels(reason=reason)
        self._per_class = 0  # per-class risk threshold labels currently exported

    def update(self, snap: PolicySnapshot, suppressed: Mapping[str, int]) -> None:
        def put(g: Gauge, v: Optional[float], default: float) -> None:
            g.set(default if v is None else float(v))

        put(self.risk_alpha, snap.risk_alpha, 0.0)
        if snap.risk_threshold is not None:  # set only by a rule that certifies thresholds
            per_class = snap.risk_thresholds or ()
            if len(per_class) != self._per_class:  # another class set: drop stale class labels
                self.risk_threshold.clear()
                self._per_class = len(per_class)
            self.risk_threshold.labels(**{"class": "all"}).set(snap.risk_threshold)
            for c, t in enumerate(per_class):
                self.risk_threshold.labels(**{"class": str(c)}).set(t)
        if snap.coverage_holdout is not None:
            self.coverage.labels(source="holdout").set(snap.coverage_holdout)
        self.coverage.labels(source="stream").set(snap.coverage_stream)
        put(self.rate_target, snap.review_rate_target, 0.0)
        self.rate_observed.set(snap.review_rate_observed)
        self.gate_open.set(1 if snap.gate_open else 0)
        for stage, ece in (("before", snap.ece_before), ("after", snap.ece_after)):
            if ece is not None:
                self.ece.labels(stage=stage).set(ece)
        self.budget_conflict.set(1 if snap.budget_conflict else 0)
        put(self.budget_rate, snap.budget_max_rate, -1.0)
        put(self.backlog, snap.backlog, -1.0)
        for reason, n in suppressed.items():
            self.suppressed.labels(reason=reason).inc(n)


class AuditMetrics:
    """Realized accuracy of auto-accepted predictions per model version (audit consumer)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.estimate = Gauge("triage_accepted_accuracy_estimate", "Accuracy of auto-accepted predictions, from labelled audit samples.", ["model_version"], registry=r)
        self.lower = Gauge("triage_accepted_accuracy_lower", "Lower end of the accuracy confidence interval.", ["model_version"], registry=r)
        self.upper = Gauge("triage_accepted_accuracy_upper", "Upper end of the accuracy confidence interval.", ["model_version"], registry=r)
        self.samples = Gauge("triage_accepted_accuracy_samples", "Labelled audit samples behind the estimate.", ["model_version"], registry=r)
        self.recent_upper = Gauge("triage_accepted_accuracy_recent_upper", "Upper end of the accuracy confidence interval over the version's last --audit-recent-labels labelled audit samples.", ["model_version"], registry=r)
        self.recent_samples = Gauge("triage_accepted_accuracy_recent_samples", "Labelled audit samples behind triage_accepted_accuracy_recent_upper.", ["model_version"], registry=r)
        self.risk_alpha = Gauge("triage_risk_alpha", "Target error rate among auto-accepted predictions (for alert rules next to the estimate).", registry=r)
        self.records = Counter("triage_audit_records", "Records read by the audit consumer, by kind (audit|label|other|invalid).", ["kind"], registry=r)
        # Live re-certification (triage.policies.live_risk), per model version.
        self.live_upper = Gauge("triage_risk_live_upper_bound", "Exact (1 - delta) upper bound of the error rate among auto-accepted predictions at the deployed threshold, from labelled audit samples (1 with none).", ["version"], registry=r)
        self.live_samples = Gauge("triage_risk_live_samples", "Labelled audit samples behind triage_risk_live_upper_bound.", ["version"], registry=r)
        self.live_required = Gauge("triage_risk_live_required_samples", "Audit samples the live bound needs before an upper bound above alpha counts as a breach (--risk-live-min-rows).", registry=r)
        self.live_threshold = Gauge("triage_risk_live_threshold", "Risk threshold in force for the version: the manifest's, or the live control's last change (-1 = accept nothing).", ["version"], registry=r)
        self.live_certified = Gauge("triage_risk_live_certified_threshold", "Largest threshold the live audit labels certify (-1 = none).", ["version"], registry=r)
        self.live_actions = Counter("triage_risk_live_actions", "Live-control decisions: tighten, loosen, refuse_loosen (too few rows to loosen).", ["action"], registry=r)
        self.live_write_errors = Counter("triage_risk_live_write_errors", "Live threshold changes the registry refused to store (retried; the scorers keep the old threshold meanwhile).", registry=r)
        for action in ("tighten", "loosen", "refuse_loosen"):
            self.live_actions.labels(action=action)


class MonitorMetrics:
    """``triage monitor``: label-free accuracy estimate per version, drift detectors, requests."""

    RECORD_KINDS = ("prediction", "review", "audit_copy", "label", "invalid", "replayed")

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.loop = LoopMetrics(r)
        self.estimate = Gauge("triage_estimated_accuracy", "Accuracy estimated from the calibrated confidence of the version's last --monitor-window samples, the auto-accepted ones corrected by triage_estimated_accuracy_correction.", ["model_version"], registry=r)
        self.lower = Gauge("triage_estimated_accuracy_lower", "Lower end of the estimate's band (--estimate-level): its sampling error and the correction's.", ["model_version"], registry=r)
        self.upper = Gauge("triage_estimated_accuracy_upper", "Upper end of the estimate's sampling-error band.", ["model_version"], registry=r)
        self.samples = Gauge("triage_estimated_accuracy_samples", "Samples in the window behind triage_estimated_accuracy.", ["model_version"], registry=r)
        self.labelled = Gauge("triage_estimated_accuracy_labelled", "Samples in that window whose label came in (reviewed or audited): their realized correctness replaces the expected one.", ["model_version"], registry=r)
        self.correction = Gauge("triage_estimated_accuracy_correction", "Shift applied to the estimate's auto-accepted samples: the bias of their confidence on the version's last --audit-recent-labels labelled audit samples, shrunk (0 below 100 labels).", ["model_version"], registry=r)
        self.correction_labels = Gauge("triage_estimated_accuracy_correction_labels", "Labelled audit samples behind triage_estimated_accuracy_correction.", ["model_version"], registry=r)
        self.floor = Gauge("triage_accuracy_floor", "The acceptable accuracy (--accuracy-floor), when set.", registry=r)
        self.accepted = Gauge("triage_estimated_accepted_accuracy", "Label-free accuracy estimate of the auto-accepted predictions alone (what the audit slice measures with labels).", ["model_version"], registry=r)
        self.accepted_lower = Gauge("triage_estimated_accepted_accuracy_lower", "Lower end of triage_estimated_accepted_accuracy's band.", ["model_version"], registry=r)
        self.accepted_upper = Gauge("triage_estimated_accepted_accuracy_upper", "Upper end of triage_estimated_accepted_accuracy's band.", ["model_version"], registry=r)
        self.statistic = Gauge("triage_drift_statistic", "CUSUM statistic of a drift detector of the newest version (an alarm when it exceeds triage_drift_threshold).", ["signal"], registry=r)
        self.threshold = Gauge("triage_drift_threshold", "Threshold of a drift detector, from --drift-ert-samples.", ["signal"], registry=r)
        self.alarms = Counter("triage_drift_alarms", "Drift alarms, by signal (confidence, margin, outlier, class:<label>).", ["signal"], registry=r)
        self.reference = Gauge("triage_drift_reference_samples", "Samples of the version's drift reference collected so far (detectors run once it holds --drift-reference-samples).", ["model_version"], registry=r)
        self.records = Counter("triage_monitor_records", "Records read by the monitor, by kind (prediction|review|audit_copy|label|invalid|replayed).", ["kind"], registry=r)
        self.requests = Counter("triage_retrain_requests", "Retrain requests published, by reason (drift|estimated_accuracy).", ["reason"], registry=r)
        self.checkpoint_age = Gauge("triage_monitor_checkpoint_age_seconds", "Seconds since the monitor's last checkpoint was written.", registry=r)
        for kind in self.RECORD_KINDS:
            self.records.labels(kind=kind)
        for reason in ("drift", "estimated_accuracy"):
            self.requests.labels(reason=reason)


class LabelStudioMetrics:
    """The Label Studio bridge: tasks created, labels published by source, reconcile lag, errors."""

    INVALID_REASONS = ("unknown_choice", "no_sample_id", "bad_webhook", "unauthorized_webhook", "bad_review")
    WEBHOOK_REFUSALS = ("unauthorized", "too_large", "not_json", "too_deep", "bad_shape")

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.loop = LoopMetrics(r)
        self.tasks_created = Counter("triage_labelstudio_tasks_created", "Review requests turned into Label Studio tasks.", registry=r)
        self.tasks_existing = Counter("triage_labelstudio_tasks_existing", "Review requests whose task already existed (redelivery).", registry=r)
        self.overlap_raised = Counter("triage_labelstudio_overlap_raised", "Tasks whose overlap (people Label Studio serves them "
                                      "to) was raised for a request asking for more than one annotator, or one more.", registry=r)
        self.labels = Counter("triage_labelstudio_labels_published", "Labels published to the labels topic, by source "
                              "(webhook|reconcile|repair: at start-up, answers of deleted annotations that an earlier "
                              "version left standing) and kind (label|undo).", ["source", "kind"], registry=r)
        self.open_tasks = Gauge("triage_labelstudio_open_tasks", "Tasks created by the bridge with fewer published annotations than their overlap (still waiting for someone).", registry=r)
        self.reconcile_lag = Gauge("triage_labelstudio_reconcile_lag_seconds", "Seconds since the last completed reconcile.", registry=r)
        self.errors = Counter("triage_labelstudio_errors", "Failed Label Studio calls, by operation.", ["operation"], registry=r)
        self.invalid = Counter("triage_labelstudio_invalid", "Inputs the bridge could not use, by reason.", ["reason"], registry=r)
        self.ready = Gauge("triage_ready", "1 when Label Studio and the broker are reachable and the review loop holds no batch.", registry=r)
        self.webhooks_refused = Counter("triage_labelstudio_webhooks_refused", "Webhook bodies answered 4xx, by reason "
                                        "(unauthorized|too_large|not_json|too_deep|bad_shape).", ["reason"], registry=r)
        self.reconcile_calls = Counter("triage_labelstudio_reconcile_requests", "Label Studio requests made by reconciles, "
                                       "by kind (full|incremental).", ["kind"], registry=r)
        self.tasks_confirmed = Counter("triage_labelstudio_unlisted_tasks", "Tasks with published labels missing from a "
                                       "full listing or named by a TASKS_DELETED webhook, by what a direct fetch said "
                                       "(deleted|present).", ["outcome"], registry=r)
        for reason in self.WEBHOOK_REFUSALS:
            self.webhooks_refused.labels(reason=reason)
        for kind in ("full", "incremental"):
            self.reconcile_calls.labels(kind=kind)
        for outcome in ("deleted", "present"):
            self.tasks_confirmed.labels(outcome=outcome)
        for source in ("webhook", "reconcile", "repair"):
            for kind in ("label", "undo"):
                self.labels.labels(source=source, kind=kind)
        for reason in self.INVALID_REASONS:
            self.invalid.labels(reason=reason)
        for operation in ("tasks", "create_tasks", "project", "users"):
            self.errors.labels(operation=operation)
