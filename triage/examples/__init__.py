"""The bundled example: a small digits MLP (ONNX) and reference data from its training
distribution, used by ``triage quickstart``, the tests and the benchmarks."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

MODEL = "digits_mlp.onnx"
REFERENCE = "digits_reference.npz"


def example_paths() -> tuple[Path, Path]:
    """The example model and its reference data (npz with X and y)."""
    root = Path(str(resources.files("triage.examples")))
    return root / MODEL, root / REFERENCE
