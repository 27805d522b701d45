"""Model and registry faults: the scorer keeps serving the last good model through each, and a
model that fails at run time (tests/faulty_models.py) is refused by `triage models import` and
`triage serve` with one clear line."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from onnx import TensorProto, helper
from sklearn.datasets import load_digits

from consumers.model_watcher import ModelWatcher
from consumers.scorer import Scorer
from consumers.trainer import announce
from tests import faulty_models
from tests.fixtures import produce, read_all, registry_v1
from tests.helpers import TriageProcess, wait_until
from tests.integration.test_hotswap import samples
from triage.lifecycle.registry import Registry
from triage.lifecycle.loading import serving_model_from_registry
from triage.settings import Settings
from triage.transport import make_producer


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    return load_digits(return_X_y=True)


@pytest.fixture(scope="module")
def good_registry(tmp_path_factory: pytest.TempPathFactory, digits: tuple[np.ndarray, np.ndarray]) -> Path:
    X, y = digits
    return registry_v1(tmp_path_factory.mktemp("good") / "registry", X[:600], y[:600]).root


@pytest.fixture
def registry(tmp_path: Path, good_registry: Path) -> Registry:
    """The module's good v1, copied: each fault damages its own registry."""
    return Registry(shutil.copytree(good_registry, tmp_path / "registry"))


def _manifest(reg: Registry, **changes: Any) -> dict[str, Any]:
    m = {k: v for k, v in reg.manifest("v1").items() if k not in ("version", "sha256", "path", "status")}
    return {**m, **changes}


def _nan_model() -> bytes:
    W = helper.make_tensor("W", TensorProto.FLOAT, [64, 10], [float("nan")] * 640)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["logits"]), helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "nan", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 10])], [W])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def _narrow_model(reg: Registry, digits: tuple[np.ndarray, np.ndarray]) -> tuple[bytes, dict[str, Any]]:
    from triage.scoring.outlier import OutlierDetector
    from triage.lifecycle.training import train_model

    X, y = digits
    trained = train_model(X[:400, :32], y[:400])
    return trained.onnx_bytes, _manifest(reg, feature_count=32, outlier=OutlierDetector.fit(X[:400, :32]).to_dict())


def _truncated(reg: Registry) -> bytes:
    return reg.model_path("v1").read_bytes()[:500]


FAULTS: dict[str, tuple[str, Callable[[Registry, Any], None]]] = {}


def fault(name: str, reason: str) -> Callable[[Callable[[Registry, Any], None]], Callable[[Registry, Any], None]]:
    def register(fn: Callable[[Registry, Any], None]) -> Callable[[Registry, Any], None]:
        FAULTS[name] = (reason, fn)
        return fn
    return register


@fault("truncated ONNX file (sha256 of the truncated bytes, so it passes the integrity check)", "load")
def _(reg: Registry, digits: Any) -> None:
    reg.promote(reg.add_bundle(_truncated(reg), _manifest(reg), reg.canary("v1")))


@fault("manifest sha256 does not match the model file", "sha256")
def _(reg: Registry, digits: Any) -> None:
    v = reg.add_bundle(reg.model_path("v1").read_bytes(), _manifest(reg), reg.canary("v1"))
    reg.promote(v)
    with open(reg.model_path(v), "ab") as fh:
        fh.write(b"\x00tampered")


@fault("wrong feature count (32 instead of 64)", "incompatible")
def _(reg: Registry, digits: Any) -> None:
    onnx_bytes, manifest = _narrow_model(reg, digits)
    reg.promote(reg.add_bundle(onnx_bytes, manifest))


@fault("a model that outputs NaN", "load")
def _(reg: Registry, digits: Any) -> None:
    reg.promote(reg.add_bundle(_nan_model(), _manifest(reg, output_kind="probabilities"), reg.canary("v1")))


@fault("unreadable registry: CURRENT names a version whose manifest is not JSON", "registry")
def _(reg: Registry, digits: Any) -> None:
    v = reg.add_bundle(reg.model_path("v1").read_bytes(), _manifest(reg), reg.canary("v1"))
    reg.promote(v)
    (reg.bundle_dir(v) / "manifest.json").write_text("{not json")


@fault("a model that fails at run time on every row (onnxruntime raises Fail)", "runtime")
def _(reg: Registry, digits: Any) -> None:
    reg.promote(reg.add_bundle(faulty_models.every_row(), _manifest(reg), reg.canary("v1")))


@fault("a model that passes its 32-row canary and fails on larger batches the scorer runs", "runtime")
def _(reg: Registry, digits: Any) -> None:
    reg.promote(reg.add_bundle(faulty_models.seen_sizes(seen=32), _manifest(reg), reg.canary("v1")))


@pytest.mark.parametrize("name", list(FAULTS))
def test_scorer_keeps_serving_the_last_good_model(
    name: str, settings_factory: Callable[..., Settings], registry: Registry, digits: tuple[np.ndarray, np.ndarray],
) -> None:
    reason, inject = FAULTS[name]
    X, _ = digits
    s = settings_factory(registry=registry.root)
    scorer = Scorer(s, serving_model_from_registry(registry, "v1", s.serving))
    watcher = ModelWatcher(s, registry, scorer).start()
    worker = threading.Thread(target=scorer.run, kwargs={"idle_exit_s": 60.0})
    worker.start()
    try:
        inject(registry, digits)
        version = registry.current() or "v1"
        producer = make_producer(s)
        announce(s, producer, {"version": version, "sha256": "0" * 64, "path": f"models/{version}/model.onnx",
                               "action": "promote"})
        producer.close()
        wait_until(lambda: scorer.metrics.refusals.labels(reason=reason)._value.get() >= 1, f"refusal ({reason})")
        produce(s, s.topics.samples_topic, samples(X, 0, 200))
        out = read_all(s, s.topics.outputs(), expect=200)
        refused = scorer.metrics.refusals.labels(reason=reason)._value.get()
        watcher.sync()  # the refused version is not tried again, and nothing escapes the watcher
        watcher.sync()
        assert scorer.metrics.refusals.labels(reason=reason)._value.get() == refused
        assert watcher.is_alive() and worker.is_alive()
    finally:
        scorer.stop_event.set()
        worker.join(60)
        watcher.stop()
    assert scorer.fatal is None
    assert scorer.metrics.loop.helper_restarts.labels(thread="model-watcher")._value.get() == 0
    assert scorer.model.version == "v1"
    docs = [json.loads(r["value"]) for r in out if r["topic"] != s.topics.dlq_topic]
    assert {d["id"] for d in docs} == {f"d{i}" for i in range(200)}
    assert {d["model_version"] for d in docs} == {"v1"}
    assert scorer.metrics.swaps.labels(result="refused")._value.get() >= 1
    assert scorer.metrics.swaps.labels(result="success")._value.get() == 0


# --- run-time failures at the command line: one line naming the graph, exit 1, nothing changed ---

RUNTIME_FAULTS = {
    "every_row": (faulty_models.every_row, "one row of zeros (fed X float32[1,64])"),
    "batch_of_one": (faulty_models.batch_of_one, "a canary batch of 2 rows"),
    "seen_sizes": (lambda: faulty_models.seen_sizes(seen=32), "a canary batch of 64 rows"),
}


@pytest.fixture
def faulty_files(tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]) -> tuple[dict[str, Path], Path]:
    paths = {}
    for name, (build, _) in RUNTIME_FAULTS.items():
        paths[name] = tmp_path / f"{name}.onnx"
        paths[name].write_bytes(build())
    reference = tmp_path / "reference.npz"
    X, y = digits
    np.savez(reference, X=X[:300], y=y[:300])
    return paths, reference


def _refused(p: TriageProcess, command: str, where: str) -> str:
    code = p.proc.wait(180)
    log = p.log()
    assert code == 1, log
    assert "Traceback" not in log and "[E:onnxruntime" not in log, log
    line = next(ln for ln in log.splitlines() if ln.startswith(f"{command}: model "))
    assert where in line and "inputs: X float[N,64]; outputs: probabilities float[N,10]" in line, line
    assert "fails at run time" in line, line
    return line


@pytest.mark.parametrize("name", list(RUNTIME_FAULTS))
def test_models_import_refuses_a_model_that_fails_at_run_time(
    name: str, faulty_files: tuple[dict[str, Path], Path], tmp_path: Path,
    triage_process: Callable[..., TriageProcess], registry: Registry,
) -> None:
    paths, reference = faulty_files
    before = registry.versions()
    p = triage_process("models", Settings(), "import", "--registry", str(registry.root), "--model", str(paths[name]),
                       "--reference", str(reference))
    _refused(p, "triage models import", RUNTIME_FAULTS[name][1])
    assert registry.versions() == before and registry.current() == "v1"  # nothing registered


@pytest.mark.parametrize("name", ["every_row", "seen_sizes"])
def test_serve_model_refuses_at_start_up(
    name: str, faulty_files: tuple[dict[str, Path], Path], settings_factory: Callable[..., Settings],
    scorer_process: Callable[..., TriageProcess],
) -> None:
    paths, reference = faulty_files
    p = scorer_process(settings_factory(), "--model", str(paths[name]), "--reference", str(reference))
    _refused(p, "triage serve", RUNTIME_FAULTS[name][1])


def test_serve_registry_refuses_a_current_version_that_fails_at_run_time(
    registry: Registry, settings_factory: Callable[..., Settings], scorer_process: Callable[..., TriageProcess],
) -> None:
    registry.promote(registry.add_bundle(faulty_models.seen_sizes(seen=32), _manifest(registry), registry.canary("v1")))
    p = scorer_process(settings_factory(), "--registry", str(registry.root))
    line = _refused(p, "triage serve", "a canary batch of 64 rows")
    assert line.startswith("triage serve: model v2: ")
