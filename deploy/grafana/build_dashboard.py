"""Build dashboards/triage.json (the provisioned Grafana dashboard).

Edit the panels here and run ``python deploy/grafana/build_dashboard.py``; tests/deploy checks
the committed JSON is current and that every metric it queries is exported.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards" / "triage.json"
DS = {"type": "prometheus", "uid": "triage-prometheus"}
panels = []
pid = [0]
def nid():
    pid[0] += 1
    return pid[0]
def row(title, y):
    panels.append({"type": "row", "title": title, "id": nid(), "collapsed": False,
                   "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
def tgt(expr, legend="", ref="A", **kw):
    t = {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, "range": True}
    t.update(kw)
    return t
def ts(title, targets, x, y, w=12, h=8, unit="short", desc="", stack=False, extra_fc=None):
    fc = {"defaults": {"unit": unit, "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
          "showPoints": "never", "stacking": {"mode": "normal" if stack else "none", "group": "A"}}},
          "overrides": []}
    if extra_fc:
        fc["defaults"].update(extra_fc)
    panels.append({"type": "timeseries", "title": title, "description": desc, "id": nid(), "datasource": DS,
                   "gridPos": {"h": h, "w": w, "x": x, "y": y}, "targets": targets, "fieldConfig": fc,
                   "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                               "tooltip": {"mode": "multi", "sort": "desc"}}})
def stat(title, expr, x, y, w=4, h=4, unit="short", desc="", thresholds=None, legend=""):
    panels.append({"type": "stat", "title": title, "description": desc, "id": nid(), "datasource": DS,
                   "gridPos": {"h": h, "w": w, "x": x, "y": y},
                   "targets": [tgt(expr, legend, instant=True)],
                   "fieldConfig": {"defaults": {"unit": unit, "thresholds": thresholds or
                       {"mode": "absolute", "steps": [{"color": "green", "value": None}]}}, "overrides": []},
                   "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                               "colorMode": "value", "graphMode": "area", "textMode": "auto"}})
RI = "$__rate_interval"
y = 0
row("Service health", y); y += 1
red_below = lambda v: {"mode": "absolute", "steps": [{"color": "red", "value": None}, {"color": "green", "value": v}]}
stat("Scorers up", 'sum(up{job="triage-scorer"})', 0, y, thresholds=red_below(1),
     desc="Scorer replicas Prometheus scrapes successfully.")
stat("Scorers ready", "sum(triage_ready)", 4, y, thresholds=red_below(1),
     desc="Replicas whose /readyz is green: model loaded, partitions assigned, broker reachable.")
stat("Samples / s", f"sum(rate(triage_samples_total[{RI}]))", 8, y, unit="ops")
stat("Review share", f'sum(rate(triage_samples_total{{route="review"}}[{RI}])) / sum(rate(triage_samples_total{{route=~"predictions|review"}}[{RI}]))',
     12, y, unit="percentunit", desc="Share of scored samples routed to human review.")
stat("DLQ / s", f"sum(rate(triage_dlq_records_total[{RI}]))", 16, y, unit="ops",
     thresholds={"mode": "absolute", "steps": [{"color": "green", "value": None}, {"color": "orange", "value": 0.001}]})
stat("Outlier detection", "min(triage_outlier_detection_enabled)", 20, y,
     thresholds=red_below(1), desc="1 = every replica has reference data and routes outliers.")
y += 4
row("Confidence and routing", y); y += 1
panels.append({"type": "heatmap", "title": "Confidence distribution", "id": nid(), "datasource": DS,
    "description": "Calibrated max probability of every scored sample (triage_confidence histogram), per interval.",
    "gridPos": {"h": 9, "w": 12, "x": 0, "y": y},
    "targets": [tgt(f"sum by (le) (increase(triage_confidence_bucket[{RI}]))", "{{le}}", format="heatmap")],
    "options": {"calculate": False, "yAxis": {"axisPlacement": "left", "unit": "percentunit"},
                "cellGap": 1, "color": {"mode": "scheme", "scheme": "Spectral", "steps": 64, "exponent": 0.5},
                "rowsFrame": {"layout": "auto"}, "tooltip": {"show": True, "yHistogram": True},
                "legend": {"show": True}},
    "fieldConfig": {"defaults": {}, "overrides": []}})
ts("Route rates by reason", [tgt(f"sum by (route, reason) (rate(triage_samples_total[{RI}]))", "{{route}} / {{reason}}")],
   12, y, h=9, unit="ops", stack=True, desc="Samples per second by route (predictions, review, dlq) and reason.")
y += 9
ts("Mean confidence vs 1-day baseline", [
    tgt(f"sum(rate(triage_confidence_sum[{RI}])) / sum(rate(triage_confidence_count[{RI}]))", "mean confidence"),
    tgt("sum(rate(triage_confidence_sum[1d])) / sum(rate(triage_confidence_count[1d]))", "1-day baseline", "B"),
  ], 0, y, unit="percentunit", desc="TriageConfidenceDrop fires when the 30m mean is 0.10 below the baseline.")
ts("Outlier share and outlier score p99", [
    tgt(f'sum(rate(triage_samples_total{{reason="outlier"}}[{RI}])) / sum(rate(triage_samples_total{{route=~"predictions|review"}}[{RI}]))', "outlier share"),
    tgt(f"histogram_quantile(0.99, sum by (le) (rate(triage_outlier_score_bucket[{RI}])))", "outlier score p99 (>1 = outlier)", "B"),
  ], 12, y, unit="short")
y += 8
ts("Uncertainty: margin and entropy (median)", [
    tgt(f"histogram_quantile(0.5, sum by (le) (rate(triage_margin_bucket[{RI}])))", "margin p50"),
    tgt(f"histogram_quantile(0.5, sum by (le) (rate(triage_entropy_bucket[{RI}])))", "entropy p50", "B"),
  ], 0, y, unit="percentunit")
ts("Review rate: observed vs target (budget controller)", [
    tgt("max(triage_review_rate_observed)", "observed"),
    tgt("max(triage_review_rate_target)", "target", "B"),
    tgt("max(triage_coverage_ratio)", "coverage (auto-accepted share)", "C"),
    tgt(f"sum by (reason) (rate(triage_review_suppressed_total[{RI}]))", "suppressed: {{reason}}", "D"),
  ], 12, y, unit="percentunit")
y += 8
row("Review queue and labels", y); y += 1
ts("Review queue and labels flow", [
    tgt(f'sum by (reason) (rate(triage_samples_total{{route="review"}}[{RI}]))', "to review: {{reason}}"),
    tgt(f"sum(rate(triage_labels_folded_total[{RI}]))", "labels folded", "B"),
    tgt(f"sum by (reason) (rate(triage_labels_rejected_total[{RI}]))", "labels rejected: {{reason}}", "C"),
  ], 0, y, unit="ops", desc="Review requests produced vs labels coming back and folded into training.")
ts("Labels pending (not yet in a promoted model)", [tgt("sum(triage_labels_pending)", "labels pending")],
   12, y, unit="short", desc="TriageLabelsPilingUpNoSwap fires above 500 with no swap for 6 hours.")
y += 8
row("Human review (Label Studio) and audit", y); y += 1
LABELS = 'triage_labelstudio_labels_published_total{kind="label"}'
stat("Bridge ready", 'max(triage_ready{job="triage-label-studio"})', 0, y, thresholds=red_below(1),
     desc="The Label Studio bridge's /readyz: Label Studio and the broker reachable. One replica by design.")
stat("Open tasks", "sum(triage_labelstudio_open_tasks)", 4, y,
     desc="Tasks created in Label Studio without a published label yet: the annotators' backlog.")
stat("Labels / min", f"sum(rate({LABELS}[5m])) * 60", 8, y,
     desc="Annotations published to the labels topic per minute (webhook + reconcile).")
stat("Since last reconcile", "max(triage_labelstudio_reconcile_lag_seconds)", 12, y, unit="s",
     thresholds={"mode": "absolute", "steps": [{"color": "green", "value": None}, {"color": "orange", "value": 120}]},
     desc="Seconds since the bridge last finished re-reading every annotation (catches missed webhooks); "
          "should stay near --reconcile-s (30 s in the stack).")
stat("Audit up", 'sum(up{job="triage-audit"})', 16, y, thresholds=red_below(1),
     desc="The audit consumer, the only exporter of the accepted-accuracy estimate.")
stat("Audit labels", "sum(triage_accepted_accuracy_samples)", 20, y,
     desc="Labelled audit samples behind the accepted-accuracy estimate, all model versions.")
y += 4
ts("Review queue: requests vs Label Studio tasks", [
    tgt(f'sum(rate(triage_samples_total{{route="review"}}[{RI}]))', "review requests (scorer)"),
    tgt(f"sum(rate(triage_labelstudio_tasks_created_total[{RI}]))", "tasks created", "B"),
    tgt(f"sum(rate(triage_labelstudio_tasks_existing_total[{RI}]))", "task already existed (redelivery)", "C"),
  ], 0, y, unit="ops", desc="Every review request should become one task; 'already existed' counts redelivered "
                            "requests the bridge recognised (no duplicate task).")
ts("Labels published by source", [
    tgt(f"sum by (source, kind) (rate(triage_labelstudio_labels_published_total[{RI}])) * 60", "{{source}} / {{kind}}"),
  ], 12, y, unit="short", stack=True,
   desc="Labels per minute from the webhook vs the reconcile (a growing reconcile share means webhooks are lost); "
        "undo = an annotation deleted in Label Studio.")
y += 8
ts("Open tasks (annotation backlog)", [
    tgt("sum(triage_labelstudio_open_tasks)", "open tasks (bridge)"),
    tgt("max(triage_review_backlog) >= 0", "review backlog (scorer: requests - labels)", "B"),
  ], 0, y, w=8, unit="short", desc="Tasks waiting for an annotator. Growing = annotators cannot keep up: add "
                                   "annotators, lower the review rate or set an annotation budget.")
ts("Annotator throughput (labels/min)", [
    tgt(f"sum(rate({LABELS}[{RI}])) * 60", "labels/min"),
    tgt(f'sum(rate(triage_labelstudio_labels_published_total{{kind="undo"}}[{RI}])) * 60', "undos/min", "B"),
    tgt(f'sum(rate(triage_samples_total{{route="review"}}[{RI}])) * 60', "review requests/min", "C"),
  ], 8, y, w=8, unit="short", desc="Labels coming back per minute vs review requests going out.")
ts("Bridge errors and invalid records", [
    tgt(f"sum by (operation) (rate(triage_labelstudio_errors_total[{RI}]))", "error: {{operation}}"),
    tgt(f"sum by (reason) (rate(triage_labelstudio_invalid_total[{RI}]))", "invalid: {{reason}}", "B"),
    tgt(f'sum(rate(triage_internal_errors_total{{loop="label-studio"}}[{RI}]))', "internal errors", "C"),
    tgt(f'sum(rate(triage_records_consumed_total{{loop="label-studio"}}[{RI}]))', "review records consumed", "D"),
  ], 16, y, w=8, unit="ops")
y += 8
ts("Audit: accepted accuracy with its 95% interval vs risk target", [
    tgt("max by (model_version) (triage_accepted_accuracy_estimate)", "estimate {{model_version}}"),
    tgt("max by (model_version) (triage_accepted_accuracy_lower)", "lower {{model_version}}", "B"),
    tgt("max by (model_version) (triage_accepted_accuracy_upper)", "upper {{model_version}}", "C"),
    tgt("1 - max(triage_risk_alpha)", "target (1 - alpha)", "D"),
  ], 0, y, w=16, unit="percentunit",
   desc="Realized accuracy of auto-accepted predictions per model version, from the random audit slice labelled "
        "by humans (triage audit), with its Clopper-Pearson interval. TriageAcceptedAccuracyBelowTarget fires when "
        "the estimate is under the target for 30m, ...Confident when even the upper bound is, for 15m.")
ts("Audit labels behind the estimate", [
    tgt("max by (model_version) (triage_accepted_accuracy_samples)", "{{model_version}}"),
    tgt(f"sum by (kind) (rate(triage_audit_records_total[{RI}]))", "records/s: {{kind}}", "B"),
  ], 16, y, w=8, unit="short", desc="A wide interval means few labelled audit samples: raise --audit-rate or "
                                    "label the audit tasks first.")
y += 8
row("Monitoring without labels (triage monitor)", y); y += 1
ts("Estimated accuracy with its band vs realized (audit)", [
    tgt("max by (model_version) (triage_estimated_accepted_accuracy)", "estimate, accepted {{model_version}}"),
    tgt("max by (model_version) (triage_estimated_accepted_accuracy_lower)", "band low {{model_version}}", "B"),
    tgt("max by (model_version) (triage_estimated_accepted_accuracy_upper)", "band high {{model_version}}", "C"),
    tgt("max by (model_version) (triage_accepted_accuracy_estimate)", "realized (audit) {{model_version}}", "D"),
    tgt("max by (model_version) (triage_estimated_accuracy)", "estimate, all scored {{model_version}}", "E"),
    tgt("max(triage_accuracy_floor)", "floor (--accuracy-floor)", "F"),
  ], 0, y, w=12, unit="percentunit",
   desc="From calibrated probabilities, per version, over the last --monitor-window samples; all scored: its "
        "accepted samples corrected by the bias of the last --audit-recent-labels audit labels "
        "(triage_estimated_accuracy_correction), accepted: label-free. Realized (audit) below the accepted band: "
        "concept drift or calibration decay (TriageEstimateDisagreesWithAudit).")
ts("Drift statistics against their thresholds", [
    tgt("max by (signal) (triage_drift_statistic)", "{{signal}}"),
    tgt("max(triage_drift_threshold)", "threshold", "B"),
  ], 12, y, w=8, unit="short",
   desc="CUSUM statistics of the newest version's detectors; an alarm when one crosses the threshold, set from "
        "--drift-ert-samples (expected samples between false alarms).")
stat("Drift alarms (1h)", "sum(increase(triage_drift_alarms_total[1h]))", 20, y, w=4,
     thresholds={"mode": "absolute", "steps": [{"color": "green", "value": None}, {"color": "orange", "value": 1}]},
     desc="Alarms of every detector in the last hour; each one published a retrain request (TriageDriftDetected).")
stat("Retrain requests (1h)", "sum(increase(triage_retrain_requests_total[1h]))", 20, y + 4, w=4,
     desc="Requests the monitor published to triage.retrain-requests in the last hour.")
y += 8
row("Models", y); y += 1
panels.append({"type": "state-timeline", "title": "Model version timeline", "id": nid(), "datasource": DS,
    "description": "One row per replica and version: when each version was served (triage_model_info); swap annotations mark every successful or refused swap.",
    "gridPos": {"h": 7, "w": 24, "x": 0, "y": y},
    "targets": [tgt("max by (instance, version) (triage_model_info)", "{{instance}} {{version}}")],
    "options": {"showValue": "auto", "mergeValues": True, "rowHeight": 0.8, "alignValue": "left",
                "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False}},
    "fieldConfig": {"defaults": {"color": {"mode": "palette-classic"},
        "mappings": [{"type": "value", "options": {"1": {"text": "serving", "index": 0}}}]}, "overrides": []}})
y += 7
ts("Model swaps and refusals", [
    tgt(f"sum by (result) (increase(triage_model_swaps_total[{RI}]))", "swaps: {{result}}"),
    tgt(f"sum by (reason) (increase(triage_model_refusals_total[{RI}]))", "refused: {{reason}}", "B"),
  ], 0, y, w=8, unit="short")
ts("Retrain runs by outcome", [
    tgt(f"sum by (outcome) (increase(triage_retrain_runs_total[{RI}]))", "{{outcome}}"),
    tgt("histogram_quantile(0.9, sum by (le) (rate(triage_retrain_duration_seconds_bucket[1h])))", "duration p90", "B"),
  ], 8, y, w=8, unit="short")
ts("Holdout accuracy: candidate vs current", [tgt("max by (model) (triage_eval_accuracy)", "{{model}}")],
   16, y, w=8, unit="percentunit")
y += 8
ts("Calibration and gate", [
    tgt("max by (stage) (triage_calibration_ece)", "ECE {{stage}}"),
    tgt("max(triage_risk_threshold)", "risk threshold", "B"),
    tgt("min(triage_gate_open)", "gate open", "C"),
    tgt("max(triage_budget_conflict)", "budget conflict", "D"),
  ], 0, y, w=24, unit="short")
y += 8
row("Latency and throughput", y); y += 1
ts("Inference latency (per batch)", [
    tgt(f"histogram_quantile(0.5, sum by (le) (rate(triage_inference_seconds_bucket[{RI}])))", "p50"),
    tgt(f"histogram_quantile(0.99, sum by (le) (rate(triage_inference_seconds_bucket[{RI}])))", "p99", "B"),
  ], 0, y, w=8, unit="s")
ts("End-to-end latency (sample ts to output ack)", [
    tgt(f"histogram_quantile(0.5, sum by (le) (rate(triage_end_to_end_seconds_bucket[{RI}])))", "p50"),
    tgt(f"histogram_quantile(0.99, sum by (le) (rate(triage_end_to_end_seconds_bucket[{RI}])))", "p99", "B"),
  ], 8, y, w=8, unit="s")
ts("Batches", [
    tgt(f"sum by (instance) (rate(triage_batches_total[{RI}]))", "batches/s {{instance}}"),
    tgt(f"sum(rate(triage_batch_size_sum[{RI}])) / sum(rate(triage_batch_size_count[{RI}]))", "mean batch size", "B"),
    tgt("time() - max by (instance) (triage_last_batch_timestamp_seconds)", "s since last batch {{instance}}", "C"),
  ], 16, y, w=8, unit="short")
y += 8
row("Kafka", y); y += 1
ts("Consumer lag per partition (records)", [tgt("max by (partition) (triage_consumer_lag_records)", "partition {{partition}}")],
   0, y, w=8, unit="short")
ts("Consumer lag per partition (seconds)", [tgt("max by (partition) (triage_consumer_lag_seconds)", "partition {{partition}}")],
   8, y, w=8, unit="s")
ts("DLQ by stage", [tgt(f"sum by (stage) (rate(triage_dlq_records_total[{RI}]))", "{{stage}}")],
   16, y, w=8, unit="ops", stack=True, desc="Dead-lettered records per second by failure stage.")
y += 8
ts("Broker errors and produce retries", [
    tgt(f"sum by (operation) (rate(triage_broker_errors_total[{RI}]))", "errors: {{operation}}"),
    tgt(f"sum(rate(triage_produce_retries_total[{RI}]))", "produce retries", "B"),
  ], 0, y, w=24, unit="ops")

dash = {
  "uid": "triage-overview", "title": "triage", "tags": ["triage"], "timezone": "browser",
  "schemaVersion": 39, "version": 1, "editable": False, "graphTooltip": 1, "refresh": "30s",
  "time": {"from": "now-6h", "to": "now"},
  "annotations": {"list": [
    {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
     "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"},
    {"name": "Model swaps", "datasource": DS, "enable": True, "iconColor": "green",
     "expr": 'sum by (instance) (changes(triage_model_swaps_total{result="success"}[2m])) > 0',
     "step": "1m", "titleFormat": "model swap", "textFormat": "{{instance}} swapped its model",
     "tagKeys": "instance", "useValueForTime": False},
    {"name": "Swap refusals", "datasource": DS, "enable": True, "iconColor": "red",
     "expr": 'sum by (instance) (changes(triage_model_swaps_total{result="refused"}[2m])) > 0',
     "step": "1m", "titleFormat": "swap refused", "textFormat": "{{instance}} refused a model",
     "tagKeys": "instance", "useValueForTime": False},
    {"name": "Retrain promotions", "datasource": DS, "enable": True, "iconColor": "blue",
     "expr": 'sum(changes(triage_retrain_runs_total{outcome="promoted"}[2m])) > 0',
     "step": "1m", "titleFormat": "candidate promoted", "textFormat": "", "tagKeys": "", "useValueForTime": False},
  ]},
  "templating": {"list": []},
  "panels": panels,
}
def render() -> str:
    return json.dumps(dash, indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT} ({len(panels)} panels)")
