"""The scorer: the guarded loop over the samples topic, wired to the pure handlers.

poll -> process_batch -> deliver (ack all) -> commit. At-least-once. Everything the scorer
decides comes from ``triage.scoring.handlers`` and the routing policy. A new model offered from
another thread (the registry watcher) is swapped in between batches, so the batch in flight
finishes on the old model.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from operator import attrgetter
from typing import Any, Callable, Optional

import numpy as np

from consumers.loop import STALL_S, GuardedLoop, Step, blocked_reasons, not_blocked
from triage.scoring.handlers import BatchConfig, BatchResult, process_batch
from triage.metrics import PolicyMetrics, ScorerMetrics, observe_many
from triage.policies import make_policy
from triage.records import RecordBatch
from triage.scoring.routing import RoutingPolicy
from triage.scoring.servable import ServingModel
from triage.settings import Settings
from triage.runtime.allocator import keep_freed_memory
from triage.runtime.collector import size_young_generation
from triage.runtime.threads import limit_blas_threads
from triage.transport import Consumer, Producer, make_consumer, make_producer

log = logging.getLogger("triage.scorer")

_topic_reason = attrgetter("topic", "reason")  # C-level key for the outcome counts


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
        size_young_generation(settings.serving.batch_size)
        keep_freed_memory()
        self.metrics = metrics or ScorerMetrics()
        self.policy = policy or make_policy(settings.policy, model, settings.quality)
        self.policy_metrics = PolicyMetrics(self.metrics.registry)
        self.model = model
        self._pending: Optional[ServingModel] = None
        self._pending_live: Optional[tuple[str, dict[str, Any]]] = None
        self.live_risk: Optional[tuple[str, dict[str, Any]]] = None  # the live threshold applied
        self._lock = threading.Lock()
        # Set by the registry watcher: is this version still the one to serve? Closes the race
        # between an offer in flight and a rollback that made another version CURRENT.
        self.still_current: Callable[[str], bool] = lambda version: True
        self.stop_event = threading.Event()
        self.fatal: Optional[BaseException] = None  # set when a helper thread gave up
        topics = settings.topics
        self.consumer = consumer or make_consumer(settings, [topics.samples_topic], group_id=settings.connection.group_id)
        self.producer = producer or make_producer(settings)
        self._config = BatchConfig.of(settings.serving, settings.policy, topics)
        self._route = {topics.predictions_topic: "predictions", topics.review_topic: "review", topics.dlq_topic: "dlq"}
        self.loop: GuardedLoop[BatchResult] = GuardedLoop(
            "scorer", self.consumer, self._handle, outputs_of=lambda r: r.outputs,
            producer=self.producer, dlq_topic=topics.dlq_topic,
            max_records=settings.serving.batch_size, poll_timeout_ms=settings.serving.poll_timeout_ms,
            version=lambda: self.model.version, after=self._observe, before_poll=self._swap_if_pending,
            after_poll=self._refresh_health, metrics=self.metrics.loop, stop=self.stop_event,
            blocked_exit_s=settings.operations.blocked_exit_s,
        )
        self._assigned = False
        self._connected = False
        self._lag_partitions: set[str] = set()
        self.metrics.set_model(model.version, model.sha256, model.outlier is not None, model.outlier)
        # triage_ready is computed at scrape time from the same checks as /readyz, so a
        # loop stuck waiting on an unreachable broker shows up in both.
        self.metrics.ready.set_function(lambda: 1.0 if all(self.readiness().values()) else 0.0)
        self.on_swap: list[Callable[[ServingModel, ServingModel], None]] = []

    # --- model swaps (called from other threads) -----------------------------------------
    def offer_model(self, model: ServingModel) -> None:
        """Queue an already loaded and warmed model; it is swapped in between batches."""
        with self._lock:
            self._pending = model

    def offer_live_risk(self, version: str, doc: dict[str, Any]) -> None:
        """Queue the audit consumer's live risk threshold for ``version``; applied between batches."""
        with self._lock:
            self._pending_live = (version, doc)

    def withdraw_offer(self) -> None:
        """Drop a queued model (CURRENT moved back to the running version meanwhile)."""
        with self._lock:
            self._pending = None

    @property
    def pending_version(self) -> Optional[str]:
        with self._lock:
            return self._pending.version if self._pending is not None else None

    def _swap_if_pending(self) -> None:
        with self._lock:
            new, self._pending = self._pending, None
            live, self._pending_live = self._pending_live, None
        if new is not None:
            self._swap(new)
        if live is not None and live[0] == self.model.version:
            self.policy.set_live_risk(*live)
            self.live_risk = live
            self.policy_metrics.update(self.policy.snapshot(), {})

    def _swap(self, new: ServingModel) -> None:
        if not self.still_current(new.version):
            log.info("dropped the queued model %s: it is no longer the registry's CURRENT", new.version)
            return
        try:
            # Per-version thresholds and gate; per-class state when the class set changed.
            self.policy.on_model(new)
        except Exception as exc:  # noqa: BLE001 - a bundle the policy cannot take is refused, not fatal
            log.error("refused model %s: the routing policy cannot take it (%s: %s); still serving %s",
                      new.version, type(exc).__name__, exc, self.model.version, exc_info=exc)
            self.metrics.swaps.labels(result="refused").inc()
            self.metrics.refusals.labels(reason="error").inc()
            try:
                self.policy.on_model(self.model)  # undo a half-applied update
            except Exception:  # noqa: BLE001
                log.exception("could not restore the policy state of %s", self.model.version)
            return
        old, self.model = self.model, new
        self.metrics.set_model(new.version, new.sha256, new.outlier is not None, new.outlier)
        self.live_risk = None  # the rule dropped the old version's live threshold
        self.metrics.swaps.labels(result="success").inc()
        self.metrics.last_swap.set(time.time())
        log.info("swapped model %s -> %s", old.version, new.version)
        for hook in self.on_swap:
            hook(old, new)

    def fail(self, exc: BaseException) -> None:
        """A helper thread gave up: stop after the batch in flight, and report it."""
        self.fatal = exc
        self.stop_event.set()

    def feed_backlog(self, backlog: int) -> None:
        """Review requests produced minus labels received (from the backlog watcher thread)."""
        self.policy.feed_backlog(backlog)

    # --- health --------------------------------------------------------------------------
    def readiness(self) -> dict[str, bool]:
        """Named readiness checks, from state the loop thread refreshes after every poll
        (the HTTP thread never touches the Kafka client)."""
        return {
            "model_loaded": self.model is not None,
            "partitions_assigned": self._assigned,
            "broker_reachable": self.loop.broker_ok and self._connected,
            # kafka clients block (flush, group rejoin) while the broker is unreachable,
            # so the flags above go stale; a loop that stopped moving is not ready either.
            "loop_responsive": time.monotonic() - self.loop.progress_at < STALL_S,
            # a fault of the environment holds the batch in hand (readiness_reasons says which)
            "not_blocked": not_blocked(self.loop),
        }

    def readiness_reasons(self) -> dict[str, str]:
        return blocked_reasons(self.loop)

    def _refresh_health(self, _batch: Optional[RecordBatch]) -> None:
        self.loop.progress_at = time.monotonic()
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
        try:
            self.loop.run(max_batches=max_batches, idle_exit_s=idle_exit_s)
        finally:
            self.close()

    def _handle(self, batch: RecordBatch) -> BatchResult:
        return process_batch(batch, self.model, self.policy, self._config)

    def _observe(self, step: Step[BatchResult]) -> None:
        m = self.metrics
        batch, acked = step.batch, step.acked_at
        for (topic, reason), n in Counter(map(_topic_reason, step.delivered)).items():
            route = self._route.get(topic, "other")
            m.samples.labels(route=route, reason=reason).inc(n)
            if route == "dlq":
                m.dlq.labels(stage=reason).inc(n)
        m.batch_size.observe(len(batch))
        results = [part.result for part in step.parts]
        if any(r.decisions is not None for r in results):
            self.policy_metrics.update(self.policy.snapshot(), self.policy.drain_suppressed())
        for result in results:
            d = result.decisions
            if d is not None and d.annotators is not None:  # requests by the people each asks for
                for k, n in zip(*np.unique(d.annotators[d.review | d.audit], return_counts=True)):
                    m.review_annotators.labels(annotators=str(k)).inc(int(n))
        m.batches.inc()
        m.last_batch.set(acked)
        for result in results:
            if result.scores is None:
                continue
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

