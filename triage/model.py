"""Load any ONNX classifier and expose one call: a batch of features in, (N, C) probabilities out.

What it needs (input name, feature count, probability output, class names) is read
from the graph and its metadata; flags fill the gaps, and an inspection error names
the missing piece and the flag that supplies it. skl2onnx's ZipMap (a list of dicts,
slow to read) is bypassed by exposing its input tensor as an extra graph output.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from triage.errors import ModelInspectionError, ModelLoadError

_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64}
_CLASS_ATTRS = ("classlabels_strings", "classlabels_int64s", "classlabels_ints")


@dataclass(frozen=True)
class ModelSpec:
    """What inspection found out about a graph."""

    input_name: str
    input_dtype: type
    feature_count: int
    output_name: str
    classes: tuple[str, ...]
    output_kind: str  # "probabilities" | "logits"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _classes_from_graph(graph: onnx.GraphProto, metadata: dict[str, str]) -> Optional[list[str]]:
    for key in ("classes", "class_names", "labels"):
        if key in metadata:
            raw = metadata[key]
            try:
                parsed = json.loads(raw)
                if isinstance(parsed, list):
                    return [str(c) for c in parsed]
            except json.JSONDecodeError:
                return [c.strip() for c in raw.split(",") if c.strip()]
    for node in graph.node:
        for attr in node.attribute:
            if attr.name in _CLASS_ATTRS:
                values = list(attr.strings) or list(attr.ints)
                if values:
                    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]
    return None


def _expose_zipmap_input(model: onnx.ModelProto) -> Optional[str]:
    """If a ZipMap feeds a graph output, add its input tensor as an output; return its name."""
    outputs = {o.name for o in model.graph.output}
    for node in model.graph.node:
        if node.op_type == "ZipMap" and node.output[0] in outputs:
            name = node.input[0]
            if name not in outputs:
                model.graph.output.append(
                    onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                )
            return name
    return None


def _pick_output(
    session: ort.InferenceSession, requested: Optional[str], path: str
) -> str:
    outs = session.get_outputs()
    names = [o.name for o in outs]
    if requested:
        if requested not in names:
            raise ModelInspectionError(
                path, f"the output {requested!r} (outputs are {names})", "--output-name"
            )
        return requested
    floats = [o for o in outs if o.type in _FLOAT_TYPES and len(o.shape or []) in (0, 2)]
    if len(floats) == 1:
        return floats[0].name
    named = [o for o in floats if any(k in o.name.lower() for k in ("prob", "score", "logit"))]
    if len(named) == 1:
        return named[0].name
    raise ModelInspectionError(
        path, f"which output holds class probabilities (candidates: {names})", "--output-name"
    )


class OnnxClassifier:
    """An onnxruntime session plus its spec. ``predict_proba`` is the only hot call."""

    def __init__(
        self,
        path: Path,
        *,
        classes: Optional[Sequence[str]] = None,
        input_name: Optional[str] = None,
        output_name: Optional[str] = None,
        feature_count: Optional[int] = None,
        output_kind: str = "probabilities",
        threads: int = 1,
    ) -> None:
        self.path = Path(path)
        try:
            proto = onnx.load(str(self.path))
        except Exception as exc:  # onnx raises DecodeError, OSError, ...
            raise ModelLoadError(str(path), f"{type(exc).__name__}: {exc}") from exc
        metadata = {p.key: p.value for p in proto.metadata_props}
        zipmap_input = None if output_name else _expose_zipmap_input(proto)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelLoadError(str(path), f"onnxruntime refused it: {exc}") from exc
        self.spec = self._inspect(
            proto, metadata, zipmap_input or output_name, classes, input_name,
            feature_count, output_kind,
        )

    def _inspect(
        self,
        proto: onnx.ModelProto,
        metadata: dict[str, str],
        output_name: Optional[str],
        classes: Optional[Sequence[str]],
        input_name: Optional[str],
        feature_count: Optional[int],
        output_kind: str,
    ) -> ModelSpec:
        path = str(self.path)
        inputs = {i.name: i for i in self.session.get_inputs()}
        if input_name is None:
            if len(inputs) != 1:
                raise ModelInspectionError(
                    path, f"which input takes the features (inputs are {list(inputs)})",
                    "--input-name",
                )
            input_name = next(iter(inputs))
        if input_name not in inputs:
            raise ModelInspectionError(
                path, f"the input {input_name!r} (inputs are {list(inputs)})", "--input-name"
            )
        node = inputs[input_name]
        if node.type not in _FLOAT_TYPES:
            raise ModelLoadError(path, f"input {input_name!r} is {node.type}; need float or double")
        shape = node.shape or []
        graph_features = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None
        if feature_count is not None and graph_features is not None and feature_count != graph_features:
            raise ModelLoadError(
                path, f"feature count {feature_count} given, but the graph's input takes {graph_features}"
            )
        features = graph_features or feature_count
        if not features:
            raise ModelInspectionError(path, "the feature count", "--feature-count or --reference")
        out = _pick_output(self.session, output_name, path)
        names = list(classes) if classes else _classes_from_graph(proto.graph, metadata)
        if not names:
            raise ModelInspectionError(path, "the class names", "--classes")
        n_out = self.session.run([out], {input_name: np.zeros((1, features), _FLOAT_TYPES[node.type])})
        width = np.asarray(n_out[0]).reshape(1, -1).shape[1]
        if width != len(names):
            raise ModelLoadError(
                path, f"the output {out!r} has {width} columns but {len(names)} classes are known "
                f"({names[:5]}...); fix --classes or --output-name",
            )
        return ModelSpec(input_name, _FLOAT_TYPES[node.type], int(features), out,
                         tuple(names), output_kind)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(N, F) features -> (N, C) float64 probabilities. One ONNX run per call."""
        spec = self.spec
        raw = self.session.run([spec.output_name], {spec.input_name: X.astype(spec.input_dtype, copy=False)})[0]
        out = np.asarray(raw, dtype=np.float64).reshape(len(X), -1)
        if spec.output_kind == "logits":
            out = out - out.max(axis=1, keepdims=True)
            np.exp(out, out=out)
            out /= out.sum(axis=1, keepdims=True)
        return out
