"""A zoo of ONNX classifiers written by real exporters (issue 12).

``build_zoo(root)`` trains small, seeded models on one 4-class, 20-feature problem and exports
each the way its exporter does by default (or with the common options: ZipMap off/columns,
float64 input, dynamic batch, ...). Every ``ZooModel`` carries the rows to score, a reference
file for ``--reference``, the serve flags the kind needs when the graph cannot say everything,
and onnxruntime's OWN prediction per row, which triage's label must equal.

Every exporter is in the test extra; ``KNOWN_EXPORTER_BUGS`` lists the kinds no exporter here can write.
Run ``python -m tests.compat.zoo DIR`` to build everything and print one line per kind.
"""

from __future__ import annotations

import json
import sys
import warnings
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from triage.settings import TopicSettings

N_FEATURES = 20
N_CLASSES = 4
N_ROWS = 200  # rows of X to score (a multiple of every fixed batch below)
INT_CLASSES = ("0", "1", "2", "3")
STR_CLASSES = ("cat", "dog", "bird", "fish")
SEED = 0


@dataclass(frozen=True)
class ZooModel:
    kind: str  # e.g. "skl2onnx-logreg-zipmap-dict"
    path: Path  # the .onnx file
    X: np.ndarray  # rows to score (float64, every value exactly representable in float32)
    reference: Path  # npz with X and y from the training distribution, for --reference
    flags: tuple[str, ...]  # serve flags this kind needs; empty when the graph says everything
    expected: list[str]  # onnxruntime's own predicted label per row of X
    # descriptive extras (for the matrix)
    exporter: str = ""
    classes: tuple[str, ...] = ()  # the class names, in the probability columns' order
    class_source: str = ""  # where the graph keeps the class names ("none": needs --classes)
    notes: str = ""

    def flag_kwargs(self) -> dict[str, object]:
        """``flags`` as keyword arguments of ``triage.model.OnnxClassifier``."""
        out: dict[str, object] = {}
        it = iter(self.flags)
        for flag in it:
            value = next(it)
            if flag == "--classes":
                out["classes"] = [c.strip() for c in value.split(",")]
            elif flag == "--output-kind":
                out["output_kind"] = value
            elif flag == "--output-name":
                out["output_name"] = value
            elif flag == "--input-name":
                out["input_name"] = value
            elif flag == "--feature-count":
                out["feature_count"] = int(value)
            else:
                raise ValueError(f"unknown flag {flag}")
        return out


@dataclass(frozen=True)
class _Built:
    """What a builder returns; ``build_zoo`` adds X, the reference and the expected labels."""

    exporter: str
    classes: tuple[str, ...]
    class_source: str
    label_output: Optional[str] = None  # the graph's label output, when it has one
    score_output: Optional[str] = None  # else: argmax of this output names the class
    flags: tuple[str, ...] = ()
    notes: str = ""
    string_labels: bool = False
    train_names: tuple[str, ...] = ()  # name of training class i (default: ``classes``)
    # Expected label = argmax of the ZipMap probabilities instead of the label output (SVC votes).
    expect_argmax: bool = False
    # onnxruntime refuses the exporter's graph only because of its ZipMap: expected labels come
    # from the same graph with the ZipMap removed (what triage serves).
    drop_zipmap_for_ort: bool = False


@dataclass(frozen=True)
class _Data:
    X_train: np.ndarray
    y_train: np.ndarray  # ints 0..3
    X: np.ndarray

    @property
    def X32(self) -> np.ndarray:
        return self.X_train.astype(np.float32)

    def y_str(self) -> np.ndarray:
        return np.asarray(STR_CLASSES)[self.y_train]


def _data() -> _Data:
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=600 + N_ROWS, n_features=N_FEATURES, n_informative=8, n_redundant=4,
        n_classes=N_CLASSES, n_clusters_per_class=1, class_sep=1.2, random_state=SEED,
    )
    X = X.astype(np.float32).astype(np.float64)  # what a JSON sample carries survives float32
    return _Data(X[:600], y[:600].astype(np.int64), X[600:])


# ---------------------------------------------------------------------------------- skl2onnx


def _skl(path: Path, model, X: np.ndarray, options: Optional[dict] = None) -> None:
    from skl2onnx import to_onnx

    onx = to_onnx(model, X[:1], options=options, target_opset={"": 17, "ai.onnx.ml": 3})
    onnx.save(onx, str(path))


def _logreg(d: _Data, y: Optional[np.ndarray] = None):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=500).fit(d.X_train, d.y_train if y is None else y)


def _skl_built(notes: str = "", *, strings: bool = False) -> _Built:
    # scikit-learn sorts string classes: the columns are bird, cat, dog, fish
    return _Built("skl2onnx", tuple(sorted(STR_CLASSES)) if strings else INT_CLASSES, "",
                  label_output="output_label", notes=notes, string_labels=strings,
                  train_names=STR_CLASSES if strings else INT_CLASSES)


def b_skl_logreg_zipmap_dict(d: _Data, path: Path) -> _Built:
    clf = _logreg(d)
    _skl(path, clf, d.X32)
    return _skl_built("default export: output_probability is a ZipMap (sequence of maps)")


def b_skl_logreg_nozipmap(d: _Data, path: Path) -> _Built:
    clf = _logreg(d)
    _skl(path, clf, d.X32, {id(clf): {"zipmap": False}})
    return _skl_built("zipmap=False: output_probability is a float tensor [N,4]")


def b_skl_logreg_zipmap_columns(d: _Data, path: Path) -> _Built:
    clf = _logreg(d)
    _skl(path, clf, d.X32, {id(clf): {"zipmap": "columns"}})
    return _skl_built("zipmap='columns': one float output [N] per class")


def b_skl_logreg_f64_zipmap(d: _Data, path: Path) -> _Built:
    clf = _logreg(d)
    _skl(path, clf, d.X_train)
    built = _skl_built("to_onnx with float64 X: double input, default ZipMap fed doubles, which onnxruntime "
                       "refuses to load; triage drops the ZipMap it never reads")
    return dataclasses.replace(built, drop_zipmap_for_ort=True)


def b_skl_logreg_f64_nozipmap(d: _Data, path: Path) -> _Built:
    clf = _logreg(d)
    _skl(path, clf, d.X_train, {id(clf): {"zipmap": False}})
    return _skl_built("to_onnx with float64 X: double input and double probabilities")


def b_skl_logreg_string_labels(d: _Data, path: Path) -> _Built:
    clf = _logreg(d, d.y_str())
    _skl(path, clf, d.X32)
    return _skl_built("string class labels, default ZipMap (map<string,float>)", strings=True)


def b_skl_logreg_string_labels_nozipmap(d: _Data, path: Path) -> _Built:
    clf = _logreg(d, d.y_str())
    _skl(path, clf, d.X32, {id(clf): {"zipmap": False}})
    return _skl_built("string class labels, zipmap=False", strings=True)


def b_skl_mlp_nozipmap(d: _Data, path: Path) -> _Built:
    from sklearn.neural_network import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=SEED).fit(d.X_train, d.y_train)
    _skl(path, clf, d.X32, {id(clf): {"zipmap": False}})
    return _skl_built("MLPClassifier, zipmap=False")


def b_skl_svc_proba(d: _Data, path: Path) -> _Built:
    from sklearn.svm import SVC

    clf = SVC(probability=True, random_state=SEED).fit(d.X_train, d.y_train)
    _skl(path, clf, d.X32)
    built = _skl_built("SVC(probability=True), default ZipMap; the graph's label comes from one-vs-one votes, "
                       "which disagree with its own probabilities on a few rows (as in scikit-learn); "
                       "expected = argmax of onnxruntime's probabilities")
    return dataclasses.replace(built, expect_argmax=True)


def b_skl_random_forest(d: _Data, path: Path) -> _Built:
    from sklearn.ensemble import RandomForestClassifier

    clf = RandomForestClassifier(n_estimators=20, max_depth=8, random_state=SEED).fit(d.X_train, d.y_train)
    _skl(path, clf, d.X32)
    return _skl_built("RandomForestClassifier, default ZipMap")


def b_skl_decision_tree(d: _Data, path: Path) -> _Built:
    from sklearn.tree import DecisionTreeClassifier

    clf = DecisionTreeClassifier(max_depth=6, random_state=SEED).fit(d.X_train, d.y_train)
    _skl(path, clf, d.X32, {id(clf): {"zipmap": False}})
    return _skl_built("DecisionTreeClassifier, zipmap=False (probabilities are often exact ties of 0/1)")


def b_skl_hist_gb(d: _Data, path: Path) -> _Built:
    from sklearn.ensemble import HistGradientBoostingClassifier

    clf = HistGradientBoostingClassifier(max_iter=30, random_state=SEED).fit(d.X_train, d.y_train)
    _skl(path, clf, d.X32)
    return _skl_built("HistGradientBoostingClassifier, default ZipMap")


def b_skl_pipeline_scaler_logreg(d: _Data, path: Path) -> _Built:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=500))]).fit(d.X_train, d.y_train)
    _skl(path, pipe, d.X32)
    return _skl_built("Pipeline(StandardScaler, LogisticRegression), default ZipMap")


# ------------------------------------------------------------------------------ onnxmltools


def _float_input():
    from onnxmltools.convert.common.data_types import FloatTensorType

    return [("input", FloatTensorType([None, N_FEATURES]))]


def _lgbm(d: _Data):
    import lightgbm

    return lightgbm.LGBMClassifier(n_estimators=30, num_leaves=15, random_state=SEED, deterministic=True,
                                   n_jobs=1, verbose=-1).fit(d.X_train, d.y_train)


def b_lightgbm_zipmap(d: _Data, path: Path) -> _Built:
    from onnxmltools import convert_lightgbm

    onx = convert_lightgbm(_lgbm(d), initial_types=_float_input(), target_opset=15)
    onnx.save(onx, str(path))
    return _Built("onnxmltools", INT_CLASSES, "node attribute classlabels_int64s", label_output="label",
                  notes="LGBMClassifier, default ZipMap")


def b_lightgbm_nozipmap(d: _Data, path: Path) -> _Built:
    from onnxmltools import convert_lightgbm

    onx = convert_lightgbm(_lgbm(d), initial_types=_float_input(), target_opset=15, zipmap=False)
    onnx.save(onx, str(path))
    return _Built("onnxmltools", INT_CLASSES, "node attribute classlabels_int64s", label_output="label",
                  notes="LGBMClassifier, zipmap=False")


def b_xgboost(d: _Data, path: Path) -> _Built:
    import xgboost
    from onnxmltools import convert_xgboost

    clf = xgboost.XGBClassifier(n_estimators=30, max_depth=4, random_state=SEED, n_jobs=1,
                                tree_method="exact").fit(d.X_train, d.y_train)
    onx = convert_xgboost(clf, initial_types=_float_input(), target_opset=15)
    onnx.save(onx, str(path))
    return _Built("onnxmltools", INT_CLASSES, "node attribute classlabels_int64s", label_output="label",
                  notes="XGBClassifier (multi:softprob), default export (no ZipMap)")


def b_catboost(d: _Data, path: Path) -> _Built:
    import catboost

    clf = catboost.CatBoostClassifier(iterations=40, depth=4, random_seed=SEED, verbose=False,
                                      thread_count=1, allow_writing_files=False).fit(d.X_train, d.y_train)
    clf.save_model(str(path), format="onnx")
    return _Built("catboost", INT_CLASSES, "node attribute classlabels_int64s", label_output="label",
                  notes="CatBoost's own save_model(format='onnx')")


# ------------------------------------------------------------------------------------ torch


def _torch_net(d: _Data, softmax: bool):
    import torch

    torch.manual_seed(SEED)
    layers = [torch.nn.Linear(N_FEATURES, 32), torch.nn.ReLU(), torch.nn.Linear(32, N_CLASSES)]
    net = torch.nn.Sequential(*layers)
    X = torch.tensor(d.X_train, dtype=torch.float32)
    y = torch.tensor(d.y_train)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(150):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(X), y)
        loss.backward()
        opt.step()
    if softmax:
        net = torch.nn.Sequential(*net, torch.nn.Softmax(dim=1))
    return net.eval()


def _torch_export(d: _Data, path: Path, *, softmax: bool, dynamo: bool, dynamic: bool,
                  classes_meta: Optional[Sequence[str]]) -> str:
    import torch

    net = _torch_net(d, softmax)
    x = torch.zeros(1, N_FEATURES)
    out_name = "probabilities" if softmax else "logits"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            kw = {"dynamic_shapes": ({0: torch.export.Dim("batch")},)} if dynamic else {}
            torch.onnx.export(net, (x,), str(path), input_names=["input"], output_names=[out_name],
                              dynamo=True, verbose=False, **kw)
        else:
            kw = {"dynamic_axes": {"input": {0: "batch"}, out_name: {0: "batch"}}} if dynamic else {}
            torch.onnx.export(net, (x,), str(path), input_names=["input"], output_names=[out_name],
                              dynamo=False, **kw)
    proto = onnx.load(str(path))
    if classes_meta is not None:
        helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props},
                                       "classes": json.dumps(list(classes_meta))})
    onnx.save(proto, str(path))  # one self-contained file (no external data)
    return out_name


def _torch_built(out: str, *, softmax: bool, meta: bool, notes: str) -> _Built:
    flags: tuple[str, ...] = () if softmax else ("--output-kind", "logits")
    if not meta:
        flags += ("--classes", ",".join(STR_CLASSES))
    return _Built("torch.onnx", STR_CLASSES, "metadata_props classes (JSON list)" if meta else "none",
                  score_output=out, flags=flags, notes=notes)


def b_torch_legacy_logits_batch1(d: _Data, path: Path) -> _Built:
    out = _torch_export(d, path, softmax=False, dynamo=False, dynamic=False, classes_meta=None)
    return _torch_built(out, softmax=False, meta=False, notes="dynamo=False, no dynamic axes: input fixed to [1,20]")


def b_torch_legacy_logits_dynamic_meta(d: _Data, path: Path) -> _Built:
    out = _torch_export(d, path, softmax=False, dynamo=False, dynamic=True, classes_meta=STR_CLASSES)
    return _torch_built(out, softmax=False, meta=True, notes="dynamo=False, dynamic batch axis, classes in metadata")


def b_torch_legacy_softmax_dynamic(d: _Data, path: Path) -> _Built:
    out = _torch_export(d, path, softmax=True, dynamo=False, dynamic=True, classes_meta=None)
    return _torch_built(out, softmax=True, meta=False, notes="dynamo=False, ends in Softmax, dynamic batch")


def b_torch_dynamo_logits_batch1(d: _Data, path: Path) -> _Built:
    out = _torch_export(d, path, softmax=False, dynamo=True, dynamic=False, classes_meta=None)
    return _torch_built(out, softmax=False, meta=False, notes="default (dynamo) exporter, input fixed to [1,20]")


def b_torch_dynamo_softmax_dynamic_meta(d: _Data, path: Path) -> _Built:
    out = _torch_export(d, path, softmax=True, dynamo=True, dynamic=True, classes_meta=STR_CLASSES)
    return _torch_built(out, softmax=True, meta=True,
                        notes="default (dynamo) exporter, dynamic_shapes batch, Softmax, classes in metadata")


# ------------------------------------------------------------------------------- hand-built


def _weights(d: _Data) -> tuple[np.ndarray, np.ndarray]:
    clf = _logreg(d)
    return clf.coef_.T.astype(np.float64), clf.intercept_.astype(np.float64)


def _save(path: Path, nodes, inputs, outputs, inits, *, meta: Optional[Sequence[str]] = None,
          ml: bool = False) -> None:
    graph = helper.make_graph(nodes, "zoo", inputs, outputs, inits)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("ai.onnx.ml", 3)] if ml else [])
    model = helper.make_model(graph, opset_imports=opsets, producer_name="triage-zoo")
    model.ir_version = 8
    if meta is not None:
        helper.set_model_props(model, {"classes": json.dumps(list(meta))})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _linear_softmax(W: np.ndarray, b: np.ndarray, x: str, dtype: np.dtype) -> tuple[list, list]:
    inits = [numpy_helper.from_array(W.astype(dtype), "W"), numpy_helper.from_array(b.astype(dtype), "B")]
    nodes = [helper.make_node("MatMul", [x, "W"], ["z"]), helper.make_node("Add", ["z", "B"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1)]
    return nodes, inits


def _hand_built(notes: str, *, meta: bool = True, label: Optional[str] = None, strings: bool = False) -> _Built:
    return _Built("onnx.helper", STR_CLASSES if strings else INT_CLASSES,
                  "metadata_props classes (JSON list)" if meta else "string initializer read by the label output",
                  label_output=label, score_output=None if label else "probabilities", notes=notes,
                  string_labels=strings)


def b_onnx_float16_input(d: _Data, path: Path) -> _Built:
    W, b = _weights(d)
    nodes, inits = _linear_softmax(W, b, "x32", np.float32)
    nodes.insert(0, helper.make_node("Cast", ["input"], ["x32"], to=TensorProto.FLOAT))
    _save(path, nodes, [helper.make_tensor_value_info("input", TensorProto.FLOAT16, ["N", N_FEATURES])],
          [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", N_CLASSES])], inits,
          meta=INT_CLASSES)
    return _hand_built("float16 input -> Cast -> MatMul -> Add -> Softmax")


def b_onnx_float64_probabilities(d: _Data, path: Path) -> _Built:
    W, b = _weights(d)
    nodes, inits = _linear_softmax(W, b, "input", np.float64)
    _save(path, nodes, [helper.make_tensor_value_info("input", TensorProto.DOUBLE, ["N", N_FEATURES])],
          [helper.make_tensor_value_info("probabilities", TensorProto.DOUBLE, ["N", N_CLASSES])], inits,
          meta=INT_CLASSES)
    return _hand_built("double input, double probabilities")


def b_onnx_fixed_batch4(d: _Data, path: Path) -> _Built:
    W, b = _weights(d)
    nodes, inits = _linear_softmax(W, b, "input", np.float32)
    _save(path, nodes, [helper.make_tensor_value_info("input", TensorProto.FLOAT, [4, N_FEATURES])],
          [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [4, N_CLASSES])], inits,
          meta=INT_CLASSES)
    return _hand_built("input fixed to [4,20]")


def _label_graph(d: _Data, path: Path, extractor: str) -> None:
    W, b = _weights(d)
    nodes, inits = _linear_softmax(W, b, "input", np.float32)
    names = np.array(list(STR_CLASSES), dtype=object)
    inits.append(numpy_helper.from_array(names, "class_names"))
    nodes.append(helper.make_node("ArgMax", ["probabilities"], ["idx"], axis=1, keepdims=0))
    if extractor == "gather":
        nodes.append(helper.make_node("Gather", ["class_names", "idx"], ["label"], axis=0))
    else:
        inits.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), "flat"))
        nodes.append(helper.make_node("ArrayFeatureExtractor", ["class_names", "idx"], ["picked"], domain="ai.onnx.ml"))
        nodes.append(helper.make_node("Reshape", ["picked", "flat"], ["label"]))
    _save(path, nodes, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", N_FEATURES])],
          [helper.make_tensor_value_info("label", TensorProto.STRING, ["N"]),
           helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", N_CLASSES])],
          inits, ml=extractor != "gather")


def b_onnx_label_gather_initializer(d: _Data, path: Path) -> _Built:
    _label_graph(d, path, "gather")
    return _hand_built("class names only in a string initializer; ArgMax -> Gather makes the label",
                       meta=False, label="label", strings=True)


def b_onnx_label_arrayfeatureextractor(d: _Data, path: Path) -> _Built:
    _label_graph(d, path, "afe")
    return _hand_built("class names only in a string initializer; ArgMax -> ArrayFeatureExtractor makes the label",
                       meta=False, label="label", strings=True)


# ---------------------------------------------------------------------------------- the zoo

BUILDERS: dict[str, Callable[[_Data, Path], _Built]] = {
    "skl2onnx-logreg-zipmap-dict": b_skl_logreg_zipmap_dict,
    "skl2onnx-logreg-nozipmap": b_skl_logreg_nozipmap,
    "skl2onnx-logreg-zipmap-columns": b_skl_logreg_zipmap_columns,
    "skl2onnx-logreg-float64-zipmap": b_skl_logreg_f64_zipmap,
    "skl2onnx-logreg-float64-nozipmap": b_skl_logreg_f64_nozipmap,
    "skl2onnx-logreg-string-labels": b_skl_logreg_string_labels,
    "skl2onnx-logreg-string-labels-nozipmap": b_skl_logreg_string_labels_nozipmap,
    "skl2onnx-mlp-nozipmap": b_skl_mlp_nozipmap,
    "skl2onnx-svc-proba": b_skl_svc_proba,
    "skl2onnx-randomforest": b_skl_random_forest,
    "skl2onnx-decisiontree-nozipmap": b_skl_decision_tree,
    "skl2onnx-histgb": b_skl_hist_gb,
    "skl2onnx-pipeline-scaler-logreg": b_skl_pipeline_scaler_logreg,
    "onnxmltools-lightgbm-zipmap": b_lightgbm_zipmap,
    "onnxmltools-lightgbm-nozipmap": b_lightgbm_nozipmap,
    "onnxmltools-xgboost": b_xgboost,
    "catboost-native": b_catboost,
    "torch-legacy-logits-batch1": b_torch_legacy_logits_batch1,
    "torch-legacy-logits-dynamic-meta": b_torch_legacy_logits_dynamic_meta,
    "torch-legacy-softmax-dynamic": b_torch_legacy_softmax_dynamic,
    "torch-dynamo-logits-batch1": b_torch_dynamo_logits_batch1,
    "torch-dynamo-softmax-dynamic-meta": b_torch_dynamo_softmax_dynamic_meta,
    "onnx-float16-input": b_onnx_float16_input,
    "onnx-float64-probabilities": b_onnx_float64_probabilities,
    "onnx-fixed-batch4": b_onnx_fixed_batch4,
    "onnx-label-gather-initializer": b_onnx_label_gather_initializer,
    "onnx-label-arrayfeatureextractor": b_onnx_label_arrayfeatureextractor,
}

# Kinds the exporter itself cannot write here; left out of the matrix, with the reason.
KNOWN_EXPORTER_BUGS = {
    "skl2onnx-histgb": "skl2onnx 1.20 cannot convert scikit-learn 1.9's HistGradientBoostingClassifier "
                       "(TreeEnsembleClassifier attribute error)",
}


def available_kinds() -> list[str]:
    """Every kind the matrix covers. The test extra installs every exporter, so a missing one
    is an error in the tests, not a reason to skip."""
    return [k for k in BUILDERS if k not in KNOWN_EXPORTER_BUGS]


_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}


def ort_predict(path: Path, X: np.ndarray, built: _Built) -> list[str]:
    """onnxruntime's own prediction per row: the label output when there is one, else argmax of
    the score output mapped to the class names. Fixed-batch graphs run in chunks of their batch."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    Xc = X.astype(_ORT_DTYPES[inp.type])
    batch = inp.shape[0] if inp.shape and isinstance(inp.shape[0], int) else len(X)
    names = [o.name for o in sess.get_outputs()]
    if built.expect_argmax:
        probs = sess.run([n for n in names if "prob" in n][:1], {inp.name: Xc})[0]
        return [str(max(row, key=row.get)) for row in probs]  # ZipMap rows: {class: p}
    label = built.label_output
    if label is not None and label not in names:  # skl2onnx: output_label, or label without ZipMap
        label = next(n for n in names if "label" in n)
    wanted = label or built.score_output
    assert wanted in [o.name for o in sess.get_outputs()], (wanted, [o.name for o in sess.get_outputs()])
    parts = []
    for start in range(0, len(X), batch):
        chunk = Xc[start:start + batch]
        pad = batch - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad, X.shape[1]), chunk.dtype)])
        parts.append(np.asarray(sess.run([wanted], {inp.name: chunk})[0])[: len(chunk) - pad])
    out = np.concatenate(parts)
    if label:
        return [v.decode() if isinstance(v, bytes) else str(v) for v in out.reshape(-1)]
    return [built.classes[i] for i in out.reshape(len(X), -1).argmax(axis=1)]


def _without_zipmap(path: Path) -> Path:
    """A copy of the graph without its ZipMap node and output (plain onnx surgery)."""
    proto = onnx.load(str(path))
    zipmap = next(n for n in proto.graph.node if n.op_type == "ZipMap")
    proto.graph.node.remove(zipmap)
    kept = [o for o in proto.graph.output if o.name != zipmap.output[0]]
    del proto.graph.output[:]
    proto.graph.output.extend(kept)
    out = path.with_name(path.stem + ".ort.onnx")
    onnx.save(proto, str(out))
    return out


class ZooSkip(Exception):
    """The exporter cannot write this kind here (it raises, or onnxruntime refuses its output)."""


def class_source(path: Path) -> str:
    """Where the graph keeps its class names (as found by reading it), or "none"."""
    proto = onnx.load(str(path))
    found = []
    meta = {p.key for p in proto.metadata_props} & {"classes", "class_names", "labels", "names"}
    if meta:
        found.append(f"metadata_props `{sorted(meta)[0]}`")
    attrs = sorted({f"{n.op_type}.{a.name}" for n in proto.graph.node for a in n.attribute
                    if a.name.startswith("classlabels_")})
    if attrs:
        found.append("node attribute " + ", ".join(attrs))
    inits = {i.name for i in proto.graph.initializer}
    for n in proto.graph.node:
        if n.op_type in ("ArrayFeatureExtractor", "Gather") and n.input and n.input[0] in inits:
            init = next(i for i in proto.graph.initializer if i.name == n.input[0])
            if init.data_type in (TensorProto.STRING, TensorProto.INT64, TensorProto.INT32) and len(init.dims) == 1:
                found.append(f"initializer `{init.name}` ({TensorProto.DataType.Name(init.data_type).lower()}) "
                             f"-> {n.op_type}")
                break
    return "; ".join(found) or "none"


def build_one(kind: str, root: Path, data: Optional[_Data] = None) -> ZooModel:
    """Build one kind; raises ``ZooSkip`` when the exporter's own output does not load."""
    d = data or _data()
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{kind}.onnx"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            built = BUILDERS[kind](d, path)
    except Exception as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), "")[:300]
        raise ZooSkip(f"{kind}: the exporter failed: {type(exc).__name__}: {first}") from exc
    ort_path = _without_zipmap(path) if built.drop_zipmap_for_ort else path
    try:
        ort.InferenceSession(str(ort_path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ZooSkip(f"{kind}: onnxruntime refuses the exporter's own output: {str(exc).splitlines()[0]}") from exc
    reference = root / f"{kind}.reference.npz"
    y = np.asarray(built.train_names or built.classes)[d.y_train]  # the true label names
    np.savez(reference, X=d.X_train, y=y)
    return ZooModel(
        kind=kind, path=path, X=d.X.copy(), reference=reference, flags=built.flags,
        expected=ort_predict(ort_path, d.X, built), exporter=built.exporter, classes=built.classes,
        class_source=class_source(path), notes=built.notes,
    )


def build_zoo(root: Path, kinds: Optional[Sequence[str]] = None,
              skipped: Optional[dict[str, str]] = None) -> list[ZooModel]:
    """Build ``kinds`` (default: every kind whose exporter is installed) into ``root``.
    Kinds the exporter cannot write a loadable model for are left out (and their reason put in
    ``skipped`` when given)."""
    d = _data()
    wanted = list(kinds) if kinds is not None else available_kinds()
    unknown = [k for k in wanted if k not in BUILDERS]
    if unknown:
        raise KeyError(f"unknown zoo kinds {unknown}; known: {list(BUILDERS)}")
    out = []
    for k in wanted:
        try:
            out.append(build_one(k, Path(root), d))
        except ZooSkip as exc:
            if skipped is not None:
                skipped[k] = str(exc)
    return out


def describe(model: ZooModel) -> dict[str, str]:
    """Inputs and outputs as onnxruntime reports them (name type shape)."""
    sess = ort.InferenceSession(str(model.path), providers=["CPUExecutionProvider"])

    def fmt(nodes) -> str:
        return "; ".join(f"`{n.name}` {n.type.replace('tensor(', '').rstrip(')') if n.type.startswith('tensor(') else n.type} "
                         f"{list(n.shape) if n.shape is not None else ''}".strip() for n in nodes)

    return {"inputs": fmt(sess.get_inputs()), "outputs": fmt(sess.get_outputs())}


if __name__ == "__main__":
    import time

    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/zoo")
    for kind in available_kinds():
        t = time.monotonic()
        try:
            m = build_one(kind, out_dir)
        except ZooSkip as exc:
            print(f"{kind:42s} SKIPPED {exc}")
            continue
        info = describe(m)
        print(f"{kind:42s} {time.monotonic() - t:5.2f}s  in: {info['inputs']}  out: {info['outputs']}  "
              f"flags: {' '.join(m.flags)}")


# --- served labels: the same samples and the same verdict in process and through `triage serve` ---


def sample_records(model: ZooModel) -> list[tuple[bytes, bytes]]:
    """(key, value) of a sample message per row of ``model.X``, ids ``row-0000``, ..."""
    ts = 1_764_070_000_000
    return [(f"row-{i:04d}".encode(), json.dumps({"id": f"row-{i:04d}", "features": row.tolist(), "ts": ts + i}).encode())
            for i, row in enumerate(model.X)]


def labels_by_id(outputs: Iterable[tuple[str, Optional[bytes]]],
                 topics: TopicSettings) -> tuple[dict[str, list[str]], list[bytes]]:
    """Sample id -> every label a scorer's (topic, value) outputs gave it, and the dead letters."""
    labels: dict[str, list[str]] = {}
    dead: list[bytes] = []
    for topic, value in outputs:
        if topic == topics.dlq_topic:
            dead.append(value or b"")
            continue
        doc = json.loads(value or b"{}")
        if topic == topics.predictions_topic:
            labels.setdefault(doc["id"], []).append(doc["label"])
        elif topic == topics.review_topic:
            labels.setdefault(doc["id"], []).append(doc["predicted"])
    return labels, dead


def assert_labelled_like_onnxruntime(model: ZooModel, labels: dict[str, list[str]], context: str = "") -> None:
    """One label per sample, each equal to onnxruntime's own prediction (``context``: a log tail)."""
    kind = model.kind
    ids = [f"row-{i:04d}" for i in range(len(model.X))]
    missing = [i for i in ids if i not in labels]
    assert not missing, f"{kind}: {len(missing)} of {len(ids)} samples got no output\n{context}"
    doubled = {i: v for i, v in labels.items() if len(v) != 1}
    assert not doubled, f"{kind}: samples with more than one output: {list(doubled.items())[:5]}"
    assert set(labels) == set(ids)
    wrong = [(i, labels[i][0], e) for i, e in zip(ids, model.expected) if labels[i][0] != e]
    assert not wrong, (f"{kind}: triage disagrees with onnxruntime on {len(wrong)}/{len(ids)} rows, "
                       f"e.g. (id, triage, onnxruntime) {wrong[:5]}")
