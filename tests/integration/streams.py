"""Test streams built from the bundled digits reference data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

MALFORMED: list[bytes] = [
    b"\xff\xfe\xfd",
    b"not json at all",
    b"[1, 2, 3]",
    b'{"features": [1]}',
    b'{"id": "", "features": [1]}',
    b'{"id": "short", "features": [1, 2, 3]}',
    b'{"id": "strings", "features": ["a"]}',
]


def mixed_stream(ref: Path, n_valid: int, n_outliers: int, seed: int = 0) -> tuple[list[tuple[Optional[bytes], Optional[bytes]]], set[str], set[str]]:
    """(records, valid ids, outlier ids); malformed records are appended after them."""
    with np.load(ref) as d:
        X = d["X"]
    rng = np.random.default_rng(seed)
    records: list[tuple[Optional[bytes], Optional[bytes]]] = []
    valid, outliers = set(), set()
    for i in range(n_valid):
        sid = f"v{i}"
        valid.add(sid)
        records.append((sid.encode(), json.dumps({"id": sid, "features": X[i % len(X)].tolist()}).encode()))
    for i in range(n_outliers):
        sid = f"o{i}"
        outliers.add(sid)
        records.append((sid.encode(), json.dumps({"id": sid, "features": (40 + 40 * rng.random(64)).tolist()}).encode()))
    records += [(f"bad{i}".encode(), v) for i, v in enumerate(MALFORMED)]
    records.append((b"tomb", None))
    order = rng.permutation(len(records))
    return [records[i] for i in order], valid, outliers
