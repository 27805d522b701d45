"""The Grafana provisioning and dashboard: valid, current, and covering the promised panels."""

from __future__ import annotations

import importlib.util
import json
from typing import Any

import yaml

from tests.deploy.conftest import DEPLOY

GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "triage.json"


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def test_dashboard_json_is_current_with_its_builder() -> None:
    spec = importlib.util.spec_from_file_location("build_dashboard", GRAFANA / "build_dashboard.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == DASHBOARD.read_text(), "run python deploy/grafana/build_dashboard.py"


def test_every_query_uses_the_provisioned_datasource() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = ds["datasources"][0]["uid"]
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"  # the compose service
    for panel in _panels():
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid and target["expr"].strip()
    for annotation in _dashboard()["annotations"]["list"][1:]:
        assert annotation["datasource"]["uid"] == uid and annotation["expr"]


def test_provider_loads_the_directory_compose_mounts() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "triage.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_required_panels_exist() -> None:
    by_title = {p["title"]: p for p in _panels()}
    heatmap = by_title["Confidence distribution"]
    assert heatmap["type"] == "heatmap" and "triage_confidence_bucket" in heatmap["targets"][0]["expr"]
    assert "by (route, reason)" in by_title["Route rates by reason"]["targets"][0]["expr"]
    flow = " ".join(t["expr"] for t in by_title["Review queue and labels flow"]["targets"])
    assert 'route="review"' in flow and "triage_labels_folded_total" in flow
    assert by_title["Model version timeline"]["type"] == "state-timeline"
    assert "triage_model_info" in by_title["Model version timeline"]["targets"][0]["expr"]
    annotations = {a["name"]: a["expr"] for a in _dashboard()["annotations"]["list"][1:]}
    assert 'result="success"' in annotations["Model swaps"]
    assert "triage_inference_seconds_bucket" in by_title["Inference latency (per batch)"]["targets"][0]["expr"]
    assert "triage_end_to_end_seconds_bucket" in by_title["End-to-end latency (sample ts to output ack)"]["targets"][0]["expr"]
    assert "by (partition)" in by_title["Consumer lag per partition (records)"]["targets"][0]["expr"]
    assert "by (partition)" in by_title["Consumer lag per partition (seconds)"]["targets"][0]["expr"]
    assert "by (stage)" in by_title["DLQ by stage"]["targets"][0]["expr"]


def test_panel_ids_are_unique_and_layout_fits() -> None:
    panels = _dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        pos = p["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, p["title"]


def test_human_review_and_audit_panels() -> None:
    by_title = {p["title"]: p for p in _panels()}
    exprs = lambda title: " ".join(t["expr"] for t in by_title[title]["targets"])  # noqa: E731
    queue = exprs("Review queue: requests vs Label Studio tasks")
    assert "triage_labelstudio_tasks_created_total" in queue and 'route="review"' in queue
    assert "by (source, kind)" in exprs("Labels published by source")
    assert "triage_labelstudio_labels_published_total" in exprs("Labels published by source")
    assert "triage_labelstudio_open_tasks" in exprs("Open tasks (annotation backlog)")
    throughput = by_title["Annotator throughput (labels/min)"]["targets"][0]["expr"]
    assert 'kind="label"' in throughput and throughput.endswith("* 60")
    audit = exprs("Audit: accepted accuracy with its 95% interval vs risk target")
    for name in ("triage_accepted_accuracy_estimate", "triage_accepted_accuracy_lower",
                 "triage_accepted_accuracy_upper", "triage_risk_alpha"):
        assert name in audit
    assert "TriageAcceptedAccuracyBelowTarget" in by_title["Audit: accepted accuracy with its 95% interval vs risk target"]["description"]
    assert "triage_accepted_accuracy_samples" in exprs("Audit labels behind the estimate")
    assert "triage_labelstudio_reconcile_lag_seconds" in exprs("Since last reconcile")


def test_job_selectors_name_shipped_prometheus_jobs() -> None:
    """A panel filtering on job= must name a job deploy/prometheus/prometheus.yml defines."""
    import re

    jobs = {j["job_name"] for j in yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]}
    used = {m for p in _panels() for t in p["targets"] for m in re.findall(r'job="([^"]+)"', t["expr"])}
    assert used and used <= jobs, used - jobs
