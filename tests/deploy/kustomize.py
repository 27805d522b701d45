"""Render deploy/k8s kustomizations in process, and validate the rendered objects.

``render`` implements the subset of kustomize the manifests use: ``resources`` (files and
directories), ``patches`` as RFC 6902 operations with a ``target`` (applied with the jsonpatch
library) and as a file holding ``$patch: delete``. Anything else raises, so a manifest that
starts using more fails here instead of rendering wrongly; test_kustomize_kubectl.py checks the
result against ``kubectl kustomize`` where kubectl exists.

``validate`` checks an object against the Kubernetes OpenAPI schemas kubernetes-validate ships,
or, for the KEDA and Prometheus Operator kinds, the CRD schemas vendored in tests/deploy/crds/
(source and version in each file), with unknown fields rejected like the API server's strict
field validation.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import jsonschema
import yaml

try:
    import jsonpatch
    import kubernetes_validate
except ImportError as exc:  # a worktree set up before the test extra gained them
    raise ImportError(f"{exc}: the test extra needs them; run scripts/setup.sh test") from exc

CRDS = Path(__file__).resolve().parent / "crds"
K8S_VERSION = "1.30"  # the oldest Kubernetes the manifests target (PodDisruptionBudget policy/v1, CronJob batch/v1)
Doc = dict[str, Any]


def _load(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _key(doc: Doc) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def _matches(doc: Doc, target: dict[str, str]) -> bool:
    unknown = set(target) - {"kind", "name"}
    if unknown:
        raise NotImplementedError(f"patch target fields {sorted(unknown)}: extend tests/deploy/kustomize.py")
    return all((doc["kind"] if k == "kind" else doc["metadata"]["name"]) == v for k, v in target.items())


def render(directory: Path) -> list[Doc]:
    """The objects ``kubectl kustomize directory`` would print, in resource order."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - {"apiVersion", "kind", "resources", "patches"}
    if unknown:
        raise NotImplementedError(f"{directory}: kustomization fields {sorted(unknown)}: extend tests/deploy/kustomize.py")
    docs: list[Doc] = []
    for res in spec.get("resources", []):
        path = directory / res
        docs += render(path) if path.is_dir() else _load(path)
    seen = [_key(d) for d in docs]
    if len(seen) != len(set(seen)):
        raise ValueError(f"{directory}: an object is defined twice: {sorted(k for k in seen if seen.count(k) > 1)}")
    for patch in spec.get("patches", []):
        docs = _apply(directory, docs, patch)
    return docs


def _apply(directory: Path, docs: list[Doc], patch: dict[str, Any]) -> list[Doc]:
    if "path" in patch:
        (strategic,) = _load(directory / patch["path"])
        if strategic.get("$patch") != "delete":
            raise NotImplementedError("strategic-merge patches other than $patch: delete")
        key = _key(strategic)
        if key not in {_key(d) for d in docs}:
            raise ValueError(f"{directory}: {patch['path']} deletes {key}, which is not there")
        return [d for d in docs if _key(d) != key]
    ops = yaml.safe_load(patch["patch"])
    hits = [i for i, d in enumerate(docs) if _matches(d, patch["target"])]
    if not hits:
        raise ValueError(f"{directory}: no object matches the patch target {patch['target']}")
    out = list(docs)
    for i in hits:
        out[i] = jsonpatch.apply_patch(docs[i], ops)  # raises on a failed `test` op or a missing path
    return out


def pod_spec(doc: Doc) -> Doc:
    """The pod template's spec of a Deployment, StatefulSet or CronJob."""
    spec = doc["spec"]
    return spec["jobTemplate"]["spec"]["template"]["spec"] if doc["kind"] == "CronJob" else spec["template"]["spec"]


def env_of(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


@lru_cache(maxsize=None)
def _crd_schema(kind: str, api_version: str) -> Optional[Doc]:
    group, _, version = api_version.partition("/")
    path = CRDS / f"{kind.lower()}-{group.split('.')[0]}-{version}.json"
    if not path.exists():
        return None
    doc = json.loads(path.read_text())
    assert (doc["group"], doc["version"], doc["kind"]) == (group, version, kind), path
    return _strict(doc["schema"])


def _strict(schema: Doc) -> Doc:
    """Reject fields the CRD does not declare (the API server prunes or, with strict field
    validation, refuses them), except where the CRD keeps unknown fields."""
    schema = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node \
                    and not node.get("x-kubernetes-preserve-unknown-fields"):
                node["additionalProperties"] = False
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema)
    # metadata is the standard ObjectMeta, not described by the CRD
    schema.setdefault("properties", {})["metadata"] = {"type": "object"}
    return schema


def validate(doc: Doc) -> None:
    """Raise (jsonschema.ValidationError or kubernetes_validate's errors) when ``doc`` is not a
    valid object of its kind."""
    crd = _crd_schema(doc["kind"], doc["apiVersion"])
    if crd is not None:
        jsonschema.Draft7Validator(crd).validate(doc)
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
