"""The one guarded consumer loop every long-running triage process runs.

poll -> handle (records that raise are isolated by bisection) -> send every output until
acknowledged -> commit -> after. A record is poison only on evidence against it
(``triage.runtime.isolation``): it is dead-lettered with stage ``internal`` (group consumers
with a DLQ) or counted and logged (readers without a group, where every replica sees every
record), and the loop commits past it. The world's faults (``triage.errors.blame``: I/O,
memory, the broker, a refused topic, a dependency, a handler that fails on every record)
never cost a record: the loop holds the batch uncommitted and retries it with backoff,
exports why and for how long it is blocked, and past ``blocked_exit_s`` raises
``BlockedError`` so the process exits non-zero and the orchestrator restarts it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Optional, Sequence, TypeVar

from triage.contracts import dead_letter_from_batch, without_payload
from triage.errors import BlockedError, TransportError, fault_reason
from triage.runtime.isolation import Failure, Part, isolate
from triage.settings import BLOCKED_EXIT_S
from triage.metrics import LoopMetrics
from triage.records import OutRecord, RecordBatch
from triage.transport import Consumer, Offsets, Producer, send_until_acked

log = logging.getLogger("triage.loop")

R = TypeVar("R")
MAX_BACKOFF_S = 5.0
COMMIT_ATTEMPTS = 10
STALL_S = 10.0  # a client call blocked longer than this waited on an unreachable broker
HOLD_BACKOFF_S = 0.5  # first wait before a held batch is handled again; doubles up to MAX_BACKOFF_S


class Abandoned(Exception):
    """The loop was stopped while it held a batch: nothing of it was committed."""


@dataclass
class Step(Generic[R]):
    """What one polled batch became."""

    batch: RecordBatch
    parts: list[Part[R]]
    failures: list[Failure]
    delivered: list[OutRecord] = field(default_factory=list)
    acked_at: float = 0.0


def _no_version() -> str:
    return ""


def _as_outputs(result: object) -> Sequence[OutRecord]:
    return result  # type: ignore[return-value]  # the default: handle returns the outputs


@dataclass(eq=False)
class GuardedLoop(Generic[R]):
    """Drive ``handle`` over ``consumer`` until ``stop`` is set.

    ``handle(batch)`` returns a result whose outputs ``outputs_of(result)`` gives (by default
    the result is the list of outputs); ``OutRecord.source`` is the row of the input it came
    from. ``after`` sees every step once its outputs are acknowledged and its offsets
    committed. Without ``dlq_topic`` (readers without a consumer group: every replica sees
    every record) a record whose handling raised is counted and logged, not dead-lettered.
    """

    name: str
    consumer: Consumer
    handle: Callable[[RecordBatch], R]
    outputs_of: Callable[[R], Sequence[OutRecord]] = _as_outputs
    producer: Optional[Producer] = None
    dlq_topic: Optional[str] = None
    commit: bool = True
    max_records: int = 1000
    poll_timeout_ms: int = 200
    version: Callable[[], str] = _no_version  # model version stamped on dead letters
    after: Optional[Callable[[Step[R]], None]] = None
    before_poll: Optional[Callable[[], None]] = None
    after_poll: Optional[Callable[[Optional[RecordBatch]], None]] = None
    metrics: LoopMetrics = field(default_factory=LoopMetrics)
    stop: threading.Event = field(default_factory=threading.Event)
    sleep: Callable[[float], None] = time.sleep
    blocked_exit_s: Optional[float] = BLOCKED_EXIT_S  # None: hold and retry forever
    broker_ok: bool = field(default=True, init=False)
    progress_at: float = field(default_factory=time.monotonic, init=False)
    blocked_since: Optional[float] = field(default=None, init=False)  # monotonic; None = not blocked
    blocked_reason: str = field(default="", init=False)
    blocked_detail: str = field(default="", init=False)
    _poll_failures: int = field(default=0, init=False)
    _committer: "_Committer" = field(init=False)

    def __post_init__(self) -> None:
        self._committer = _Committer(self.consumer)
        if self.dlq_topic is not None and self.producer is None:
            raise ValueError("a loop that dead-letters needs a producer")
        # Export zeros from the start, so rates and alerts see values, not gaps.
        self.metrics.records.labels(loop=self.name)
        self.metrics.internal_errors.labels(loop=self.name)
        self.metrics.blocked_seconds.labels(loop=self.name).set_function(self.blocked_for)

    # --- one step ------------------------------------------------------------------------
    def poll(self) -> Optional[RecordBatch]:
        started = time.monotonic()
        try:
            batch = self.consumer.poll_batch(self.max_records, self.poll_timeout_ms)
        except TransportError as exc:
            self.broker_ok = False
            self._poll_failures += 1
            self.metrics.broker_errors.labels(operation="poll").inc()
            if self._poll_failures == 1 or self._poll_failures % 20 == 0:  # say it once, then rarely
                log.warning("%s: poll failed (%s); retrying", self.name, exc.message)
            self.stop.wait(min(0.25 * self._poll_failures, MAX_BACKOFF_S))
            return None
        self._note_stall("poll", started)
        self._poll_failures = 0
        self.broker_ok = True
        return batch

    def process(self, batch: RecordBatch) -> Step[R]:
        """Handle, deliver and commit one batch (the batch is never given up: the world's
        faults hold it, see the module doc; a stop while it is held raises ``Abandoned``)."""
        parts, failures = self.judge(batch)
        outputs = [rec for part in parts for rec in _remapped(part, self.outputs_of(part.result))]
        outputs.extend(self._failed(batch, failures))
        step: Step[R] = Step(batch, parts, failures)
        if outputs:
            step.delivered = self.deliver(outputs, batch)
        step.acked_at = time.time()
        if self.commit:
            self.commit_offsets(batch)
        self.metrics.records.labels(loop=self.name).inc(len(batch))
        if self.after is not None:
            try:
                self.after(step)
            except Exception:  # noqa: BLE001 - bookkeeping after the commit must not stop the stream
                self.metrics.internal_errors.labels(loop=self.name).inc()
                log.exception("%s: bookkeeping after a committed batch failed", self.name)
        return step

    def judge(self, batch: RecordBatch) -> tuple[list[Part[R]], list[Failure]]:
        """``isolate`` until it gives a verdict; the world's faults hold the batch meanwhile."""
        attempt = 0
        while True:
            try:
                judged = isolate(batch, self.handle, retried=attempt > 0)
            except Exception as exc:  # noqa: BLE001 - isolate raises only what blames no record
                attempt += 1
                self.hold(exc, attempt)
                if self.stop.wait(min(HOLD_BACKOFF_S * 2 ** min(attempt - 1, 16), MAX_BACKOFF_S)):
                    raise Abandoned(f"{self.name}: stopped while holding a batch") from exc
                if self.before_poll is not None:
                    self.before_poll()  # e.g. swap in a model that was rolled back meanwhile
                continue
            self.release()
            return judged

    # --- holding a batch -----------------------------------------------------------------
    def hold(self, exc: BaseException, attempt: int) -> None:
        """Note that the batch in hand is held because of ``exc`` (the world's fault); past
        ``blocked_exit_s`` raise ``BlockedError``."""
        now = time.monotonic()
        self.progress_at = now  # alive and retrying: the blocked check says what is wrong
        reason, detail = fault_reason(exc), f"{type(exc).__name__}: {str(exc)[:300]}"
        m = self.metrics
        if self.blocked_since is None:
            self.blocked_since = now
            log.warning("%s: holding the batch uncommitted (%s: %s); retrying with backoff", self.name, reason, detail)
        elif reason != self.blocked_reason:
            m.blocked.labels(loop=self.name, reason=self.blocked_reason).set(0)
            log.warning("%s: still holding the batch, now %s: %s", self.name, reason, detail)
        elif attempt % 20 == 0:  # say it once, then rarely
            log.warning("%s: still holding the batch after %.0f s (%s: %s)", self.name, self.blocked_for(), reason, detail)
        self.blocked_reason, self.blocked_detail = reason, detail
        m.blocked.labels(loop=self.name, reason=reason).set(1)
        m.blocked_retries.labels(loop=self.name, reason=reason).inc()
        if self.blocked_exit_s is not None and now - self.blocked_since > self.blocked_exit_s:
            raise BlockedError(self.name, now - self.blocked_since, reason, detail) from (
                exc if isinstance(exc, Exception) else None)

    def release(self) -> None:
        if self.blocked_since is None:
            return
        log.warning("%s: the held batch went through after %.1f s (%s)", self.name, self.blocked_for(),
                    self.blocked_reason)
        self.metrics.blocked.labels(loop=self.name, reason=self.blocked_reason).set(0)
        self.blocked_since, self.blocked_reason, self.blocked_detail = None, "", ""

    def blocked_for(self) -> float:
        """Seconds the batch in hand has been held (0 when not blocked)."""
        since = self.blocked_since
        return 0.0 if since is None else time.monotonic() - since

    def blocked_reason_text(self) -> Optional[str]:
        """Why the loop is blocked, for /readyz (None when it is not)."""
        if self.blocked_since is None:
            return None
        return f"{self.name} has held a batch for {self.blocked_for():.0f} s: {self.blocked_reason} ({self.blocked_detail})"

    def _failed(self, batch: RecordBatch, failures: list[Failure]) -> list[OutRecord]:
        out: list[OutRecord] = []
        for f in failures:
            self.metrics.internal_errors.labels(loop=self.name).inc()
            log.error("%s: handling raised %s: %s at %s[%d]@%d; %s", self.name, type(f.error).__name__,
                      str(f.error)[:200], batch.topics[f.row],
                      batch.partitions[f.row], batch.offsets[f.row],
                      "dead-lettered (stage internal)" if self.dlq_topic else "skipped", exc_info=f.error)
            if self.dlq_topic is not None:
                out.append(dead_letter_from_batch(batch, f.row, f.error, "internal", self.dlq_topic, self.version()))
        return out

    def deliver(self, outputs: list[OutRecord], batch: RecordBatch) -> list[OutRecord]:
        """Send until every output is acknowledged; a record the broker refuses for good is
        dead-lettered (stage ``produce``), and a dead letter that cannot be written is
        written without its payload."""
        assert self.producer is not None, f"{self.name}: outputs but no producer"

        def reroute(rec: OutRecord, err: TransportError) -> Optional[OutRecord]:
            # Only records the broker refuses for their own sake get here (send_until_acked).
            if self.dlq_topic is None:
                return None
            if rec.topic == self.dlq_topic:
                return without_payload(rec, err.message)
            log.warning("%s: output for offset %s cannot be written (%s): dead-lettering",
                        self.name, batch.offsets[rec.source], err.message)
            return dead_letter_from_batch(batch, rec.source, err, "produce", self.dlq_topic, self.version())

        def on_retry(attempt: int, errors: list[TransportError]) -> None:
            self.broker_ok = False
            self.metrics.broker_errors.labels(operation="produce").inc()
            self.metrics.produce_retries.inc()
            self.hold(errors[-1], attempt)

        def on_refused(attempt: int, errors: list[TransportError]) -> None:
            self.metrics.broker_errors.labels(operation="produce").inc()
            self.hold(errors[-1], attempt)

        started = time.monotonic()
        # Stopping mid-outage abandons the batch uncommitted: re-read after a restart, never lost.
        delivered = send_until_acked(self.producer, outputs, reroute=reroute, stop=self.stop, on_retry=on_retry,
                                     on_refused=on_refused)
        self._note_stall("produce", started)
        self.broker_ok = True
        self.release()
        return delivered

    def commit_offsets(self, batch: RecordBatch) -> None:
        offsets = batch.next_offsets()
        for attempt in range(COMMIT_ATTEMPTS):
            started = time.monotonic()
            try:
                self._committer.commit(offsets, self.stop, self.name)
                self._note_stall("commit", started)
                return
            except TransportError as exc:
                self.metrics.broker_errors.labels(operation="commit").inc()
                if not exc.retriable:
                    # Typically a rebalance took the partitions: the new owner re-reads from
                    # the last commit, so these outputs become duplicates, not losses.
                    log.warning("%s: commit refused (%s); records will be re-delivered", self.name, exc.message)
                    return
                self.sleep(min(0.1 * 2**attempt, MAX_BACKOFF_S))
        log.error("%s: commit kept failing; records after the last commit will be re-delivered", self.name)

    def _note_stall(self, operation: str, started: float) -> None:
        """Client calls retry internally and may block on an unreachable broker: a call that
        blocked past STALL_S counts as a broker error even when it then succeeded."""
        self.progress_at = time.monotonic()
        if self.progress_at - started > STALL_S:
            self.metrics.broker_errors.labels(operation=operation).inc()

    def process_unless_stopped(self, batch: RecordBatch) -> bool:
        """``process``; False when a stop abandoned the batch (nothing of it was committed)."""
        try:
            self.process(batch)
        except Abandoned:
            return False  # stopped while holding the batch
        except TransportError:
            if self.stop.is_set():
                return False  # stopped while the broker was unreachable
            raise
        return True

    # --- the loop ------------------------------------------------------------------------
    def run(self, *, max_batches: Optional[int] = None, idle_exit_s: Optional[float] = None) -> None:
        """Until ``stop`` is set (or a bound is reached). The caller closes the clients."""
        done = 0
        idle_since = time.monotonic()
        while not self.stop.is_set():
            if self.before_poll is not None:
                self.before_poll()
            batch = self.poll()
            if self.after_poll is not None:
                self.after_poll(batch)
            if batch is None or not len(batch):
                if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                    return
                continue
            idle_since = time.monotonic()
            if not self.process_unless_stopped(batch):
                return
            done += 1
            if max_batches is not None and done >= max_batches:
                return


class _Committer:
    """Synchronous commits in a daemon thread, so a stop can abandon one that blocks on an
    unreachable broker (both clients' synchronous commits wait for the coordinator without a
    timeout): the batch stays uncommitted and is re-read after the restart."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self._jobs: "queue.SimpleQueue[tuple[Offsets, Future[None]]]" = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None

    def commit(self, offsets: Offsets, stop: threading.Event, name: str) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=f"{name}-commit", daemon=True)
            self._thread.start()
        done: Future[None] = Future()
        self._jobs.put((offsets, done))
        while True:
            try:
                return done.result(timeout=0.1)
            except FutureTimeout:
                if stop.is_set():
                    raise Abandoned(f"{name}: stopped while a commit waited on the broker") from None

    def _work(self) -> None:
        while True:
            offsets, done = self._jobs.get()
            try:
                self.consumer.commit(offsets)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting loop
                done.set_exception(exc)
            else:
                done.set_result(None)


def close_within(client: Consumer | Producer, timeout_s: float, name: str) -> None:
    """``client.close()``, given up after ``timeout_s``: leaving a group (or a commit still
    waiting) blocks while the broker is away, and a stopped process must exit within its grace
    period; the broker then drops the member after the session timeout."""
    closing = threading.Thread(target=client.close, name=f"close-{name}", daemon=True)
    closing.start()
    closing.join(timeout_s)
    if closing.is_alive():
        log.warning("%s: closing the Kafka client took over %.0f s (broker unreachable?); leaving it", name, timeout_s)


def not_blocked(loop: Optional[GuardedLoop[Any]]) -> bool:
    """/readyz's ``not_blocked`` check of ``loop`` (None: not running yet)."""
    return loop is None or loop.blocked_since is None


def blocked_reasons(loop: Optional[GuardedLoop[Any]]) -> dict[str, str]:
    """Why /readyz's ``not_blocked`` check fails: what ``loop`` holds its batch for."""
    why = loop.blocked_reason_text() if loop is not None else None
    return {"not_blocked": why} if why else {}


def drain(loop: GuardedLoop[R], *, idle_polls: int = 2, max_s: float = 10.0, join_wait_s: float = 0.0) -> None:
    """Read until the topic is quiet (``idle_polls`` empty polls in a row) or ``max_s`` of
    reading has passed, so a steady stream cannot keep a batch job from ever finishing.
    ``join_wait_s``: empty polls do not count while a group member waits for its partitions."""
    join_deadline = time.monotonic() + join_wait_s
    deadline: Optional[float] = None
    idle = 0
    while idle < idle_polls and not loop.stop.is_set():
        batch = loop.poll()
        if batch is None or not len(batch):
            if not loop.consumer.assigned() and time.monotonic() < join_deadline:
                continue
            idle += 1
        else:
            idle = 0
            if not loop.process_unless_stopped(batch):
                return
        deadline = deadline or time.monotonic() + max_s
        if time.monotonic() > deadline:
            return


def _remapped(part: Part[R], outputs: Sequence[OutRecord]) -> Sequence[OutRecord]:
    """Outputs of a sub-batch point at its own rows; point them at the original batch."""
    rows = part.rows
    if rows and (rows[0] != 0 or rows[-1] != len(rows) - 1):  # not the whole batch
        for rec in outputs:
            if rec.source >= 0:
                rec.source = rows[rec.source]
    return outputs
