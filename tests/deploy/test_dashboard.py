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
