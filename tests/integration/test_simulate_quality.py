"""``triage simulate --annotators 3 --annotator-noise ...`` end to end, as a user runs it: a
small run on digits writes summary.json with ``label_quality``, every arm spent the same
human actions, and the relabel arm sent flagged labels back and got some changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_simulate_with_noisy_annotators_reports_label_quality_per_arm(tmp_path: Path) -> None:
    report = tmp_path / "report"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
    done = subprocess.run(
        [sys.executable, "-m", "triage", "simulate", "--data", "sklearn:digits", "--annotators", "3",
         "--annotator-noise", "0.1,0.2,0.4", "--seeds", "2", "--budget", "150", "--jobs", "1",
         "--quality-arms", "consensus,relabel", "--report-dir", str(report)],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=900, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((report / "summary.json").read_text())
    quality = summary["label_quality"]
    assert list(quality) == ["latest_wins", "consensus", "relabel", "shipped"]
    for arm in quality.values():
        assert {"label_error_rate", "final_accuracy", "labels_spent"} <= set(arm)
        assert 0.0 <= arm["label_error_rate"] <= 1.0 and 0.0 < arm["final_accuracy"] <= 1.0
        assert arm["figures"]["labels_spent"]["per_seed"] == [150, 150]  # same budget of human actions
    assert quality["consensus"]["figures"]["multi_labelled"]["mean"] > 0
    assert quality["latest_wins"]["figures"]["multi_labelled"]["mean"] == 0
    relabel = quality["relabel"]["relabel"]
    assert relabel["relabel_sent"] > 0 and 0 < relabel["relabel_changed"] <= relabel["relabel_sent"]
    # noisy annotators (mean noise 0.23) leave errors in latest-wins' store
    assert 0.1 < quality["latest_wins"]["label_error_rate"] < 0.4
    assert set(summary["strategies"]) == set(quality)
    assert (report / "learning_curves.png").stat().st_size > 0
    assert "latest_wins" in done.stdout and "pays" in done.stdout
