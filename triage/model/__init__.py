"""The model adapter: any ONNX classifier real exporters write, as one call
(a batch of features in, (N, C) probabilities out).

``graph``: pure inspection of the ONNX graph (inputs, outputs, class names, ZipMap).
``classifier``: the onnxruntime session, batching and output reading.
"""

from triage.model.classifier import ModelSpec, OnnxClassifier, model_bytes, sha256_of

__all__ = ["ModelSpec", "OnnxClassifier", "model_bytes", "sha256_of"]
