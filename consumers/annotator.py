"""The annotator console loop: review requests in (highest priority first among those
fetched), one keystroke per label, label events out.

With a pool of annotators (``pool``), every console reads the review topic in its own consumer
group and shows a request only when its annotator is one of the request's assignees
(``triage.annotation.routing``: rendezvous hashing over the pool minus ``labelled_by``); the
other requests are marked handled at once. Without a pool, consoles share one group and each
request reaches one of them: a request that asks for more people is shown, and counted on the
status line (``wanted_more``).

Offsets: a review request's offset is committed once it is answered or skipped and every
earlier request of its partition is too, so a crash re-shows, never loses, a request. An
invalid or duplicate request is handled only once its batch's dead letters are acknowledged
(the loop's ``after`` hook), so a crash before the ack re-reads it, never loses it.
"""

from __future__ import annotations

import heapq
import logging
import os
import select
import sys
import termios
import time
import tty
from dataclasses import dataclass
from typing import Any, Optional, Sequence, TextIO

import msgspec

from consumers.loop import GuardedLoop, Step
from triage.annotation.console import keymap, render_request
from triage.annotation.routing import assignees
from triage.contracts import ReviewRequest, dead_letter_from_batch, decode_review, encode_label
from triage.errors import ConfigError, InputError, TransportError
from triage.lifecycle.labelstore import EDGE_CASE, UNDO
from triage.records import OutRecord, RecordBatch
from triage.settings import Settings
from triage.transport import Consumer, Producer, make_consumer, make_producer, send_until_acked

CLEAR = "\x1b[2J\x1b[H"
log = logging.getLogger("triage.annotator")


def group_for(group: str, annotator: str, pool: Optional[Sequence[str]]) -> str:
    """The consumer group of a console: shared without a pool, one per annotator with one."""
    return f"{group}-{annotator}" if pool else group


@dataclass
class Intake:
    """A (part of a) batch read: its dead letters, and per row its request (None: dead-lettered)."""

    dead: list[OutRecord]
    requests: list[Optional[ReviewRequest]]


class Console:
    def __init__(self, settings: Settings, classes: list[str], annotator: str, *, group_id: str,
                 pool: Optional[Sequence[str]] = None, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> None:
        if pool and annotator not in pool:
            raise ConfigError(f"annotator {annotator!r} is not in the pool {','.join(pool)}")
        self.settings = settings
        self.keys = keymap(classes)
        self.annotator = annotator
        self.pool = list(pool) if pool else None
        self.stdin, self.stdout = stdin, stdout
        self.consumer: Consumer = make_consumer(settings, [settings.topics.review_topic], group_id=group_id)
        self.producer: Producer = make_producer(settings)
        # Offsets are committed per answered request (see _done), not per batch.
        self.loop: GuardedLoop[Intake] = GuardedLoop(
            "annotator", self.consumer, self._read, outputs_of=lambda intake: intake.dead, producer=self.producer,
            dlq_topic=settings.topics.dlq_topic, commit=False, max_records=200, poll_timeout_ms=100,
            after=self._enqueue, blocked_exit_s=settings.operations.blocked_exit_s)
        self.heap: list[tuple[float, int, dict[str, Any]]] = []
        self.pending: dict[tuple[str, int], set[int]] = {}  # fetched, not yet handled
        self.high: dict[tuple[str, int], int] = {}  # highest handled offset
        # requests queued already, by what makes one distinct: a redelivered copy is not shown twice,
        # a later request for more annotators on the same sample is a new one
        self.seen: set[tuple[str, int, tuple[str, ...]]] = set()
        self.mine: set[str] = set()  # samples this annotator labelled this session: never shown again
        self.history: list[dict[str, Any]] = []  # answered requests, for undo
        self.labelled = 0
        self.not_mine = 0  # requests for other annotators of the pool (handled unseen)
        self.wanted_more = 0  # without a pool: requests that asked for more than one annotator
        self._tick = 0

    # --- Kafka side ------------------------------------------------------------------------
    def fetch(self) -> None:
        batch = self.loop.poll()
        if batch is not None and len(batch):
            self.loop.process(batch)

    def _read(self, batch: RecordBatch) -> Intake:
        """Decode a batch; dead letters for what is not a review request. Changes nothing, so
        the loop may run it again on parts of the batch (bisection)."""
        dead: list[OutRecord] = []
        requests: list[Optional[ReviewRequest]] = []
        for i, value in enumerate(batch.values):
            try:
                requests.append(decode_review(value, self.settings.serving.max_message_bytes))
            except InputError as exc:
                dead.append(dead_letter_from_batch(batch, i, exc, exc.stage, self.settings.topics.dlq_topic, ""))
                requests.append(None)
        return Intake(dead, requests)

    def _enqueue(self, step: Step[Intake]) -> None:
        """Once the batch's dead letters are acknowledged: queue the valid, unseen requests by
        priority, and mark the rest handled (dead-lettered, duplicate, or isolated by the loop)."""
        batch = step.batch
        by_row: dict[int, Optional[ReviewRequest]] = {f.row: None for f in step.failures}
        for part in step.parts:
            by_row.update(zip(part.rows, part.result.requests))
        touched: set[tuple[str, int]] = set()
        for row in sorted(by_row):
            t, p, o = batch.topics[row], batch.partitions[row], batch.offsets[row]
            review = by_row[row]
            key = None if review is None else (review.id, review.annotators, tuple(sorted(review.labelled_by)))
            if review is None or key in self.seen or not self._for_me(review):
                self._handled(t, p, o)
                touched.add((t, p))
                continue
            self.seen.add(key)
            doc = msgspec.to_builtins(review)
            doc["_pos"] = (t, p, o)
            self.pending.setdefault((t, p), set()).add(o)
            self._tick += 1
            heapq.heappush(self.heap, (-review.priority, self._tick, doc))
        for key in touched:
            self._commit(key)

    def _for_me(self, review: ReviewRequest) -> bool:
        """Show this request here? Never one this annotator labelled; with a pool, only to its assignees."""
        if self.annotator in review.labelled_by or review.id in self.mine:
            return False
        if self.pool is None:
            if review.annotators > 1:
                self.wanted_more += 1
                if self.wanted_more == 1:
                    log.warning("review requests ask for more than one annotator; without --pool each reaches "
                                "one person")
            return True
        if self.annotator in assignees(review.id, self.pool, review.annotators, review.labelled_by):
            return True
        self.not_mine += 1
        return False

    def _next(self) -> Optional[dict[str, Any]]:
        """The queued request of highest priority whose sample this annotator has not labelled
        (two requests for one sample may be queued together: the second is handled unseen)."""
        while self.heap:
            doc = heapq.heappop(self.heap)[2]
            if doc["id"] not in self.mine:
                return doc
            self._done(*doc["_pos"])
        return None

    def _handled(self, topic: str, partition: int, offset: int) -> None:
        key = (topic, partition)
        self.pending.setdefault(key, set()).discard(offset)
        self.high[key] = max(self.high.get(key, -1), offset)

    def _commit(self, key: tuple[str, int]) -> None:
        """Commit the partition up to its oldest unhandled request. Commits are cumulative: one
        that fails is covered by the next, and until then a restart re-shows, never loses."""
        pending = self.pending.get(key)
        try:
            self.consumer.commit({key: min(pending) if pending else self.high[key] + 1})
        except TransportError:
            self.loop.metrics.broker_errors.labels(operation="commit").inc()

    def _done(self, topic: str, partition: int, offset: int) -> None:
        """Mark a request answered or skipped (its label, if any, is acknowledged) and commit."""
        self._handled(topic, partition, offset)
        self._commit((topic, partition))

    def publish(self, doc: dict[str, Any], label: str) -> None:
        value = encode_label(doc["id"], label, annotator=self.annotator, features=doc.get("features"),
                             ts=int(time.time() * 1000))
        record = OutRecord(self.settings.topics.labels_topic, doc["id"].encode(), value)
        send_until_acked(self.producer, [record], deadline_s=30.0)

    # --- terminal side ---------------------------------------------------------------------
    def read_key(self, timeout: float) -> Optional[str]:
        ready, _, _ = select.select([self.stdin], [], [], timeout)
        return os.read(self.stdin.fileno(), 1).decode(errors="replace") if ready else None

    def show(self, doc: Optional[dict[str, Any]]) -> None:
        if doc is None:
            text = f"waiting for review requests on {self.settings.topics.review_topic}...   [q] quit"
        else:
            text = render_request(doc, self.keys, queued=len(self.heap), labelled=self.labelled)
        if self.wanted_more:
            text += (f"\n{self.wanted_more} requests asked for more than one annotator: start every console with "
                     "--pool to honour them")
        self.stdout.write(CLEAR + text.replace("\n", "\r\n") + "\r\n")
        self.stdout.flush()

    def run(self) -> int:
        current: Optional[dict[str, Any]] = None
        shown: Any = False
        try:
            while True:
                if current is None:
                    self.fetch()
                    current = self._next()
                if shown is not current:
                    self.show(current)
                    shown = current
                key = self.read_key(0.2)
                if key is None:
                    continue
                if key == "q" or key == "\x03":
                    return 0
                if key == "u" and self.history:
                    last = self.history.pop()
                    self.publish(last, UNDO)
                    self.mine.discard(last["id"])
                    self.labelled -= 1
                    if current is not None:
                        heapq.heappush(self.heap, (-float(current.get("priority", 0)), -1, current))
                    current = last  # show it again, to label anew
                    shown = False
                    continue
                if current is None:
                    continue
                label = self.keys.get(key) or (EDGE_CASE if key == "e" else None)
                if label is not None:
                    self.publish(current, label)
                    self.mine.add(current["id"])
                    self.labelled += 1
                    self.history.append(current)
                elif key != "s":
                    continue  # an unmapped key: ignore it, keep showing the sample
                self._done(*current["_pos"])
                current = None
        finally:
            self.producer.close()
            self.consumer.close()


def raw_terminal(stream: TextIO) -> Any:
    """Context manager: single keystrokes without Enter (a no-op when not a terminal)."""
    import contextlib

    @contextlib.contextmanager
    def manager():  # type: ignore[no-untyped-def]
        if not stream.isatty():
            yield
            return
        fd = stream.fileno()
        saved = termios.tcgetattr(fd)
        try:
            tty.setcbreak(fd)
            yield
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    return manager()
