"""Load any ONNX classifier and expose one call: a batch of features in, (N, C) probabilities out.

What scoring needs (input, feature count, probability output, class names) is read from the
graph (``triage.model.graph``); flags fill the gaps. Every refusal names the model's inputs and
outputs and the one flag that fixes it, or says that no flag will. Handled shapes of what
exporters write:

- input float16/float32/float64, batch axis dynamic or fixed (fixed: run in chunks of that
  size, padded; a batch of 1 runs row by row), extra sample axes (e.g. N×1×8×8) reshaped from
  the flat features;
- output an N×C tensor, a ZipMap (bypassed: its input tensor becomes an output), one N-vector
  per class (skl2onnx ``zipmap='columns'``), or one column for a binary model;
- probabilities or logits (``output_kind``).

Every failure of onnxruntime while running the graph leaves this module as a triage error
naming the graph and what was run: ``ModelRunError`` when the model fails on rows it ran
before too (the model's fault), ``ScoreError`` when it runs those known-good rows at the same
batch size and fails only on these (the rows' fault; the loop's bisection finds which).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import onnx
import onnxruntime as ort

from triage.errors import ModelInspectionError, ModelLoadError, ModelRunError, ScoreError
from triage.model.graph import (
    FLOAT_DTYPES, LOOKED, Port, bypass_zipmap, class_names, graph_inputs, graph_outputs, signature,
)

log = logging.getLogger("triage.model")
_PROBABILITY_HINTS = ("prob", "score", "logit", "softmax", "output")
KNOWN_GOOD_ROWS = 32  # rows kept to tell a failing model from failing rows (``OnnxClassifier.known_good``)


def run_sizes(max_batch: int, fixed: Optional[int] = None) -> tuple[int, ...]:
    """The batch sizes a canary must pass for a scorer taking 1 to ``max_batch`` rows per run:
    1, 2, 3, every power of two below ``max_batch``, ``max_batch`` and the odd size next to it.
    A graph with a fixed batch ``fixed`` only ever sees chunks of that size, so 1, ``fixed``
    (one chunk) and ``fixed + 1`` (a padded second chunk) cover it (0: no batch axis, row by row)."""
    if fixed is not None:
        return (1, 2) if fixed <= 1 else (1, fixed, fixed + 1)
    top = max(1, max_batch)
    sizes = {1, 2, 3, top, top - 1 if top % 2 == 0 else top} | {1 << k for k in range(top.bit_length())}
    return tuple(sorted(n for n in sizes if 1 <= n <= top))


class _RunFailed(Exception):
    """One session run failed (private: ``predict_proba`` decides whose fault it is)."""

    def __init__(self, fed: str, reason: str) -> None:
        super().__init__(reason)
        self.fed = fed
        self.reason = reason


def _first_line(exc: BaseException) -> str:
    """onnxruntime's message without the C++ source location and the assertion it failed."""
    lines = str(exc).strip().splitlines()
    text = re.sub(r"/onnxruntime_src/\S+ .*? was false\. ", "", lines[0] if lines else "")
    return (text if text.startswith("[ONNXRuntimeError]") else f"{type(exc).__name__}: {text}")[:500]


@dataclass(frozen=True)
class ModelSpec:
    """What inspection found out about a graph."""

    input_name: str
    input_dtype: type
    feature_count: int
    output_name: str  # the probability tensor; for per-class columns, the first of them
    classes: tuple[str, ...]
    output_kind: str  # "probabilities" | "logits"
    batch: Optional[int] = None  # a fixed batch size the graph insists on; None = dynamic
    sample_shape: tuple[int, ...] = ()  # per-row input shape; () = flat (feature_count,)
    columns: tuple[str, ...] = ()  # per-class outputs stacked into the table
    class_source: str = "--classes"


def model_bytes(path: Path) -> bytes:
    """The model as one self-contained buffer: weights kept in external data files (PyTorch's
    exporter writes ``model.onnx.data`` next to the graph) are read in, so the bytes can be
    hashed, registered and loaded anywhere."""
    try:
        proto = onnx.load(str(path), load_external_data=False)
        if not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
            return Path(path).read_bytes()
        onnx.external_data_helper.load_external_data_for_model(proto, str(Path(path).parent))
    except Exception as exc:  # onnx raises DecodeError, OSError, ValidationError, ...
        raise ModelLoadError(str(path), f"{type(exc).__name__}: {str(exc)[:300]}; no flag changes this: is it an "
                             "ONNX file, with its external data file (if any) beside it?") from exc
    return proto.SerializeToString()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class _Feed:
    name: str
    dtype: type
    features: int
    batch: Optional[int]
    sample_shape: tuple[int, ...]


def _feed(port: Port, requested_features: Optional[int], data_features: Optional[int], where: str) -> _Feed:
    if port.elem not in FLOAT_DTYPES:
        raise ModelLoadError(where, f"input {port.describe()} is not a float tensor; triage sends float "
                             "features, so no flag changes this: export the model with a float input")
    shape = port.shape if port.shape is not None else (None, None)
    lead = shape[0] if len(shape) >= 2 else 1
    batch = lead if isinstance(lead, int) and lead > 0 else None
    rest = shape[1:] if len(shape) >= 2 else shape
    if len(shape) < 2:  # (F,): one row per run, no batch axis at all
        batch = 0
    if all(isinstance(d, int) and d > 0 for d in rest):
        graph_features = math.prod(int(d) for d in rest)  # type: ignore[arg-type]
    elif len(rest) == 1:
        graph_features = None
    else:
        raise ModelInspectionError(where, f"the per-row shape of input {port.describe()}", "a re-export with "
                                   "fixed non-batch axes (no flag can supply a multi-axis shape)")
    if requested_features is not None and graph_features is not None and requested_features != graph_features:
        raise ModelLoadError(where, f"--feature-count {requested_features} given, but input {port.describe()} "
                             f"takes {graph_features}; drop --feature-count or fix it")
    if data_features is not None and graph_features is not None and data_features != graph_features:
        raise ModelLoadError(where, f"the reference data has {data_features} features, but input {port.describe()} "
                             f"takes {graph_features}; no flag changes this: give reference data the model was made for")
    features = graph_features or requested_features or data_features
    if not features:
        raise ModelInspectionError(where, f"the feature count (input {port.describe()})",
                                   "--feature-count or --reference")
    sample = tuple(int(d) for d in rest) if len(rest) > 1 else ()  # type: ignore[arg-type]
    return _Feed(port.name, FLOAT_DTYPES[port.elem], int(features), batch, sample)


def _output_plan(outputs: list[Port], requested: Optional[str], where: str) -> tuple[str, ...]:
    """The output name(s) holding the class table: one tensor, or one column per class."""
    names = [o.name for o in outputs]
    floats = [o for o in outputs if o.is_float_tensor]
    if requested is not None:
        if requested not in [o.name for o in floats]:
            what = "is not a float tensor" if requested in names else "does not exist"
            raise ModelInspectionError(where, f"the probability output: {requested!r} {what}", "--output-name "
                                       f"(one of {', '.join(o.name for o in floats) or 'none'})")
        return (requested,)
    tables = [o for o in floats if o.shape is None or len(o.shape) == 2]
    if len(tables) == 1:
        return (tables[0].name,)
    hinted = [o for o in tables if any(h in o.name.lower() for h in _PROBABILITY_HINTS)]
    if len(hinted) == 1:
        return (hinted[0].name,)
    vectors = [o for o in floats if o.shape is not None and len(o.shape) == 1]
    if not tables and len(vectors) >= 2:  # skl2onnx zipmap='columns': one N-vector per class
        return tuple(o.name for o in vectors)
    if not floats:
        raise ModelLoadError(where, "no output is a float tensor of class probabilities or logits; "
                             "no flag changes this: export the model with a probability or logit output")
    raise ModelInspectionError(where, "which output holds class probabilities", "--output-name (one of "
                               f"{', '.join(o.name for o in floats)})")


class OnnxClassifier:
    """An onnxruntime session plus its spec. ``predict_proba`` is the only hot call."""

    def __init__(
        self,
        path: Union[Path, str, bytes],
        *,
        source: Optional[str] = None,
        classes: Optional[Sequence[str]] = None,
        input_name: Optional[str] = None,
        output_name: Optional[str] = None,
        feature_count: Optional[int] = None,
        data_features: Optional[int] = None,
        output_kind: str = "probabilities",
        threads: int = 1,
    ) -> None:
        """``path``: an ONNX file, or its bytes (then ``source`` names it in messages)."""
        self.path = Path(source or "<bytes>") if isinstance(path, bytes) else Path(path)
        try:
            proto = onnx.load_from_string(path) if isinstance(path, bytes) else onnx.load(str(self.path))
        except Exception as exc:  # onnx raises DecodeError, OSError, ...
            raise ModelLoadError(str(self.path), f"{type(exc).__name__}: {exc}; no flag changes this: "
                                 "is it an ONNX file?") from exc
        where = f"{self.path} ({signature(proto)})"
        self.described = where  # named in every later refusal (e.g. a failing canary)
        inputs = {p.name: p for p in graph_inputs(proto)}
        if input_name is None:
            if len(inputs) != 1:
                raise ModelInspectionError(where, "which input takes the features", "--input-name")
            input_name = next(iter(inputs))
        if input_name not in inputs:
            raise ModelInspectionError(where, f"the input {input_name!r}", "--input-name")
        feed = _feed(inputs[input_name], feature_count, data_features, where)
        if len(inputs) > 1:
            raise ModelLoadError(where, "the graph needs more than one input; triage feeds one feature "
                                 "tensor, so no flag changes this: export a single-input model")
        found = class_names(proto)  # before the ZipMap goes: its labels name the columns it maps
        bypass = bypass_zipmap(proto, output_name)
        plan = (bypass,) if bypass else _output_plan(graph_outputs(proto), output_name, where)
        self.session = self._session(proto, threads, where)
        self._feed = feed
        self._outputs = list(plan)
        try:
            width = self._run(self._sample_rows(1)).shape[1]
        except _RunFailed as exc:
            raise ModelRunError(where, f"one row of zeros (fed {exc.fed})", f"{exc.reason}; no flag changes "
                                "this: the graph fails on any input") from exc.__cause__
        self.known_good = self._sample_rows(1)
        """Rows this model has scored: what a failing batch is compared with (``warm_up`` sets its canary)."""
        names, source = (tuple(classes), "--classes") if classes else (found.names, found.source) if found else ((), "")
        if not names:
            raise ModelInspectionError(where, f"the class names of the {width} output columns (looked at {LOOKED})",
                                       f"--classes with {width} comma-separated names")
        if width != len(names) and not (width == 1 and len(names) == 2):
            fix = "fix --classes" if classes else "pass --classes"
            raise ModelLoadError(where, f"output {plan[0]!r} has {width} columns but {len(names)} class names "
                                 f"are known from {source} ({', '.join(names[:5])}{'...' if len(names) > 5 else ''}); "
                                 f"{fix}, or pick the probability output with --output-name")
        if feed.batch == 1 or feed.batch == 0:
            log.warning("%s: input %r has a fixed batch of 1, so triage runs it one row at a time (much lower "
                        "throughput); re-export it with a dynamic batch axis (PyTorch: dynamic_axes={%r: {0: "
                        "'batch'}})", self.path, feed.name, feed.name)
        self._width = width
        self.spec = ModelSpec(feed.name, feed.dtype, feed.features, plan[0], names, output_kind,
                              feed.batch, feed.sample_shape, plan if len(plan) > 1 else (), source)

    @staticmethod
    def _session(proto: onnx.ModelProto, threads: int, where: str) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 4  # fatal only: every run failure is reported by this module, once
        try:
            return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelLoadError(where, f"onnxruntime refused it ({str(exc).splitlines()[0][:300]}); no flag "
                                 "changes this") from exc

    def _sample_rows(self, n: int) -> np.ndarray:
        return np.zeros((n, self._feed.features), dtype=np.float64)

    def _run_chunk(self, rows: np.ndarray, n: int) -> np.ndarray:
        """One session run on ``rows`` (its own batch shape) -> (n, width); ``_RunFailed`` if it fails."""
        fed = f"{self._feed.name} {rows.dtype}[{','.join(map(str, rows.shape))}]"
        try:
            outs = self.session.run(self._outputs, {self._feed.name: rows})
        except MemoryError:
            raise  # the machine's fault, not the model's: left to the caller to classify
        except Exception as exc:  # onnxruntime's Fail, InvalidArgument, RuntimeException, ...
            raise _RunFailed(fed, _first_line(exc)) from exc
        sizes = [np.size(o) for o in outs]
        if any(size % n or not size for size in sizes) or (len(outs) > 1 and set(sizes) != {n}):
            raise _RunFailed(fed, f"its output {self._outputs[0]!r} has {sizes[0]} values, not one row per input "
                             f"row ({n} rows)")
        if len(outs) > 1:
            return np.stack([np.asarray(o, dtype=np.float64).reshape(-1) for o in outs], axis=1)
        return np.asarray(outs[0], dtype=np.float64).reshape(n, -1)

    def _run(self, X: np.ndarray) -> np.ndarray:
        """(N, F) features -> (N, width) raw output, honouring the graph's fixed batch."""
        feed = self._feed
        rows = np.asarray(X).astype(feed.dtype, copy=False)
        if feed.sample_shape:
            rows = rows.reshape((len(rows),) + feed.sample_shape)
        if feed.batch is None:
            return self._run_chunk(rows, len(rows))
        if feed.batch == 0:  # no batch axis: one row per run
            return np.concatenate([self._run_chunk(r, 1) for r in rows]) if len(rows) else np.empty((0, 0))
        size = feed.batch
        parts = []
        for start in range(0, len(rows), size):
            chunk = rows[start:start + size]
            if len(chunk) < size:  # pad the last chunk; the padding rows' outputs are dropped
                chunk = np.concatenate([chunk, np.zeros((size - len(chunk),) + chunk.shape[1:], dtype=chunk.dtype)])
            parts.append(self._run_chunk(chunk, size)[: min(size, len(rows) - start)])
        return np.concatenate(parts) if parts else np.empty((0, 0))

    def _blame(self, X: np.ndarray, failed: _RunFailed) -> Exception:
        """Whose fault a failed run on ``X`` is: the same number of rows this model scored before
        are run; if they fail too the model is at fault (``ModelRunError``), else these rows are
        (``ScoreError``: the loop's bisection isolates which). Runs only after a failure."""
        n = len(X)
        run = f"a batch of {n} row{'s' if n > 1 else ''} (fed {failed.fed})"
        try:
            self._run(np.resize(self.known_good, (n, self.known_good.shape[1])))
        except _RunFailed:
            hint = "" if n == 1 else (f"; if it fails only on some batch sizes, re-export it with a dynamic batch "
                                      f"axis (PyTorch: dynamic_axes={{{self._feed.name!r}: {{0: 'batch'}}}})")
            return ModelRunError(self.described, run, f"{failed.reason}; it fails the same way on {n} rows it "
                                 f"scored before, so the model is at fault, not the rows{hint}")
        return ScoreError(f"onnxruntime fails running model {self.described} on {run}, but runs it on {n} rows "
                          f"it scored before, so a row of this batch is at fault: {failed.reason}")

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(N, F) features -> (N, C) float64 probabilities. One ONNX run per call (dynamic batch).
        Raises ``ModelRunError`` (the model's fault) or ``ScoreError`` (the rows') if it fails."""
        if not len(X):
            return np.empty((0, len(self.spec.classes)))
        try:
            out = self._run(X)
        except _RunFailed as exc:
            raise self._blame(X, exc) from exc.__cause__
        if out.shape[1] != self._width:
            raise ModelRunError(self.described, f"a batch of {len(X)} rows", f"its output has {out.shape[1]} "
                                f"columns on this batch and {self._width} on one row; no flag changes this")
        logits = self.spec.output_kind == "logits"
        if out.shape[1] == 1 and len(self.spec.classes) == 2:  # binary: one column for the second class
            p = out[:, 0]
            p = 1.0 / (1.0 + np.exp(-p)) if logits else p
            return np.stack([1.0 - p, p], axis=1)
        if logits:
            out = out - out.max(axis=1, keepdims=True)
            np.exp(out, out=out)
            out /= out.sum(axis=1, keepdims=True)
        return out
