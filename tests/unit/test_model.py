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


# --- refusals say what the graph has and the one flag that fixes it (or that none will) ------


def _graph(path: Path, inputs: list, outputs: list, nodes: list, inits: list = (), meta: dict = None) -> Path:  # type: ignore[assignment]
    m = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(inits)),
                          opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    for k, v in (meta or {}).items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(path))
    return path


def _softmax_net(path: Path, in_type: int = TensorProto.FLOAT, batch: object = None, meta: dict = None) -> Path:  # type: ignore[assignment]
    W = helper.make_tensor("W", TensorProto.FLOAT, [3, 2], [1, 0, 0, 1, 1, 1])
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["xf", "W"], ["z"]), helper.make_node("Softmax", ["z"], ["probs"])]
    return _graph(path, [helper.make_tensor_value_info("x", in_type, [batch, 3])],
                  [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, 2])], nodes, [W], meta)


def test_missing_classes_says_where_it_looked_and_how_many(tmp_path: Path) -> None:
    with pytest.raises(ModelInspectionError) as err:
        OnnxClassifier(_softmax_net(tmp_path / "m.onnx"))
    text = err.value.message
    assert "x float[?,3]" in text and "probs float[?,2]" in text  # the graph's own signature
    assert "metadata keys" in text and "ArrayFeatureExtractor" in text and "--classes with 2" in text


def test_integer_input_is_refused_saying_no_flag_helps(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no flag changes this"):
        OnnxClassifier(_softmax_net(tmp_path / "m.onnx", TensorProto.INT64), classes=["a", "b"])


def test_two_inputs_need_input_name_then_are_refused(tmp_path: Path) -> None:
    path = _graph(tmp_path / "m.onnx",
                  [helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, 2]),
                   helper.make_tensor_value_info("b", TensorProto.FLOAT, [None, 2])],
                  [helper.make_tensor_value_info("s", TensorProto.FLOAT, [None, 2])],
                  [helper.make_node("Add", ["a", "b"], ["s"])])
    with pytest.raises(ModelInspectionError, match="--input-name") as err:
        OnnxClassifier(path, classes=["x", "y"])
    assert "a float[?,2], b float[?,2]" in err.value.message
    with pytest.raises(ModelLoadError, match="more than one input"):
        OnnxClassifier(path, classes=["x", "y"], input_name="a")


def test_float16_and_float64_inputs_and_fixed_batches(tmp_path: Path) -> None:
    X = np.random.default_rng(0).normal(size=(11, 3))
    reference = OnnxClassifier(_softmax_net(tmp_path / "f32.onnx"), classes=["a", "b"]).predict_proba(X)
    for in_type, batch in ((TensorProto.FLOAT16, None), (TensorProto.DOUBLE, None), (TensorProto.FLOAT, 4),
                           (TensorProto.FLOAT, 1)):
        model = OnnxClassifier(_softmax_net(tmp_path / f"m{in_type}-{batch}.onnx", in_type, batch), classes=["a", "b"])
        assert model.spec.batch == batch
        np.testing.assert_allclose(model.predict_proba(X), reference, atol=2e-3 if in_type == TensorProto.FLOAT16 else 1e-6)


def test_class_names_from_a_yolo_style_metadata_dict(tmp_path: Path) -> None:
    model = OnnxClassifier(_softmax_net(tmp_path / "m.onnx", meta={"names": "{0: 'cat', 1: 'dog'}"}))
    assert model.spec.classes == ("cat", "dog") and model.spec.class_source == "metadata 'names'"


def test_binary_single_column_output(tmp_path: Path) -> None:
    W = helper.make_tensor("W", TensorProto.FLOAT, [3, 1], [1, -1, 0])
    path = _graph(tmp_path / "m.onnx", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
                  [helper.make_tensor_value_info("logit", TensorProto.FLOAT, [None, 1])],
                  [helper.make_node("MatMul", ["x", "W"], ["logit"])], [W])
    model = OnnxClassifier(path, classes=["no", "yes"], output_kind="logits")
    p = model.predict_proba(np.array([[0.0, 0, 0], [5, 0, 0]]))
    np.testing.assert_allclose(p[0], [0.5, 0.5])
    assert p[1, 1] > 0.99


def test_skl2onnx_float64_zipmap_graph_loads(tmp_path: Path, iris) -> None:  # type: ignore[no-untyped-def]
    """skl2onnx writes a float64 graph whose ZipMap takes doubles, which onnxruntime itself
    refuses; triage drops the ZipMap it never reads."""
    X, _, clf = iris
    path = tmp_path / "m64.onnx"
    path.write_bytes(to_onnx(clf, X[:1].astype(np.float64)).SerializeToString())
    model = OnnxClassifier(path)
    assert model.spec.classes == ("setosa", "versicolor", "virginica")
    np.testing.assert_allclose(model.predict_proba(X[:20].astype(np.float64)), clf.predict_proba(X[:20]), atol=1e-5)


def test_external_weights_are_read_into_one_buffer(tmp_path: Path) -> None:
    """PyTorch's exporter keeps weights in ``model.onnx.data``; bundles must be self-contained."""
    from triage.model import model_bytes

    path = _softmax_net(tmp_path / "src.onnx", meta={"classes": '["a", "b"]'})
    proto = onnx.load(str(path))
    for t in proto.graph.initializer:  # raw_data, which is what gets moved out
        t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t), t.name))
    ext = tmp_path / "ext" / "m.onnx"
    ext.parent.mkdir()
    onnx.save(proto, str(ext), save_as_external_data=True, all_tensors_to_one_file=True, location="m.onnx.data",
              size_threshold=0)
    assert (ext.parent / "m.onnx.data").exists()
    blob = model_bytes(ext)
    X = np.ones((2, 3))
    np.testing.assert_allclose(OnnxClassifier(blob, source="m").predict_proba(X), OnnxClassifier(path).predict_proba(X))


def test_zipmap_labels_win_over_an_inner_classifier(tmp_path: Path, iris) -> None:  # type: ignore[no-untyped-def]
    """Bagging: inner trees are trained on encoded labels; the ZipMap names the real classes."""
    from sklearn.ensemble import BaggingClassifier
    from sklearn.tree import DecisionTreeClassifier

    X, names, _ = iris
    clf = BaggingClassifier(DecisionTreeClassifier(max_depth=3), n_estimators=3, random_state=0).fit(X, names)
    path = tmp_path / "bag.onnx"
    path.write_bytes(to_onnx(clf, X[:1]).SerializeToString())
    model = OnnxClassifier(path)
    assert model.spec.classes == ("setosa", "versicolor", "virginica")
    got = np.asarray(model.spec.classes)[model.predict_proba(X).argmax(1)]
    assert (got == clf.predict(X)).mean() > 0.95


def test_output_name_recorded_by_older_imports_still_loads(tmp_path: Path, iris) -> None:  # type: ignore[no-untyped-def]
    """Imports before the adapter stored the ZipMap's input tensor as output_name."""
    X, _, clf = iris
    path = tmp_path / "m.onnx"
    path.write_bytes(to_onnx(clf, X[:1]).SerializeToString())
    inner = next(n.input[0] for n in onnx.load(str(path)).graph.node if n.op_type == "ZipMap")
    model = OnnxClassifier(path, output_name=inner)
    np.testing.assert_allclose(model.predict_proba(X[:5]), clf.predict_proba(X[:5]), atol=1e-5)
    with pytest.raises(ModelInspectionError, match="not a float tensor"):
        OnnxClassifier(path, output_name="output_label")


def test_reference_of_the_wrong_width_is_named_as_such(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="the reference data has 5 features, but input x float"):
        OnnxClassifier(_softmax_net(tmp_path / "m.onnx"), classes=["a", "b"], data_features=5)
    assert OnnxClassifier(_softmax_net(tmp_path / "m.onnx"), classes=["a", "b"]).predict_proba(np.empty((0, 3))).shape == (0, 2)
