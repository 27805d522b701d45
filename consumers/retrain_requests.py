"""Retrain requests for ``triage retrain``: a loop over ``triage.retrain-requests`` that wakes the
retrain job (``--every S`` runs early, ``--on-request`` runs only then).

A request is a wake-up, not work to do exactly once: several requests before a run make one
run, and offsets are committed once a request is read (a new group starts from the earliest:
requests sent before the job's first start wake it once). A request lost to a crash between that
commit and the run is asked again by the monitor (at most one per version every
``--retrain-request-interval-s``) while the drift lasts.
"""

from __future__ import annotations

import logging
import threading
from typing import Optional

from consumers.loop import GuardedLoop
from triage.contracts.retrain_request import RetrainRequest, decode_retrain_request
from triage.errors import InputError
from triage.metrics import LoopMetrics
from triage.records import OutRecord, RecordBatch
from triage.settings import Settings
from triage.transport import Consumer, make_consumer

log = logging.getLogger("triage.retrain")


class RetrainRequests:
    def __init__(self, settings: Settings, metrics: LoopMetrics, *, consumer: Optional[Consumer] = None) -> None:
        self.settings, self.metrics = settings, metrics
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.last: Optional[RetrainRequest] = None
        self._consumer = consumer
        self._thread: Optional[threading.Thread] = None

    def handle(self, batch: RecordBatch) -> list[OutRecord]:
        for value in batch.values:
            try:
                request = decode_retrain_request(value, self.settings.serving.max_message_bytes)
            except InputError as exc:
                log.warning("retrain: ignored an invalid retrain request (%s)", exc.message)
                continue
            self.last = request
            log.warning("retrain: %s requested a retrain of %s (%s on %s)", "triage monitor",
                        request.model_version, request.reason, request.signal)
            self.wake.set()
        return []

    def start(self) -> "RetrainRequests":
        s = self.settings
        consumer = self._consumer or make_consumer(s, [s.topics.retrain_requests_topic],
                                                   group_id=f"{s.retrain.retrain_group_id}-requests")

        def run() -> None:
            try:
                GuardedLoop("retrain-requests", consumer, self.handle, metrics=self.metrics, stop=self.stop,
                            poll_timeout_ms=s.serving.poll_timeout_ms,
                            blocked_exit_s=None).run()
            finally:
                consumer.close()

        self._thread = threading.Thread(target=run, name="retrain-requests", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        if self._thread is not None:
            self._thread.join(30)
