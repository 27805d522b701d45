"""transport.base.read_to_end: when a group-less reader has read every partition to its end."""

from __future__ import annotations

from triage.transport.base import read_to_end

T = "labels"


def test_a_partition_that_delivered_nothing_yet_is_not_read() -> None:
    ends = {(T, 0): (0, 5), (T, 1): (0, 0), (T, 2): (3, 3)}
    assert not read_to_end(ends, {})  # lag() was {} here: "caught up" before reading anything
    assert not read_to_end(ends, {(T, 0): 4})
    assert read_to_end(ends, {(T, 0): 5})  # 1 is empty, 2 holds nothing any more (retention)


def test_records_past_the_end_at_start_count_as_read() -> None:
    assert read_to_end({(T, 0): (2, 5)}, {(T, 0): 9})
    assert not read_to_end({}, {})  # no partition known (yet): nothing proves the end was reached
