"""Every scorer replica's model watcher: reads the models topic with no consumer group (each
replica sees every event), loads the registry's CURRENT in the background, and hands a
verified, warmed model to the scorer, which swaps it in between batches.

The event is a hint; the registry is the source of truth. A bad bundle or event is refused,
logged and counted, and the old model keeps serving: whatever loading a candidate raises
(a model failing its canary at any batch size the scorer runs included) refuses that
version once, never the watcher. The watcher runs the guarded loop in a
supervised thread: any record is survivable, and a crash of the thread itself restarts it,
or ends the process non-zero when restarting does not help.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

from consumers.loop import GuardedLoop
from consumers.scorer import Scorer
from triage.contracts import ModelEvent, decode_model_event
from triage.errors import (
    WORLD, IncompatibleModelError, InputError, IntegrityError, ModelError, ModelRunError, RegistryError, TriageError,
    blame,
)
from triage.policies import prepare_model
from triage.records import OutRecord, RecordBatch
from triage.lifecycle.registry import Registry
from triage.scoring.servable import ServingModel
from triage.lifecycle.loading import serving_model_from_registry
from triage.settings import Settings
from triage.runtime.threads import Supervised
from triage.transport import Consumer, make_consumer

log = logging.getLogger("triage.watcher")


def refusal_reason(exc: Exception) -> str:
    if isinstance(exc, IntegrityError):
        return "sha256"
    if isinstance(exc, IncompatibleModelError):
        return "incompatible"
    if isinstance(exc, (RegistryError, OSError)):  # the registry, or the disk under its cache
        return "registry"
    if isinstance(exc, ModelRunError):
        return "runtime"
    if isinstance(exc, ModelError):
        return "load"
    return "error"


class ModelWatcher:
    def __init__(self, settings: Settings, registry: Registry, scorer: Scorer, *,
                 on_fatal: Optional[Callable[[BaseException], None]] = None) -> None:
        self.settings = settings
        self.registry = registry
        self.scorer = scorer
        self._refused: set[tuple[str, str]] = set()
        self._unreadable: dict[str, str] = {}  # version -> why its manifest could not be read (re-read each sync)
        self._consumer: Optional[Consumer] = None
        self._next_check = 0.0
        self._lock = threading.Lock()  # sync() runs from the loop and from tests
        restarts = scorer.metrics.loop.helper_restarts.labels(thread="model-watcher")
        self._helper = Supervised("model-watcher", self._run, on_fatal=on_fatal or scorer.fail,
                                  on_restart=lambda exc: restarts.inc())

    @property
    def stop_event(self) -> threading.Event:
        return self._helper.stop_event

    def start(self) -> "ModelWatcher":
        # Subscribe (at the end of the topic) before returning, so no event published after
        # start-up is missed; CURRENT is re-checked on every event and every poll interval.
        self._consumer = make_consumer(self.settings, [self.settings.topics.models_topic], group_id=None,
                                       from_beginning=False)
        self.scorer.still_current = self._still_current
        self._sync_live()  # a restarted replica keeps the live threshold
        self._helper.start()
        return self

    def stop(self) -> None:
        self._helper.stop()
        if self._consumer is not None:
            self._consumer.close()

    def is_alive(self) -> bool:
        return self._helper.is_alive()

    def _run(self, stop: threading.Event) -> None:
        assert self._consumer is not None
        self._next_check = time.monotonic() + self.settings.serving.registry_poll_s
        GuardedLoop(
            "model-watcher", self._consumer, self.handle, commit=False, max_records=100, poll_timeout_ms=500,
            after_poll=self._periodic_sync, metrics=self.scorer.metrics.loop, stop=stop,
            blocked_exit_s=self.settings.operations.blocked_exit_s,
        ).run()

    def _periodic_sync(self, _batch: Optional[RecordBatch]) -> None:
        if time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + self.settings.serving.registry_poll_s
            self.sync()

    def handle(self, batch: RecordBatch) -> list[OutRecord]:
        """Each event is checked, then triggers a sync; a bad one is refused and counted."""
        for value in batch.values:
            self.handle_event(value)
        return []

    def handle_event(self, value: Optional[bytes]) -> None:
        try:
            event = self._validate(value)
        except (InputError, RegistryError) as exc:
            self._refuse("path" if isinstance(exc, RegistryError) else "bad_event", None, exc)
            return
        log.info("model event: %s %s", event.action, event.version)
        self.sync()

    def _validate(self, value: Optional[bytes]) -> ModelEvent:
        event = decode_model_event(value, self.settings.serving.max_message_bytes)
        self.registry.check_event_path(event.path, event.version)
        return event

    def _still_current(self, version: str) -> bool:
        try:
            return self.registry.current() == version
        except (OSError, TriageError):
            return True  # cannot tell now; the next sync re-checks CURRENT anyway

    def sync(self) -> Optional[ServingModel]:
        """Load CURRENT if it differs from what is served (or queued). Returns the offered model."""
        with self._lock:
            offered = self._sync()
            self._sync_live()
            return offered

    def _sync_live(self) -> None:
        """Offer CURRENT's live risk threshold (``triage audit`` writes it) when it changed."""
        try:
            version = self.registry.current()
            doc = self.registry.live_risk(version) if version is not None else None
        except (OSError, TriageError) as exc:
            log.error("cannot read the live risk threshold: %s", exc)
            return
        if version is not None and doc is not None and self.scorer.live_risk != (version, doc):
            self.scorer.offer_live_risk(version, doc)

    def _sync(self) -> Optional[ServingModel]:
        try:
            version = self.registry.current()
        except (OSError, TriageError) as exc:
            self._refuse("registry", None, exc)
            return None
        running = self.scorer.model
        pending = self.scorer.pending_version
        if version is None:
            return None
        if version == running.version:
            if pending is not None:  # a rollback overtook the queued offer
                self.scorer.withdraw_offer()
                log.info("withdrew queued model %s: CURRENT is back to %s", pending, version)
            return None
        if version == pending:
            return None
        try:
            sha = str(self.registry.manifest(version).get("sha256", ""))
        except TriageError as exc:  # read again at every sync, refused (logged, counted) once per cause
            if self._unreadable.get(version) != exc.message:
                self._unreadable[version] = exc.message
                self._refuse("registry", version, exc)
            return None
        self._unreadable.pop(version, None)
        if (version, sha) in self._refused:
            return None
        try:
            model = prepare_model(self.settings.policy, serving_model_from_registry(
                self.registry, version, self.settings.serving, running=running))
        except Exception as exc:  # noqa: BLE001 - whatever a candidate raises refuses it, never the watcher
            # the world's faults (store unreachable, a full disk) are retried next sync; a model's
            # own never (ModelRunError is retriable for the rows it failed, not for the model)
            if isinstance(exc, ModelError) or blame(exc) != WORLD:
                self._refused.add((version, sha))
            self._refuse(refusal_reason(exc), version, exc)
            return None
        self.scorer.offer_model(model)
        log.info("model %s loaded, verified and warmed; swapping in between batches", version)
        return model

    def _refuse(self, reason: str, version: Optional[str], exc: Exception) -> None:
        message = exc.message if isinstance(exc, TriageError) else f"{type(exc).__name__}: {exc}"
        log.error("refused model %s (%s): %s; still serving %s", version or "?", reason, message,
                  self.scorer.model.version)
        self.scorer.metrics.swaps.labels(result="refused").inc()
        self.scorer.metrics.refusals.labels(reason=reason).inc()
