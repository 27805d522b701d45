from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.label_efficiency import main, synthetic


def test_one_dataset_one_seed_writes_the_reports_and_the_table(tmp_path: Path) -> None:
    summaries = main(["--seeds", "1", "--only", "breast_cancer", "--strategies", "margin", "--out", str(tmp_path)])
    assert set(summaries["breast_cancer"]["strategies"]) == {"margin", "random"}
    report = tmp_path / "label_efficiency" / "breast_cancer"
    assert json.loads((report / "summary.json").read_text())["seeds"] == 1
    assert (report / "learning_curves.png").stat().st_size > 10_000
    assert "| breast_cancer | margin |" in (tmp_path / "label_efficiency.md").read_text()


def test_the_synthetic_task_is_fixed(tmp_path: Path) -> None:
    a = np.load(synthetic(tmp_path / "a.npz"))
    b = np.load(synthetic(tmp_path / "b.npz"))
    assert a["X"].shape == (1500, 20) and len(np.unique(a["y"])) == 4
    np.testing.assert_array_equal(a["X"], b["X"])
