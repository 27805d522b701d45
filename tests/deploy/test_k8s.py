"""The optional Kubernetes manifests: well-formed, probes on the scorer's real endpoints."""

from __future__ import annotations

from typing import Any

import yaml

from tests.deploy.conftest import DEPLOY
from triage.settings import Settings


def _docs() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            out[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return out


def test_scorer_deployment_probes_and_service() -> None:
    docs = _docs()
    pod = docs["Deployment/triage-scorer"]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    svc = docs["Service/triage-scorer"]["spec"]
    assert svc["selector"] == docs["Deployment/triage-scorer"]["spec"]["selector"]["matchLabels"]
    fields = {f"TRIAGE_{n.upper()}" for n in dict(Settings.fields())}
    assert set(docs["ConfigMap/triage"]["data"]) <= fields


def test_retrain_cronjob_never_overlaps_and_shares_the_registry() -> None:
    docs = _docs()
    cron = docs["CronJob/triage-retrain"]["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "triage-registry"
    assert docs["PersistentVolumeClaim/triage-registry"]["spec"]["accessModes"] == ["ReadWriteMany"]
