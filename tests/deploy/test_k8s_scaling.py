"""Kubernetes beyond one replica: every rendered manifest (base and overlays) is a valid object
of its kind; KEDA scales the scorer on its group's lag within the partitions; static membership
rides out a restart; the Prometheus Operator objects match deploy/prometheus; the S3 overlay
leaves no shared volume behind."""

from __future__ import annotations

import copy
import inspect
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.conftest import DEPLOY, PROM_DIR
from tests.deploy.kustomize import env_of, kubernetes_validate, pod_spec, render, validate
from tests.deploy.shipped import SHIPPED
from triage.settings import ConnectionSettings, ServingSettings
from triage.transport.base import Producer

BASE = DEPLOY / "k8s" / "base"
OVERLAYS = sorted(p.parent for p in (DEPLOY / "k8s" / "overlays").glob("*/kustomization.yaml"))
Docs = dict[str, dict[str, Any]]


@lru_cache(maxsize=None)  # read-only: a test that changes an object deep-copies it first
def _docs(directory: Path = BASE) -> Docs:
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in render(directory)}


@pytest.mark.parametrize("directory", [BASE, *OVERLAYS], ids=lambda p: p.relative_to(DEPLOY / "k8s").as_posix())
def test_every_rendered_object_validates_against_its_schema(directory: Path) -> None:
    docs = list(_docs(directory).values())
    assert {"StatefulSet", "ScaledObject", "PodDisruptionBudget", "ServiceMonitor", "PodMonitor", "PrometheusRule",
            "CronJob", "Job", "Service", "ConfigMap"} <= {d["kind"] for d in docs}
    for doc in docs:
        validate(doc)  # raises with the path of the offending field


@pytest.mark.parametrize(("key", "path", "bad"), [
    ("StatefulSet/triage-scorer", ["spec", "template", "spec", "terminationGracePeriod"], 30),
    ("ScaledObject/triage-scorer", ["spec", "maxReplicas"], 6),
    ("ScaledObject/triage-scorer", ["spec", "maxReplicaCount"], "6"),
    ("ServiceMonitor/triage-scorer", ["spec", "endpoint"], []),
    ("PrometheusRule/triage", ["spec", "groups", 0, "rules", 0, "expression"], "up == 0"),
    ("PodDisruptionBudget/triage-scorer", ["spec", "maxUnavailable"], {"pods": 1}),
])
def test_the_validation_rejects_what_the_api_server_would(key: str, path: list[Any], bad: Any) -> None:
    doc = copy.deepcopy(_docs()[key])
    node = doc
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = bad
    with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)):
        validate(doc)


def test_the_scorer_scales_on_its_groups_lag_up_to_the_partition_count() -> None:
    docs = _docs()
    so = docs["ScaledObject/triage-scorer"]["spec"]
    target = so["scaleTargetRef"]
    assert docs[f"{target['kind']}/{target['name']}"]["kind"] == "StatefulSet"
    assert "replicas" not in docs["StatefulSet/triage-scorer"]["spec"], "KEDA's HPA owns the replica count"
    (trigger,) = so["triggers"]
    meta = trigger["metadata"]
    config = docs["ConfigMap/triage"]["data"]
    assert trigger["type"] == "kafka"
    assert meta["bootstrapServers"] == config["TRIAGE_BOOTSTRAP_SERVERS"]
    assert meta["consumerGroup"] == config["TRIAGE_GROUP_ID"]
    assert meta["topic"] == "triage.samples"
    assert meta["excludePersistentLag"] == "true" and meta["allowIdleConsumers"] == "false"
    assert int(meta["lagThreshold"]) > 0
    topics_env = env_of(pod_spec(docs["Job/triage-topics"])["containers"][0])
    assert so["maxReplicaCount"] == int(topics_env["SAMPLES_PARTITIONS"]["value"]), "max replicas = partitions"
    assert 1 <= so["minReplicaCount"] <= so["maxReplicaCount"]


def test_a_disruption_budget_covers_the_scorers() -> None:
    docs = _docs()
    pdb = docs["PodDisruptionBudget/triage-scorer"]["spec"]
    assert pdb["selector"]["matchLabels"] == docs["StatefulSet/triage-scorer"]["spec"]["selector"]["matchLabels"]
    assert pdb["maxUnavailable"] == 1
    assert docs["ScaledObject/triage-scorer"]["spec"]["minReplicaCount"] > pdb["maxUnavailable"]


def test_static_membership_uses_the_stable_pod_name_and_outlasts_a_restart() -> None:
    docs = _docs()
    sts = docs["StatefulSet/triage-scorer"]
    pod = pod_spec(sts)
    env = env_of(pod["containers"][0])
    # A StatefulSet's pod comes back under its own name; a Deployment's would get a new one.
    assert sts["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    assert env["TRIAGE_GROUP_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "TRIAGE_GROUP_INSTANCE_ID" not in docs["ConfigMap/triage"]["data"], \
        "only the scorers are static members: the ConfigMap reaches the retrain job and the bridge too"
    for key, doc in docs.items():
        if doc["kind"] in ("Deployment", "CronJob"):
            assert all("TRIAGE_GROUP_INSTANCE_ID" not in env_of(c) for c in pod_spec(doc)["containers"]), key
    session_s = int(env["TRIAGE_SESSION_TIMEOUT_MS"]["value"]) / 1000
    ConnectionSettings(session_timeout_ms=int(env["TRIAGE_SESSION_TIMEOUT_MS"]["value"]))  # a valid setting
    # The partitions of a restarting pod wait for it: its shutdown (the grace period at worst)
    # plus a start must fit in the session timeout, or the group rebalances after all.
    assert session_s >= 2 * pod["terminationGracePeriodSeconds"]


def test_the_grace_period_covers_the_final_flush_and_commit() -> None:
    pod = pod_spec(_docs()["StatefulSet/triage-scorer"])
    # SIGTERM: the batch in hand (one poll), then producer.close() flushes for up to its
    # timeout, then the commit and the consumer close.
    flush_s = inspect.signature(Producer.close).parameters["timeout_s"].default
    poll_s = ServingSettings().poll_timeout_ms / 1000
    assert pod["terminationGracePeriodSeconds"] >= 2 * (flush_s + poll_s)


def _alert_jobs() -> set[str]:
    return set(re.findall(r'job="([^"]+)"', (PROM_DIR / "alerts.yml").read_text()))


def test_prometheus_operator_monitors_scrape_every_shipped_job() -> None:
    docs = _docs()
    prom_jobs = {j["job_name"] for j in yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())["scrape_configs"]}
    scraped: dict[str, str] = {}
    for key, doc in docs.items():
        if doc["kind"] not in ("ServiceMonitor", "PodMonitor"):
            continue
        endpoints = doc["spec"].get("endpoints") or doc["spec"]["podMetricsEndpoints"]
        (endpoint,) = endpoints
        (relabel,) = [r for r in endpoint["relabelings"] if r["targetLabel"] == "job"]
        job = relabel["replacement"]
        assert job in prom_jobs, f"{key}: job {job} is not a job of deploy/prometheus/prometheus.yml"
        selector = doc["spec"]["selector"]["matchLabels"]
        if doc["kind"] == "ServiceMonitor":  # selects Services by their labels, then the named port
            (svc,) = [d for d in docs.values() if d["kind"] == "Service"
                      and selector.items() <= d["metadata"].get("labels", {}).items()]
            assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}, key
        else:  # selects pods: the CronJob's template, and its container's named port
            (workload,) = [d for d in docs.values() if d["kind"] == "CronJob"
                           and selector.items() <= d["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"].items()]
            assert endpoint["port"] in {p["name"] for p in pod_spec(workload)["containers"][0]["ports"]}, key
        scraped[job] = key
    assert {s.job for s in SHIPPED} <= set(scraped), "every shipped process is scraped"
    assert _alert_jobs() <= set(scraped), "every job an alert selects is scraped"


def test_the_prometheus_rule_is_alerts_yml() -> None:
    rule = _docs()["PrometheusRule/triage"]
    assert rule["spec"]["groups"] == yaml.safe_load((PROM_DIR / "alerts.yml").read_text())["groups"], \
        "deploy/k8s/base/prometheus-rule.yaml drifted: run scripts/gen_reference.py"


def test_the_s3_overlay_leaves_no_shared_volume_and_gives_every_registry_user_the_bucket() -> None:
    base, s3 = _docs(), _docs(DEPLOY / "k8s" / "overlays" / "s3-registry")
    assert "PersistentVolumeClaim/triage-registry" in base and "PersistentVolumeClaim/triage-registry" not in s3
    registry = s3["ConfigMap/triage"]["data"]["TRIAGE_REGISTRY"]
    assert registry.startswith("s3://")
    users = 0
    for key, doc in s3.items():
        if doc["kind"] not in ("Deployment", "StatefulSet", "CronJob"):
            continue
        pod = pod_spec(doc)
        claims = {v.get("persistentVolumeClaim", {}).get("claimName") for v in pod.get("volumes", [])}
        assert "triage-registry" not in claims, key
        base_pod = pod_spec(base[key])
        if not any(v.get("persistentVolumeClaim", {}).get("claimName") == "triage-registry"
                   for v in base_pod.get("volumes", [])):
            continue
        users += 1
        c = pod["containers"][0]
        assert {"secretRef": {"name": "triage-s3"}} in c["envFrom"], f"{key}: no AWS_* variables"
        assert all(m["mountPath"] != "/registry" for m in c.get("volumeMounts", [])), key
        args = c.get("args", [])
        if "--registry" in args:
            assert args[args.index("--registry") + 1] == registry, key
        assert "/registry" not in args, key
    assert users == 3, "the scorer, the retrain job and the bridge read the registry"
    assert not [k for k in s3 if k.startswith("Secret/")], "never commit a Secret: document `kubectl create secret`"
