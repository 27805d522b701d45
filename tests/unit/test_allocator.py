"""keep_freed_memory: a loop that allocates and frees a few MB per iteration stops faulting its
pages back in (glibc). Measured in child processes, with and without it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from triage.runtime.allocator import _glibc

CHILD = """
import json, resource, sys
if sys.argv[1] == "on":
    from triage.runtime.allocator import keep_freed_memory
    assert keep_freed_memory()
def batch():  # a batch's large temporaries: alive together, then all freed
    parts = [bytes(256 * 1024 * (1 + i % 4)) for i in range(24)]
    return sum(map(len, parts))
for _ in range(5):
    batch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    batch()
print(json.dumps((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 50))
"""


def _faults_per_batch(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=60, check=True)
    return float(json.loads(out.stdout))


@pytest.mark.skipif(_glibc() is None, reason="glibc's mallopt thresholds only")
def test_a_batch_loop_stops_faulting_its_freed_memory_back_in() -> None:
    default, kept = _faults_per_batch("off"), _faults_per_batch("on")
    assert default > 500, f"the workload no longer makes glibc give memory back ({default} faults a batch)"
    assert kept < 20, f"{kept} page faults a batch with the thresholds set"
