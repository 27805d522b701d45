"""The scorer loop: poll -> process_batch -> deliver (ack all) -> commit. At-least-once.

The loop owns the Kafka clients; everything it decides comes from the pure
``triage.handlers``. A new model offered from another thread (the registry watcher)
is swapped in between batches, so the batch in flight finishes on the old model.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from operator import attrgetter
from typing import Callable, Optional

import numpy as np

from triage.errors import TransportError
from triage.handlers import BatchResult, dlq_record, process_batch
from triage.metrics import PolicyMetrics, ScorerMetrics, observe_many
from triage.policies import make_policy
from triage.records import OutRecord, RecordBatch
from triage.routing import RoutingPolicy, ThresholdPolicy
from triage.serving import ServingModel
from triage.settings import Settings
from triage.threads import limit_blas_threads
from triage.transport import Consumer, Producer, make_consumer, make_producer

log = logging.getLogger("triage.scorer")

MAX_BACKOFF_S = 5.0
_topic_reason = attrgetter("topic", "reason")  # C-level key for the outcome counts
ACK_TIMEOUT_S = 60.0
STALL_S = 10.0  # a loop step (poll, send, commit) blocked longer than this = not ready


def policy_from_settings(settings: Settings, model: Optional[ServingModel] = None) -> RoutingPolicy:
    if model is None:
        return ThresholdPolicy(settings.policy.uncertainty_threshold, audit_rate=settings.policy.audit_rate, seed=settings.policy.seed)
    return make_policy(settings, model)


def _without_payload(rec: OutRecord, err: TransportError) -> OutRecord:
    if rec.value == b"" and rec.key is None:
        return rec  # already stripped: only a broker-side problem remains; keep retrying
    dropped = f"key {len(rec.key or b'')} bytes, value {len(rec.value or b'')} bytes: {err.message}"
    headers = [*(rec.headers or []), ("triage.dlq.payload_dropped", dropped[:1000].encode())]
    return OutRecord(rec.topic, None, b"", headers, rec.source, rec.reason)


class Scorer:
    def __init__(
        self,
        settings: Settings,
        model: ServingModel,
        *,
        metrics: Optional[ScorerMetrics] = None,
        policy: Optional[RoutingPolicy] = None,
        consumer: Optional[Consumer] = None,
        producer: Optional[Producer] = None,
    ) -> None:
        self.settings = settings
        limit_blas_threads(settings.serving.blas_threads)
        self.metrics = metrics or ScorerMetrics()
        self.policy = policy or policy_from_settings(settings, model)
        self.policy_metrics = PolicyMetrics(self.metrics.registry)
        self.model = model
        self._pending: Optional[ServingModel] = None
        self._lock = threading.Lock()
        self.stop_event = threading.Event()
        self.consumer = consumer or make_consumer(settings, [settings.topics.samples_topic], group_id=settings.connection.group_id)
        self.producer = producer or make_producer(settings)
        self._route = {
            settings.topics.predictions_topic: "predictions",
            settings.topics.review_topic: "review",
            settings.topics.dlq_topic: "dlq",
        }
        self._broker_ok = True
        self._assigned = False
        self._connected = False
        self._progress_at = time.monotonic()
        self._lag_partitions: set[str] = set()
        self.metrics.set_model(model.version, model.sha256, model.outlier is not None)
        # triage_ready is computed at scrape time from the same checks as /readyz, so a
        # loop stuck waiting on an unreachable broker shows up in both.
        self.metrics.ready.set_function(lambda: 1.0 if all(self.readiness().values()) else 0.0)
        self.on_swap: list[Callable[[ServingModel, ServingModel], None]] = []

    # --- model swaps (called from other threads) -----------------------------------------
    def offer_model(self, model: ServingModel) -> None:
        """Queue an already loaded and warmed model; it is swapped in between batches."""
        with self._lock:
            self._pending = model

    def _swap_if_pending(self) -> None:
        with self._lock:
            new, self._pending = self._pending, None
        if new is None:
            return
        old, self.model = self.model, new
        self.metrics.set_model(new.version, new.sha256, new.outlier is not None)
        self.metrics.swaps.labels(result="success").inc()
        self.metrics.last_swap.set(time.time())
        log.info("swapped model %s -> %s", old.version, new.version)
        on_model = getattr(self.policy, "on_model", None)
        if on_model is not None:  # per-version risk thresholds and gate
            on_model(new)
        for hook in self.on_swap:
            hook(old, new)

    def feed_backlog(self, backlog: int) -> None:
        """Review requests produced minus labels received (from the backlog watcher thread)."""
        feed = getattr(self.policy, "feed_backlog", None)
        if feed is not None:
            feed(backlog)

    # --- health --------------------------------------------------------------------------
    def readiness(self) -> dict[str, bool]:
        """Named readiness checks, from state the loop thread refreshes after every poll
        (the HTTP thread never touches the Kafka client)."""
        checks = {
            "model_loaded": self.model is not None,
            "partitions_assigned": self._assigned,
            "broker_reachable": self._broker_ok and self._connected,
            # kafka clients block (flush, group rejoin) while the broker is unreachable,
            # so the flags above go stale; a loop that stopped moving is not ready either.
            "loop_responsive": time.monotonic() - self._progress_at < STALL_S,
        }
        return checks

    def _refresh_health(self) -> None:
        self._progress_at = time.monotonic()
        self._assigned = bool(self.consumer.assigned())
        connected = self.consumer.connected()
        if self._connected and not connected:
            # librdkafka polls do not block or fail during an outage: count the lost connection.
            self.metrics.broker_errors.labels(operation="connection").inc()
            log.warning("lost the connection to the broker; the client keeps retrying")
        self._connected = connected

    # --- the loop ------------------------------------------------------------------------
    def run(self, *, max_batches: Optional[int] = None, idle_exit_s: Optional[float] = None) -> None:
        """Run until ``stop_event`` is set (or the optional bounds are reached), then close."""
        done = 0
        idle_since = time.monotonic()
        try:
            while not self.stop_event.is_set():
                self._swap_if_pending()
                batch = self._poll()
                self._refresh_health()
                if batch is None or not len(batch):
                    if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                        break
                    continue
                idle_since = time.monotonic()
                self.process(batch)
                done += 1
                if max_batches is not None and done >= max_batches:
                    break
        finally:
            self.close()

    def _note_stall(self, operation: str, started: float) -> None:
        """A client call that blocked past STALL_S waited on an unreachable broker (the
        clients retry internally and may then succeed): count it as a broker error."""
        self._progress_at = time.monotonic()
        if self._progress_at - started > STALL_S:
            self.metrics.broker_errors.labels(operation=operation).inc()

    def _poll(self) -> Optional[RecordBatch]:
        started = time.monotonic()
        try:
            batch = self.consumer.poll_batch(self.settings.serving.batch_size, self.settings.serving.poll_timeout_ms)
            self._note_stall("poll", started)
            self._broker_ok = True
            return batch
        except TransportError as exc:
            self._broker_ok = False
            self.metrics.broker_errors.labels(operation="poll").inc()
            log.warning("poll failed (%s); retrying", exc.message)
            time.sleep(0.5)
            return None

    def process(self, batch: RecordBatch) -> BatchResult:
        model = self.model  # one model for the whole batch, whatever is offered meanwhile
        result = process_batch(batch, model, self.policy, self.settings)
        delivered = self._deliver(result.outputs, batch, model.version)
        acked = time.time()
        self._commit(batch)
        self._observe(batch, result, delivered, acked)
        return result

    def _deliver(self, outputs: list[OutRecord], batch: RecordBatch, version: str) -> list[OutRecord]:
        """Send until every output is acknowledged. Unwritable records go to the DLQ
        (stage ``produce``); retriable failures are retried with backoff, never dropped."""
        delivered: list[OutRecord] = []
        pending = outputs
        attempt = 0
        while pending:
            sent_at = time.monotonic()
            errors = self.producer.send_all(pending, ACK_TIMEOUT_S)
            self._note_stall("produce", sent_at)
            retry: list[OutRecord] = []
            for rec, err in zip(pending, errors):
                if err is None:
                    delivered.append(rec)
                elif err.retriable:
                    retry.append(rec)
                elif rec.topic == self.settings.topics.dlq_topic:
                    # The dead letter itself cannot be written (e.g. original bytes over the
                    # producer's size limit, or a tombstone with no key): write it without
                    # the payload rather than retry forever or drop it.
                    retry.append(_without_payload(rec, err))
                else:
                    log.warning("output for offset %s cannot be written (%s): dead-lettering",
                                batch.offsets[rec.source], err.message)
                    retry.append(dlq_record(batch, rec.source, err, "produce", self.settings, version))
            if retry:
                attempt += 1
                self._broker_ok = False
                self.metrics.produce_retries.inc()
                self.metrics.broker_errors.labels(operation="produce").inc()
                time.sleep(min(0.1 * 2**attempt, MAX_BACKOFF_S))
            else:
                self._broker_ok = True
            pending = retry
        return delivered

    def _commit(self, batch: RecordBatch) -> None:
        offsets = batch.next_offsets()
        for attempt in range(10):
            try:
                self.consumer.commit(offsets)
                self._progress_at = time.monotonic()
                return
            except TransportError as exc:
                self.metrics.broker_errors.labels(operation="commit").inc()
                if not exc.retriable:
                    # Typically a rebalance took the partitions: the new owner re-reads
                    # from the last commit, so the outputs above become duplicates, not losses.
                    log.warning("commit refused (%s); records will be re-delivered", exc.message)
                    return
                time.sleep(min(0.1 * 2**attempt, MAX_BACKOFF_S))
        log.error("commit kept failing; records after the last commit will be re-delivered")

    def _observe(self, batch: RecordBatch, result: BatchResult, delivered: list[OutRecord], acked: float) -> None:
        m = self.metrics
        for (topic, reason), n in Counter(map(_topic_reason, delivered)).items():
            route = self._route.get(topic, "other")
            m.samples.labels(route=route, reason=reason).inc(n)
            if route == "dlq":
                m.dlq.labels(stage=reason).inc(n)
        m.batch_size.observe(len(batch))
        snapshot = getattr(self.policy, "snapshot", None)
        if snapshot is not None and result.decisions is not None:
            self.policy_metrics.update(snapshot(), self.policy.drain_suppressed())  # type: ignore[attr-defined]
        m.batches.inc()
        m.last_batch.set(acked)
        if result.scores is not None:
            s = result.scores
            m.inference.observe(result.inference_seconds)
            observe_many(m.confidence, s.confidence)
            observe_many(m.margin, s.margin)
            observe_many(m.entropy, s.entropy)
            if not np.isnan(s.outlier).all():
                observe_many(m.outlier, s.outlier)
            observe_many(m.end_to_end, np.maximum(acked - result.event_ms / 1000.0, 0.0))
        newest: dict[int, int] = {}
        for p, ts in zip(batch.partitions, batch.timestamps_ms):
            if ts > newest.get(p, -1):
                newest[p] = ts
        for p, ts in newest.items():
            m.lag_seconds.labels(partition=str(p)).set(max(acked - ts / 1000.0, 0.0))
        lags = self.consumer.lag()
        for p, lag in lags.items():
            m.lag.labels(partition=str(p)).set(lag)
        # After a rebalance, stop exporting lag for partitions this replica no longer owns.
        exported = {str(p) for p in newest} | {str(p) for p in lags} | self._lag_partitions
        owned = {str(p) for _, p in self.consumer.assigned()}
        for p in exported - owned:
            for gauge in (m.lag, m.lag_seconds):
                try:
                    gauge.remove(p)
                except KeyError:
                    pass
        self._lag_partitions = exported & owned

    def close(self) -> None:
        try:
            self.producer.close()
        finally:
            self.consumer.close()

