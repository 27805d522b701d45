from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from triage.errors import ModelInspectionError, ModelLoadError
from triage.model import OnnxClassifier


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray, np.ndarray, LogisticRegression]:
    X, y = load_iris(return_X_y=True)
    X = X.astype(np.float32)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    return X, names, LogisticRegression(max_iter=500).fit(X, names)


@pytest.mark.parametrize("zipmap", [True, False])
def test_skl2onnx_with_and_without_zipmap(tmp_path: Path, iris, zipmap: bool) -> None:  # type: ignore[no-untyped-def]
    X, _, clf = iris
    path = tmp_path / "m.onnx"
    path.write_bytes(to_onnx(clf, X[:1], options={"zipmap": zipmap}).SerializeToString())
    model = OnnxClassifier(path)
    assert model.spec.classes == ("setosa", "versicolor", "virginica")
    assert model.spec.feature_count == 4
    np.testing.assert_allclose(model.predict_proba(X[:20]), clf.predict_proba(X[:20]), atol=1e-5)


def _logit_model(path: Path, with_classes: bool, dynamic_features: bool = False) -> None:
    W = helper.make_tensor("W", TensorProto.FLOAT, [3, 2], [1, 0, 0, 1, 1, 1])
    node = helper.make_node("MatMul", ["x", "W"], ["logits"])
    feat = None if dynamic_features else 3
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, feat])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 2])], [W],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    if with_classes:
        m.metadata_props.add(key="classes", value='["neg", "pos"]')
    onnx.save(m, str(path))


def test_plain_tensor_logits_with_metadata_classes(tmp_path: Path) -> None:
    path = tmp_path / "logits.onnx"
    _logit_model(path, with_classes=True)
    model = OnnxClassifier(path, output_kind="logits")
    p = model.predict_proba(np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert p[0, 0] > 0.8 and abs(p[1, 0] - 0.5) < 1e-6
    assert model.spec.classes == ("neg", "pos")


def test_missing_classes_names_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "noclasses.onnx"
    _logit_model(path, with_classes=False)
    with pytest.raises(ModelInspectionError, match="--classes"):
        OnnxClassifier(path)
    assert OnnxClassifier(path, classes=["a", "b"]).spec.classes == ("a", "b")


def test_dynamic_feature_count_needs_a_flag(tmp_path: Path) -> None:
    path = tmp_path / "dyn.onnx"
    _logit_model(path, with_classes=True, dynamic_features=True)
    with pytest.raises(ModelInspectionError, match="--feature-count"):
        OnnxClassifier(path)
    assert OnnxClassifier(path, feature_count=3).spec.feature_count == 3


def test_wrong_class_count_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    _logit_model(path, with_classes=True)
    with pytest.raises(ModelLoadError, match="2 columns but 3 class names"):
        OnnxClassifier(path, classes=["a", "b", "c"])


def test_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelLoadError, match="cannot load model"):
        OnnxClassifier(path)
