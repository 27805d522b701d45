"""The persisted training labels: ``<registry>/data/labels.jsonl``, append-only.

Duplicate labels for one sample id resolve by **latest wins**: labels are keyed by sample
id, so all labels of one id sit in one partition in arrival order, and the last one read
is the annotator's final answer. A correction is simply a newer label; an undo is a newer
``__undo__`` label, which removes the id until it is labelled again.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any, Iterable

import numpy as np

EDGE_CASE = "__edge_case__"
UNDO = "__undo__"  # retracts the id's earlier label (the annotator console's undo)


def is_eval_id(sample_id: str, share: int) -> bool:
    """Stable choice of the new labels reserved for evaluation (never trained on)."""
    return zlib.crc32(sample_id.encode()) % share == 0


class LabelStore:
    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "labels.jsonl"

    def append(self, rows: Iterable[dict[str, Any]]) -> int:
        rows = list(rows)
        if not rows:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            for row in rows:
                fh.write(json.dumps(row, separators=(",", ":")) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return len(rows)

    def count(self) -> int:
        if not self.path.exists():
            return 0
        with open(self.path, "rb") as fh:
            return sum(1 for _ in fh)

    def latest(self, upto: int | None = None) -> dict[str, dict[str, Any]]:
        """id -> the last label row among the first ``upto`` rows (latest wins)."""
        out: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return out
        with open(self.path) as fh:
            for n, line in enumerate(fh):
                if upto is not None and n >= upto:
                    break
                row = json.loads(line)
                out.pop(row["id"], None)  # keep arrival order of the final answers
                if row["label"] != UNDO:
                    out[row["id"]] = row
        return out

    def arrays(self, upto: int | None, eval_share: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(X_train, y_train, X_eval, y_eval) from the latest label per id, edge cases left out."""
        train_X: list[list[float]] = []
        train_y: list[str] = []
        eval_X: list[list[float]] = []
        eval_y: list[str] = []
        for sid, row in self.latest(upto).items():
            if row["label"] == EDGE_CASE:
                continue
            if is_eval_id(sid, eval_share):
                eval_X.append(row["features"])
                eval_y.append(row["label"])
            else:
                train_X.append(row["features"])
                train_y.append(row["label"])
        return (np.asarray(train_X, dtype=np.float64).reshape(len(train_X), -1), np.asarray(train_y, dtype=str),
                np.asarray(eval_X, dtype=np.float64).reshape(len(eval_X), -1), np.asarray(eval_y, dtype=str))
