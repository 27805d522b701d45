"""Find the records of a batch that make a handler raise, without giving up the batch.

Pure: no Kafka. The handler runs once on the whole batch; only when it raises is the batch
split in halves, recursively, until each failing record stands alone. So a clean batch
costs one call, and k bad records among n cost O(k log n) calls.

A record is blamed only on evidence (``triage.errors.blame`` classifies each error):
- an error that is the record's fault (an ``InputError``, a record the broker refused for
  its own sake) makes it a failure at once;
- an error that is the world's fault (I/O, memory, the broker, a retriable dependency)
  blames no record: it propagates, so the loop holds the batch and retries it;
- any other error blames a record that fails alone only while another record of the batch
  succeeds, or when the batch is that one record and it fails again on a retry
  (``retried``). When every record fails, nothing shows it is any one record's fault (a
  model that fails on every row): ``Unjudged`` is raised and the loop holds the batch.
Anything that is not an ``Exception`` (KeyboardInterrupt, exit) propagates too.

Handlers may keep state across calls (a policy's windows): a batch that raised may have
updated some of it before raising, and its halves update it again. That state is
statistical, so the cost is a slightly skewed window after a failure, never a lost record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

from triage.errors import UNKNOWN, WORLD, blame
from triage.records import RecordBatch

R = TypeVar("R")


@dataclass(frozen=True)
class Part(Generic[R]):
    """A handled sub-batch: its rows (indices into the original batch) and the result."""

    rows: list[int]
    result: R


@dataclass(frozen=True)
class Failure:
    """One record the handler could not handle on its own."""

    row: int
    error: Exception


class Unjudged(Exception):
    """The handler failed on every record of the batch with errors that blame no record."""

    def __init__(self, error: Exception, rows: int) -> None:
        super().__init__(f"the handler failed on all {rows} record(s) of the batch, the first with "
                         f"{type(error).__name__}: {str(error)[:200]}")
        self.error = error


def isolate(
    batch: RecordBatch, handle: Callable[[RecordBatch], R], *, retried: bool = False
) -> tuple[list[Part[R]], list[Failure]]:
    """Handle ``batch``; return the handled parts and the records to blame, by row. Raises
    the world's errors and ``Unjudged`` (module doc); ``retried``: this batch failed before."""
    parts: list[Part[R]] = []
    failures: list[Failure] = []
    _handle(batch, list(range(len(batch))), handle, parts, failures, top=True)
    unproven = next((f.error for f in failures if blame(f.error) == UNKNOWN), None)
    if unproven is not None and not parts and not (retried and len(batch) == 1):
        raise Unjudged(unproven, len(batch))
    return parts, failures


def _handle(
    batch: RecordBatch,
    rows: list[int],
    handle: Callable[[RecordBatch], R],
    parts: list[Part[R]],
    failures: list[Failure],
    *,
    top: bool = False,
) -> None:
    if not rows:
        return
    try:
        result = handle(batch if top else batch.take(rows))
    except Exception as exc:  # noqa: BLE001 - isolated below unless it is the world's fault
        if blame(exc) == WORLD:
            raise
        if len(rows) == 1:
            failures.append(Failure(rows[0], exc))
            return
        mid = len(rows) // 2
        _handle(batch, rows[:mid], handle, parts, failures)
        _handle(batch, rows[mid:], handle, parts, failures)
        return
    parts.append(Part(rows, result))
