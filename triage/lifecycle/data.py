"""Load feature matrices (and optional labels) from npz or CSV files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from triage.errors import ConfigError
from triage.extras import require_extra


BUILTIN = {"sklearn:digits": "load_digits", "sklearn:iris": "load_iris", "sklearn:wine": "load_wine",
           "sklearn:breast_cancer": "load_breast_cancer"}


def load_dataset(path: Path | str) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """npz with ``X`` (and optionally ``y``), or CSV whose last column is ``y`` when its
    header names it ``y``/``label``/``target``; otherwise every column is a feature.
    ``sklearn:digits`` (also iris, wine, breast_cancer) names a dataset bundled with scikit-learn."""
    if str(path) in BUILTIN:
        require_extra("train", f"the dataset {path}")
        import sklearn.datasets

        X, y = getattr(sklearn.datasets, BUILTIN[str(path)])(return_X_y=True)
        return np.asarray(X, dtype=np.float64), np.asarray(y)
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"data file {path} does not exist")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            if "X" not in data:
                raise ConfigError(f"{path}: an npz needs an array named X (has {list(data)})")
            X = np.asarray(data["X"], dtype=np.float64)
            y = np.asarray(data["y"]) if "y" in data else None
    elif path.suffix in (".csv", ".txt"):
        with open(path) as fh:
            header = fh.readline().strip().split(",")
        has_header = not _is_number(header[0])
        raw = np.genfromtxt(path, delimiter=",", skip_header=int(has_header), dtype=str)
        raw = np.atleast_2d(raw)
        label_col = has_header and header[-1].strip().lower() in ("y", "label", "target", "class")
        if label_col:
            X, y = raw[:, :-1].astype(np.float64), raw[:, -1]
        else:
            X, y = raw.astype(np.float64), None
    else:
        raise ConfigError(f"{path}: unsupported data format {path.suffix!r}; use .npz or .csv")
    if X.ndim != 2:
        raise ConfigError(f"{path}: X must be 2-D, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ConfigError(f"{path}: X contains NaN or infinite values")
    return X, y


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
