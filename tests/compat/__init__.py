"""Compatibility zoo: ONNX classifiers as real exporters write them (issue 12)."""
