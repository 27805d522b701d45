"""Regenerate the bundled example model (triage/examples/): an MLP on scikit-learn's digits,
exported with skl2onnx (zipmap on, as most users export), plus reference data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skl2onnx import to_onnx
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

OUT = Path(__file__).resolve().parents[1] / "triage" / "examples"


def main() -> None:
    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    X_train, X_ref, y_train, y_ref = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=400, random_state=0).fit(X_train, y_train)
    print(f"held-out accuracy: {clf.score(X_ref, y_ref):.3f}")
    onx = to_onnx(clf, X_train[:1], target_opset=17)
    (OUT / "digits_mlp.onnx").write_bytes(onx.SerializeToString())
    np.savez_compressed(OUT / "digits_reference.npz", X=X_ref, y=y_ref)


if __name__ == "__main__":
    main()
