"""Train a scikit-learn classifier and export it with skl2onnx, as most users will.

    python examples/export_sklearn.py OUT_DIR

Writes OUT_DIR/sklearn.onnx (ZipMap left on, skl2onnx's default) and OUT_DIR/reference.npz:
held-out rows with labels (X, y) that triage uses for the outlier detector, calibration,
routing and the canary check.
"""

import sys
from pathlib import Path

import numpy as np
from skl2onnx import to_onnx
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

out = Path(sys.argv[1] if len(sys.argv) > 1 else "byom")
out.mkdir(parents=True, exist_ok=True)
X, y = load_digits(return_X_y=True)
X_train, X_ref, y_train, y_ref = train_test_split(X, y, test_size=0.4, random_state=0, stratify=y)
clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X_train, y_train)
(out / "sklearn.onnx").write_bytes(to_onnx(clf, X_train[:1].astype(np.float32)).SerializeToString())
np.savez(out / "reference.npz", X=X_ref, y=y_ref)
print(f"wrote {out / 'sklearn.onnx'} (holdout accuracy {clf.score(X_ref, y_ref):.3f}) and {out / 'reference.npz'}")
