"""A label-store rebuild that the world cuts short leaves nothing a restart would take for the
store: the trainer rebuilds an empty store by itself, never a partial one."""

from __future__ import annotations

import errno
from typing import Callable

import pytest

from consumers.label_rebuild import rebuild_label_store
from tests.fixtures import produce
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
        assert registry.label_store().count() == 0
    assert rebuild_label_store(s, registry).rows == n  # the disk back: the next start rebuilds it whole
    assert registry.label_store().count() == n
