"""Every scorer replica's model watcher: reads the models topic with no consumer group (each
replica sees every event), loads the registry's CURRENT in the background, and hands a
verified, warmed model to the scorer, which swaps it in between batches.

The event is a hint; the registry is the source of truth. A bad bundle or event is refused,
logged and counted, and the old model keeps serving.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Optional

from consumers.scorer import Scorer
from triage.errors import IncompatibleModelError, IntegrityError, ModelError, RegistryError, TriageError
from triage.policies import prepare_model
from triage.registry import Registry
from triage.serving import ServingModel, serving_model_from_registry
from triage.settings import Settings
from triage.transport import Consumer, make_consumer

log = logging.getLogger("triage.watcher")


def refusal_reason(exc: Exception) -> str:
    if isinstance(exc, IntegrityError):
        return "sha256"
    if isinstance(exc, IncompatibleModelError):
        return "incompatible"
    if isinstance(exc, RegistryError):
        return "registry"
    if isinstance(exc, ModelError):
        return "load"
    return "error"


class ModelWatcher:
    def __init__(self, settings: Settings, registry: Registry, scorer: Scorer) -> None:
        self.settings = settings
        self.registry = registry
        self.scorer = scorer
        self.stop_event = threading.Event()
        self._refused: set[tuple[str, str]] = set()
        self._consumer: Optional[Consumer] = None
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)

    def start(self) -> "ModelWatcher":
        # Subscribe (at the end of the topic) before returning, so no event published after
        # start-up is missed; CURRENT is re-checked on every event and every poll interval.
        self._consumer = make_consumer(self.settings, [self.settings.topics.models_topic], group_id=None, from_beginning=False)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self._thread.join(30)

    def _run(self) -> None:
        assert self._consumer is not None
        next_check = time.monotonic() + self.settings.serving.registry_poll_s
        try:
            while not self.stop_event.is_set():
                try:
                    batch = self._consumer.poll_batch(100, 500)
                except TriageError as exc:
                    log.warning("models topic poll failed: %s", exc.message)
                    self.stop_event.wait(1.0)
                    continue
                for value in batch.values:
                    self.handle_event(value)
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + self.settings.serving.registry_poll_s
                    self.sync()
        finally:
            self._consumer.close()

    def handle_event(self, value: Optional[bytes]) -> None:
        try:
            event = self._validate(value)
        except (ValueError, TriageError) as exc:
            self._refuse("bad_event" if not isinstance(exc, RegistryError) else "path", None, exc)
            return
        log.info("model event: %s %s", event["action"], event["version"])
        self.sync()

    def _validate(self, value: Optional[bytes]) -> dict[str, Any]:
        event = json.loads(value) if value else None
        if not isinstance(event, dict) or not all(isinstance(event.get(k), str) for k in ("version", "sha256", "path", "action")):
            raise ValueError(f"not a model event (needs version, sha256, path, action): {value[:200]!r}")
        if event["action"] not in ("promote", "rollback"):
            raise ValueError(f"unknown action {event['action']!r}")
        target = self.registry.resolve(event["path"])
        if target != self.registry.model_path(event["version"]).resolve():
            raise RegistryError(f"event path {event['path']!r} is not the bundle of {event['version']}")
        return event

    def sync(self) -> Optional[ServingModel]:
        """Load CURRENT if it differs from what is served. Returns the offered model."""
        try:
            version = self.registry.current()
        except OSError as exc:
            self._refuse("registry", None, exc)
            return None
        running = self.scorer.model
        if version is None or version == running.version:
            return None
        try:
            sha = self.registry.manifest(version).get("sha256", "")
        except TriageError as exc:
            self._refuse("registry", version, exc)
            return None
        if (version, sha) in self._refused:
            return None
        try:
            model = prepare_model(self.settings, serving_model_from_registry(self.registry, version, self.settings, running=running))
        except (TriageError, OSError, ValueError) as exc:
            self._refused.add((version, sha))
            self._refuse(refusal_reason(exc), version, exc)
            return None
        self.scorer.offer_model(model)
        log.info("model %s loaded, verified and warmed; swapping in between batches", version)
        return model

    def _refuse(self, reason: str, version: Optional[str], exc: Exception) -> None:
        message = getattr(exc, "message", str(exc))
        log.error("refused model %s (%s): %s; still serving %s", version or "?", reason, message, self.scorer.model.version)
        self.scorer.metrics.swaps.labels(result="refused").inc()
        self.scorer.metrics.refusals.labels(reason=reason).inc()
