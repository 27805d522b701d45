from __future__ import annotations

import json
from pathlib import Path

from bench.label_efficiency import labels_to_reach, main


def test_tiny_run_writes_table_json_and_plot(tmp_path: Path) -> None:
    result = main(["--seeds", "1", "--rounds", "2", "--per-round", "5", "--out", str(tmp_path)])
    assert set(result["strategies"]) == {"least-confidence", "margin", "entropy", "random"}
    for s in result["strategies"].values():
        assert s["labels"] == [20, 25, 30]
    assert json.loads((tmp_path / "label_efficiency.json").read_text())["seeds"] == 1
    assert "| margin |" in (tmp_path / "label_efficiency.md").read_text()
    assert (tmp_path / "label_efficiency.png").stat().st_size > 5000


def test_labels_to_reach() -> None:
    assert labels_to_reach([(10, 0.5), (20, 0.9), (30, 0.95)], 0.9) == 20
    assert labels_to_reach([(10, 0.5)], 0.9) is None
