"""The optional Kubernetes manifests (the kustomize base, rendered): probes on the real
endpoints, one workload per shipped process (scorer, retrain, audit, Label Studio bridge) plus
Label Studio itself. Scaling, static membership, monitoring and the S3 overlay are in
test_k8s_scaling.py."""

from __future__ import annotations

from typing import Any

import yaml

from tests.deploy.conftest import DEPLOY
from tests.deploy.kustomize import env_of as _env, pod_spec as _pod, render
from tests.deploy.shipped import BRIDGE_WEBHOOK_PORT, BY_COMMAND, SHIPPED
from triage.settings import Settings

BASE = DEPLOY / "k8s" / "base"


def _docs(directory: Any = BASE) -> dict[str, dict[str, Any]]:
    return {f"{doc['kind']}/{doc['metadata']['name']}": doc for doc in render(directory)}


def test_every_manifest_file_is_part_of_the_base() -> None:
    listed = set(yaml.safe_load(BASE.joinpath("kustomization.yaml").read_text())["resources"])
    assert {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"} == listed


def test_scorer_deployment_probes_and_service() -> None:
    docs = _docs()
    pod = docs["StatefulSet/triage-scorer"]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    svc = docs["Service/triage-scorer"]["spec"]
    assert svc["selector"] == docs["StatefulSet/triage-scorer"]["spec"]["selector"]["matchLabels"]
    fields = {f"TRIAGE_{n.upper()}" for n in dict(Settings.fields())}
    assert set(docs["ConfigMap/triage"]["data"]) <= fields


def test_retrain_cronjob_never_overlaps_and_shares_the_registry() -> None:
    docs = _docs()
    cron = docs["CronJob/triage-retrain"]["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "triage-registry"
    assert docs["PersistentVolumeClaim/triage-registry"]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_every_shipped_process_has_a_workload_with_its_metrics_port() -> None:
    docs = _docs()
    for s in SHIPPED:
        doc = docs.get(f"Deployment/{s.k8s}") or docs.get(f"StatefulSet/{s.k8s}") or docs.get(f"CronJob/{s.k8s}")
        assert doc, f"deploy/k8s has no workload {s.k8s} for `triage {s.command}`"
        c = _pod(doc)["containers"][0]
        assert c["args"][0] == s.command, s.k8s
        assert _env(c).get("TRIAGE_METRICS_PORT", {}).get("value", "8000") == str(s.port), s.k8s
        if doc["kind"] in ("Deployment", "StatefulSet"):
            annotations = doc["spec"]["template"]["metadata"]["annotations"]
            assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == str(s.port)
            assert any(p["containerPort"] == s.port for p in c["ports"])
            assert _pod(doc)["securityContext"]["runAsNonRoot"] is True
            svc = docs[f"Service/{s.k8s}"]["spec"]
            assert svc["selector"] == doc["spec"]["selector"]["matchLabels"]
            assert any(p["port"] == s.port for p in svc["ports"])


def test_audit_shares_the_risk_target_with_the_scorer() -> None:
    docs = _docs()
    config = docs["ConfigMap/triage"]["data"]
    assert float(config["TRIAGE_RISK_ALPHA"]) > 0 and float(config["TRIAGE_AUDIT_RATE"]) > 0
    c = _pod(docs["Deployment/triage-audit"])["containers"][0]
    assert {"configMapRef": {"name": "triage"}} in c["envFrom"]
    assert "TRIAGE_RISK_ALPHA" not in _env(c)


def test_label_studio_keeps_its_data_and_takes_credentials_from_a_secret() -> None:
    docs = _docs()
    deploy = docs["Deployment/label-studio"]
    assert deploy["spec"]["replicas"] == 1 and deploy["spec"]["strategy"]["type"] == "Recreate"
    pod = _pod(deploy)
    c = pod["containers"][0]
    assert c["image"].startswith("heartexlabs/label-studio:")
    env = _env(c)
    for name in ("LABEL_STUDIO_USERNAME", "LABEL_STUDIO_PASSWORD", "LABEL_STUDIO_USER_TOKEN"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "triage-label-studio", name
        assert "value" not in env[name]
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"]["value"] == "true"
    assert env["SENTRY_DSN"]["value"] == ""
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["path"] == "/health"
    assert {"name": "data", "mountPath": "/label-studio/data"} in c["volumeMounts"]
    claim = next(v for v in pod["volumes"] if v["name"] == "data")["persistentVolumeClaim"]["claimName"]
    assert docs[f"PersistentVolumeClaim/{claim}"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    svc = docs["Service/label-studio"]["spec"]
    assert svc["selector"] == deploy["spec"]["selector"]["matchLabels"] and svc["ports"][0]["port"] == 8080
    assert not [k for k in docs if k.startswith("Secret/")], "never commit a Secret: document `kubectl create secret`"


def test_bridge_is_a_single_writer_with_secrets_from_the_secret() -> None:
    docs = _docs()
    deploy = docs["Deployment/triage-label-studio-bridge"]
    spec = deploy["spec"]
    assert spec["replicas"] == 1, "the bridge is the single writer of tasks"
    assert spec["strategy"]["type"] == "Recreate", "a rolling update would run two writers at once"
    c = _pod(deploy)["containers"][0]
    args = c["args"]
    assert args[args.index("--url") + 1] == "http://label-studio:8080"  # the Service in label-studio.yaml
    assert args[args.index("--webhook-url") + 1] == f"http://triage-label-studio-bridge:{BRIDGE_WEBHOOK_PORT}/webhook"
    assert args[args.index("--webhook-port") + 1] == str(BRIDGE_WEBHOOK_PORT)
    assert "--api-key" not in args and "--webhook-secret" not in args, "secrets never on the command line"
    env = _env(c)
    assert env["TRIAGE_LABEL_STUDIO_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "triage-label-studio", "key": "token"}
    assert env["TRIAGE_LABEL_STUDIO_WEBHOOK_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "triage-label-studio"
    assert env["TRIAGE_LABEL_STUDIO_GROUP_ID"]["value"] != docs["ConfigMap/triage"]["data"]["TRIAGE_GROUP_ID"]  # not the scorers' group
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"name": "registry", "mountPath": "/registry", "readOnly": True} in c["volumeMounts"]
    svc = docs["Service/triage-label-studio-bridge"]["spec"]
    assert {p["port"] for p in svc["ports"]} == {BRIDGE_WEBHOOK_PORT, BY_COMMAND["label-studio"].port}


def test_every_triage_variable_in_the_manifests_is_a_setting() -> None:
    fields = {f"TRIAGE_{n.upper()}" for n in dict(Settings.fields())}
    for key, doc in _docs().items():
        if doc["kind"] not in ("Deployment", "StatefulSet", "CronJob"):
            continue
        for c in _pod(doc)["containers"]:
            unknown = [n for n in _env(c) if n.startswith("TRIAGE_") and n not in fields]
            assert not unknown, f"{key}: {unknown} are not triage settings"
