from __future__ import annotations

from pathlib import Path

import pytest
from sklearn.datasets import load_digits

from triage.lifecycle.bundles import train_initial
from triage.errors import IntegrityError, RegistryError
from triage.lifecycle.labelstore import LabelStore, is_eval_id
from triage.lifecycle.registry import Registry
from triage.settings import PolicySettings, RetrainSettings


@pytest.fixture(scope="module")
def trained_registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    X, y = load_digits(return_X_y=True)
    reg = Registry(tmp_path_factory.mktemp("reg"))
    train_initial(X[:400], y[:400], reg, retrain=RetrainSettings(), policy=PolicySettings(), outlier_quantile=0.995,
                  progress=lambda m: None)
    return reg


def test_train_registers_v1_as_current_with_full_manifest(trained_registry: Registry) -> None:
    reg = trained_registry
    assert reg.current() == "v1" and reg.versions() == ["v1"]
    m = reg.verify("v1")
    for key in ("version", "sha256", "classes", "feature_count", "input_name", "output_name", "outlier",
                "calibration", "routing", "data", "metrics", "parent", "created", "status", "path"):
        assert key in m, key
    assert m["status"] == "current" and m["feature_count"] == 64 and len(m["classes"]) == 10
    assert m["metrics"]["accuracy"] > 0.85
    assert m["calibration"]["ece_after"] <= m["calibration"]["ece_before"] + 1e-9
    assert sum(m["data"]["class_counts"].values()) == m["data"]["base_rows"]


def test_promote_rollback_and_statuses(tmp_path: Path, trained_registry: Registry) -> None:
    reg = Registry(tmp_path)
    src = trained_registry
    onnx = src.model_path("v1").read_bytes()
    manifest = {k: v for k, v in src.manifest("v1").items() if k not in ("version", "sha256", "path", "status")}
    v1 = reg.add_bundle(onnx, manifest)
    v2 = reg.add_bundle(onnx, manifest)
    assert (v1, v2) == ("v1", "v2") and reg.current() is None
    reg.promote(v1)
    reg.promote(v2)
    assert reg.current() == "v2" and reg.manifest("v1")["status"] == "previous"
    assert reg.rollback()["version"] == "v1"
    assert reg.current() == "v1" and reg.manifest("v2")["status"] == "rejected"
    with pytest.raises(RegistryError, match="nothing to roll back"):
        reg.rollback()
    with pytest.raises(RegistryError, match="rejected"):
        reg.promote("v2")
    reg.promote("v2", force=True)
    assert reg.current() == "v2"


def test_sha256_mismatch_is_refused(tmp_path: Path, trained_registry: Registry) -> None:
    reg = Registry(tmp_path)
    manifest = {k: v for k, v in trained_registry.manifest("v1").items() if k not in ("version", "sha256", "path")}
    v = reg.add_bundle(trained_registry.model_path("v1").read_bytes(), manifest)
    with open(reg.model_path(v), "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        reg.verify(v)
    with pytest.raises(IntegrityError):
        reg.promote(v)
    assert reg.current() is None


@pytest.mark.parametrize("path", ["../etc/passwd", "/etc/passwd", "models/../../x", "models/v1/../../../y"])
def test_paths_outside_the_registry_are_refused(tmp_path: Path, path: str) -> None:
    with pytest.raises(RegistryError, match="outside the registry"):
        Registry(tmp_path).resolve(path)


def test_version_names_are_checked(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="not a version name"):
        Registry(tmp_path).bundle_dir("../v1")


def test_label_store_latest_wins_and_eval_split(tmp_path: Path) -> None:
    store = LabelStore(tmp_path)
    store.append([{"id": f"s{i}", "label": "1", "features": [float(i)]} for i in range(50)])
    store.append([{"id": "s3", "label": "7", "features": [3.0]}, {"id": "s4", "label": "__edge_case__", "features": [4.0]}])
    latest = store.latest()
    assert latest["s3"]["label"] == "7" and len(latest) == 50
    Xt, yt, Xe, ye = store.arrays(None, 5)
    assert len(yt) + len(ye) == 49  # the edge case is set aside
    assert all(is_eval_id(f"s{int(x[0])}", 5) for x in Xe)
    assert not any(is_eval_id(f"s{int(x[0])}", 5) for x in Xt)
    assert "7" in yt.tolist() + ye.tolist()
    assert store.latest(upto=50)["s3"]["label"] == "1"
