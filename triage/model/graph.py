"""What a classifier graph says about itself. Pure: an onnx ModelProto in, facts out.

Exporters put the same facts in different places: skl2onnx in classifier and ZipMap
attributes or in a ``classes`` constant read by an ArrayFeatureExtractor, onnxmltools in
TreeEnsembleClassifier attributes, PyTorch nowhere (metadata at best). This module looks
in all of them and says where it looked when it finds nothing.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

FLOAT_DTYPES: dict[int, type] = {
    TensorProto.FLOAT16: np.float16, TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64,
}
METADATA_KEYS = ("classes", "class_names", "labels", "names")
_CLASS_ATTRS = ("classlabels_strings", "classlabels_int64s", "classlabels_ints")
_PASS_THROUGH = {"Cast", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Flatten"}
LOOKED = (
    "metadata keys " + "/".join(METADATA_KEYS) + ", ZipMap and classifier node attributes "
    "(classlabels_*), and constants read by a label extractor (ArrayFeatureExtractor or Gather on an ArgMax)"
)

Dim = Union[int, str, None]


@dataclass(frozen=True)
class Port:
    """One graph input or output: name, kind, element type and shape as declared."""

    name: str
    kind: str  # "tensor" | "sequence" | "map" | "other"
    elem: Optional[int] = None
    shape: Optional[tuple[Dim, ...]] = None

    @property
    def is_float_tensor(self) -> bool:
        return self.kind == "tensor" and self.elem in FLOAT_DTYPES

    def describe(self) -> str:
        if self.kind != "tensor":
            return f"{self.name} ({self.kind})"
        elem = TensorProto.DataType.Name(self.elem).lower() if self.elem else "?"
        dims = "?" if self.shape is None else ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name} {elem}[{dims}]"


@dataclass(frozen=True)
class ClassNames:
    names: tuple[str, ...]
    source: str


def _port(info: onnx.ValueInfoProto) -> Port:
    t = info.type
    which = t.WhichOneof("value")
    if which == "tensor_type":
        tt = t.tensor_type
        shape: Optional[tuple[Dim, ...]] = None
        if tt.HasField("shape"):
            shape = tuple(
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim
            )
        return Port(info.name, "tensor", tt.elem_type, shape)
    kinds = {"sequence_type": "sequence", "map_type": "map"}
    return Port(info.name, kinds.get(which or "", "other"))


def graph_inputs(proto: onnx.ModelProto) -> list[Port]:
    """Inputs a caller must feed (old IR versions also list initializers as inputs)."""
    constants = {t.name for t in proto.graph.initializer}
    return [_port(i) for i in proto.graph.input if i.name not in constants]


def graph_outputs(proto: onnx.ModelProto) -> list[Port]:
    return [_port(o) for o in proto.graph.output]


def signature(proto: onnx.ModelProto) -> str:
    """``inputs: X float[?,64]; outputs: label int64[?], probabilities float[?,10]``."""
    ins = ", ".join(p.describe() for p in graph_inputs(proto)) or "none"
    outs = ", ".join(p.describe() for p in graph_outputs(proto)) or "none"
    return f"inputs: {ins}; outputs: {outs}"


def _names(values: list[object]) -> tuple[str, ...]:
    out = []
    for v in values:
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, (float, np.floating)) and float(v).is_integer():
            v = int(v)
        out.append(str(v))
    return tuple(out)


def _from_metadata(raw: str) -> Optional[tuple[str, ...]]:
    """A JSON list, a dict of index -> name (JSON or Python literal, as YOLO writes), or CSV."""
    parsed: object = None
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        try:
            parsed = ast.literal_eval(raw)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            parsed = None
    if isinstance(parsed, (list, tuple)):
        return _names(list(parsed)) or None
    if isinstance(parsed, dict):
        try:
            return _names([parsed[k] for k in sorted(parsed, key=lambda k: int(k))]) or None
        except (TypeError, ValueError):
            return None
    names = tuple(c.strip() for c in raw.split(",") if c.strip())
    return names if len(names) >= 2 else None


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    found = {t.name: numpy_helper.to_array(t) for t in graph.initializer
             if t.data_location != TensorProto.EXTERNAL}  # weights elsewhere are never class names
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    found[node.output[0]] = numpy_helper.to_array(attr.t)
    return found


def _comes_from_argmax(name: str, producers: dict[str, onnx.NodeProto], hops: int = 4) -> bool:
    node = producers.get(name)
    while node is not None and hops > 0:
        if node.op_type == "ArgMax":
            return True
        if node.op_type not in _PASS_THROUGH or not node.input:
            return False
        node, hops = producers.get(node.input[0]), hops - 1
    return False


def _from_label_extractor(graph: onnx.GraphProto) -> Optional[ClassNames]:
    constants = _constants(graph)
    producers = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        if node.op_type not in ("ArrayFeatureExtractor", "Gather") or len(node.input) < 2:
            continue
        data = constants.get(node.input[0])
        if data is None or data.ndim != 1 or len(data) < 2 or not _comes_from_argmax(node.input[1], producers):
            continue
        return ClassNames(_names(data.tolist()), f"constant {node.input[0]!r} read by {node.op_type}")
    return None


def class_names(proto: onnx.ModelProto) -> Optional[ClassNames]:
    """Class names in the order of the probability columns, from wherever the exporter put them."""
    metadata = {p.key: p.value for p in proto.metadata_props}
    for key in METADATA_KEYS:
        if key in metadata:
            names = _from_metadata(metadata[key])
            if names:
                return ClassNames(names, f"metadata {key!r}")
    nodes = sorted(proto.graph.node, key=lambda n: n.op_type != "ZipMap")  # ZipMap names the columns it maps
    for node in nodes:
        for attr in node.attribute:
            if attr.name in _CLASS_ATTRS:
                values = list(attr.strings) or list(attr.ints)
                if values:
                    return ClassNames(_names(values), f"{node.op_type} attribute {attr.name}")
    return _from_label_extractor(proto.graph)


def _elem_type(proto: onnx.ModelProto, name: str) -> int:
    """The element type of an inner tensor: from shape inference, else a Cast's target, else float."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
        for info in list(inferred.graph.value_info) + list(inferred.graph.output):
            if info.name == name and info.type.tensor_type.elem_type:
                return int(info.type.tensor_type.elem_type)
    except Exception:  # inference is best effort: some custom domains have no shape functions
        pass
    for node in proto.graph.node:
        if name in node.output and node.op_type == "Cast":
            return next(int(a.i) for a in node.attribute if a.name == "to")
    return TensorProto.FLOAT


def bypass_zipmap(proto: onnx.ModelProto, requested: Optional[str] = None) -> Optional[str]:
    """When a ZipMap (a list of dicts, slow to read) produces a graph output, replace that output
    by the ZipMap's input tensor and return the tensor's name. Mutates ``proto``."""
    outputs = {o.name for o in proto.graph.output}
    for node in proto.graph.node:
        if node.op_type != "ZipMap" or node.output[0] not in outputs:
            continue
        if requested is not None and requested not in (node.output[0], node.input[0]):
            continue  # (the input's name: what imports before the adapter recorded as output_name)
        name = node.input[0]
        if name not in outputs:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(name, _elem_type(proto, name), None))
        # Drop the ZipMap itself: never read, and skl2onnx's float64 graphs feed it doubles,
        # which onnxruntime refuses to load.
        kept = [o for o in proto.graph.output if o.name != node.output[0]]
        del proto.graph.output[:]
        proto.graph.output.extend(kept)
        proto.graph.node.remove(node)
        return name
    return None
