"""Threads: BLAS threads (numpy) capped once per process, and supervised helper threads."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

from threadpoolctl import threadpool_limits

from triage.errors import BlockedError

log = logging.getLogger("triage.threads")

_applied: list[object] = []  # keeps the limiter alive for the process lifetime


def limit_blas_threads(threads: int) -> None:
    """Cap BLAS (OpenBLAS/MKL) threads; 0 leaves the library default.

    Multi-threaded BLAS on a (1000 x 64) @ (64 x 64) product spends more time waking and
    spinning threads than computing, and measured 15x slower on a busy 2-core machine.
    """
    if threads > 0:
        _applied.append(threadpool_limits(limits=threads, user_api="blas"))


class Supervised:
    """A helper thread that never dies silently.

    ``target(stop)`` runs in a daemon thread until ``stop`` is set. If it raises, the error is
    logged with its traceback and the target restarts after a backoff. More than
    ``max_restarts`` crashes within ``window_s`` means restarting does not help: ``on_fatal``
    is called (the process then exits non-zero, so the orchestrator restarts it). So is a
    ``BlockedError`` at once: its loop was held past ``--blocked-exit-s``, and a restart of the
    thread would only restart that clock.
    """

    def __init__(
        self,
        name: str,
        target: Callable[[threading.Event], None],
        *,
        on_fatal: Callable[[BaseException], None],
        max_restarts: int = 5,
        window_s: float = 300.0,
        backoff_s: float = 1.0,
        on_restart: Optional[Callable[[BaseException], None]] = None,
    ) -> None:
        self.name = name
        self.target = target
        self.on_fatal = on_fatal
        self.on_restart = on_restart
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.backoff_s = backoff_s
        self.stop_event = threading.Event()
        self.crashes: list[float] = []
        self.fatal: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "Supervised":
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_event.set()
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.target(self.stop_event)
                return
            except BaseException as exc:  # noqa: BLE001 - a dying helper must be seen
                now = time.monotonic()
                self.crashes = [t for t in self.crashes if now - t < self.window_s] + [now]
                if isinstance(exc, BlockedError):
                    log.critical("%s: %s", self.name, exc.message)
                    self.fatal = exc
                    self.on_fatal(exc)
                    return
                if len(self.crashes) > self.max_restarts:
                    log.critical("%s crashed %d times in %.0f s; giving up: %s: %s", self.name,
                                 len(self.crashes), self.window_s, type(exc).__name__, exc, exc_info=exc)
                    self.fatal = exc
                    self.on_fatal(exc)
                    return
                log.error("%s crashed (%s: %s); restarting in %.1f s", self.name, type(exc).__name__, exc,
                          self.backoff_s * len(self.crashes), exc_info=exc)
                if self.on_restart is not None:
                    self.on_restart(exc)
                self.stop_event.wait(self.backoff_s * len(self.crashes))
