"""Find the records of a batch that make a handler raise, without giving up the batch.

Pure: no Kafka. The handler runs once on the whole batch; only when it raises is the batch
split in halves, recursively, until each failing record stands alone. So a clean batch
costs one call, and k bad records among n cost O(k log n) calls. Broker-side errors
(``TransportError``) are not about a record: they propagate so the loop's retry path
handles them, and so does anything that is not an ``Exception`` (KeyboardInterrupt, exit).

Handlers may keep state across calls (a policy's windows): a batch that raised may have
updated some of it before raising, and its halves update it again. That state is
statistical, so the cost is a slightly skewed window after a failure, never a lost record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

from triage.errors import TransportError
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


def isolate(
    batch: RecordBatch, handle: Callable[[RecordBatch], R]
) -> tuple[list[Part[R]], list[Failure]]:
    """Handle ``batch``; return the handled parts and the records that raised, by row."""
    parts: list[Part[R]] = []
    failures: list[Failure] = []
    _handle(batch, list(range(len(batch))), handle, parts, failures, top=True)
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
    except TransportError:
        raise
    except Exception as exc:  # noqa: BLE001 - any record-borne failure is isolated, never fatal
        if len(rows) == 1:
            failures.append(Failure(rows[0], exc))
            return
        mid = len(rows) // 2
        _handle(batch, rows[:mid], handle, parts, failures)
        _handle(batch, rows[mid:], handle, parts, failures)
        return
    parts.append(Part(rows, result))
