"""Real ONNX classifiers that load fine and fail only at run time, in onnxruntime itself.

Each takes ``features`` float inputs with a dynamic batch axis, outputs softmax probabilities
over ``classes`` (named in the metadata) and fails on a different set of runs:

- ``every_row``: every run (a Reshape to [N, F + 1], computed at run time from the input's shape);
- ``batch_of_one``: every batch but one row (a Reshape to the fixed shape [1, F]);
- ``seen_sizes``: every batch larger than ``seen`` rows (it adds the first N rows of a [seen, F]
  table of zeros, like a model exported with a fixed-length position table): it passes a
  canary of ``seen`` rows and fails on the larger batches a scorer takes;
- ``index_by_first_feature``: rows whose first feature is not in [-table, table) (a Gather
  indexed by that feature): the rows are at fault, not the model.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DIGITS = tuple(str(d) for d in range(10))


def onnx_model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], features: int = 64,
               classes: Sequence[str] = DIGITS, *, batch: Union[int, str] = "N",
               out_shape: Optional[list[Union[int, str]]] = None) -> bytes:
    """A graph from input X [batch, features] to "probabilities" (``out_shape``, default [batch, C]),
    its class names in the metadata."""
    graph = helper.make_graph(
        nodes, "faulty", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [batch, features])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, out_shape or [batch, len(classes)])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    m.metadata_props.add(key="classes", value=",".join(classes))
    onnx.checker.check_model(m)
    return m.SerializeToString()


def _weights(features: int, classes: int) -> onnx.TensorProto:
    W = np.random.default_rng(0).normal(scale=0.1, size=(features, classes)).astype(np.float32)
    return numpy_helper.from_array(W, "W")


def head(x: str, features: int = 64, classes: int = 10) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    return ([helper.make_node("MatMul", [x, "W"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)], [_weights(features, classes)])


def _reshaped(shape: list[onnx.NodeProto], inits: list[onnx.TensorProto], features: int,
              classes: Sequence[str]) -> bytes:
    """X reshaped to the tensor ``shape`` (its nodes end in "shape") and back to [N, F], then the head."""
    head_nodes, weights = head("Xr", features, len(classes))
    back = numpy_helper.from_array(np.array([-1, features], dtype=np.int64), "back")
    nodes = [*shape, helper.make_node("Reshape", ["X", "shape"], ["Xs"]), helper.make_node("Reshape", ["Xs", "back"], ["Xr"])]
    return onnx_model(nodes + head_nodes, inits + weights + [back], features, classes)


def every_row(features: int = 64, classes: Sequence[str] = DIGITS) -> bytes:
    # from Shape(X) so that onnxruntime cannot fold it (and refuse it) when the session is made
    plus = numpy_helper.from_array(np.array([0, 1], dtype=np.int64), "plus")
    return _reshaped([helper.make_node("Shape", ["X"], ["xs"]), helper.make_node("Add", ["xs", "plus"], ["shape"])],
                     [plus], features, classes)


def batch_of_one(features: int = 64, classes: Sequence[str] = DIGITS) -> bytes:
    return _reshaped([helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(
        np.array([1, features], dtype=np.int64)))], [], features, classes)


def seen_sizes(seen: int = 32, features: int = 64, classes: Sequence[str] = DIGITS) -> bytes:
    inits = [numpy_helper.from_array(np.zeros((seen, features), dtype=np.float32), "Z"),
             numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
             numpy_helper.from_array(np.array(0, dtype=np.int64), "start"),
             numpy_helper.from_array(np.array(1, dtype=np.int64), "step")]
    nodes = [helper.make_node("Shape", ["X"], ["xs"]), helper.make_node("Gather", ["xs", "start"], ["n"]),
             helper.make_node("Range", ["start", "n", "step"], ["rows"]),
             helper.make_node("Gather", ["Z", "rows"], ["Zn"], axis=0),  # fails past row `seen`
             helper.make_node("Add", ["X", "Zn"], ["Xz"])]
    head_nodes, weights = head("Xz", features, len(classes))
    return onnx_model(nodes + head_nodes, inits + weights, features, classes)


def index_by_first_feature(table: int = 17, features: int = 64, classes: Sequence[str] = DIGITS) -> bytes:
    logits = np.random.default_rng(1).normal(size=(table, len(classes))).astype(np.float32)
    inits = [numpy_helper.from_array(logits, "T"), numpy_helper.from_array(np.array(0, dtype=np.int64), "first")]
    nodes = [helper.make_node("Gather", ["X", "first"], ["f0"], axis=1),
             helper.make_node("Cast", ["f0"], ["idx"], to=TensorProto.INT64),
             helper.make_node("Gather", ["T", "idx"], ["logits"], axis=0),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    return onnx_model(nodes, inits, features, classes)
