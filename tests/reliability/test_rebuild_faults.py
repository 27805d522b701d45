"""A label-store rebuild that the world cuts short leaves nothing a restart would take for the
store: the trainer rebuilds an empty store by itself, never a partial one."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from typing import Callable

import pytest

from consumers.label_rebuild import rebuild_label_store, store_lost
from tests.fixtures import produce
from tests.helpers import REPO, settings_env
from tests.reliability.world import small_fs
from triage.contracts import encode_label
from triage.lifecycle.registry import Registry
from triage.settings import Settings


def test_a_rebuild_the_disk_cuts_short_leaves_the_store_empty_for_the_next_start(
        registry: Registry, settings_factory: Callable[..., Settings]) -> None:
    """It appended 5,000 rows at a time: a full disk (or a SIGKILL) after the first left a store
    of 5,000 rows, which the next start took for the store, so the rest were lost for good."""
    s = settings_factory()
    n = 15_000  # about 6 MB of rows
    produce(s, s.topics.labels_topic, [(f"s{i}".encode(), encode_label(f"s{i}", "3", annotator="a",
                                                                      features=[float(i % 16)] * 64))
                                       for i in range(n)])
    with small_fs(registry.data_dir, size="4m"):
        with pytest.raises(OSError) as full:
            rebuild_label_store(s, registry)
        assert full.value.errno == errno.ENOSPC
        assert registry.label_store().count() == 0 and store_lost(registry.label_store(), 0)
    assert rebuild_label_store(s, registry, progress=print).rows == n  # the disk back: the next start rebuilds it whole
    assert registry.label_store().count() == n and not store_lost(registry.label_store(), n)


def test_a_rebuild_killed_after_it_set_the_old_rows_aside_is_rebuilt_at_the_next_start(
        registry: Registry, settings_factory: Callable[..., Settings]) -> None:
    """A SIGKILL anywhere in a rebuild, here `labels rebuild --replace` between setting the old
    rows aside and writing the new ones: the store is marked, so the retrain job's next start
    rebuilds it, whatever rows it holds."""
    s = settings_factory()
    produce(s, s.topics.labels_topic, [(f"s{i}".encode(), encode_label(f"s{i}", "3", annotator="a",
                                                                      features=[1.0] * 64)) for i in range(50)])
    registry.label_store().append([{"id": "old", "label": "3", "features": [1.0] * 64, "annotator": "a"}])
    env = {**os.environ, **settings_env(s), "TRIAGE_FAILPOINT": "labels.rebuild_append:kill"}
    done = subprocess.run([sys.executable, "-m", "triage", "labels", "rebuild", "--registry", str(registry.root),
                           "--replace"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert store_lost(registry.label_store(), 0)
    assert rebuild_label_store(s, registry).rows == 50  # what the next start runs: no --replace needed
    assert not store_lost(registry.label_store(), 50)
