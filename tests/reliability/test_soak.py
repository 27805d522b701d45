"""Soak, small: 50k samples through one scorer; memory, fds and threads stay flat.

Selected with ``-m slow`` (excluded by default). The 1M-sample run is ``bench/soak.py``.
Bounds are generous and about growth, never about speed.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path


SOAK = Path(__file__).resolve().parents[2] / "bench" / "soak.py"


def _run_soak():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("triage_bench_soak", SOAK)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.run_soak


def test_soak_50k_memory_fds_threads_flat(tmp_path: Path) -> None:
    result = _run_soak()(50_000, batch_size=500, interval_s=1.0, timeout_s=900, workdir=tmp_path)
    print(json.dumps({k: v for k, v in result.items() if k != "series"}))
    assert result["errors"] == [] and result["scorer_exit_code_during_run"] is None
    assert result["processed"] >= 50_000
    rss, fds, threads = result["rss_mb"], result["fds"], result["threads"]
    assert rss["end"] <= rss["warm"] * 1.5 + 50, rss  # no steady growth after warm-up
    assert fds["max"] <= fds["warm"] + 10, fds
    assert threads["max"] <= threads["warm"] + 5, threads
