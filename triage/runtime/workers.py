"""N worker processes under one parent: each supervised (restarted with backoff when it dies),
the whole given up when one keeps dying, and all stopped cleanly on a stop.

Workers are started with the ``spawn`` method (a fresh interpreter: no Kafka client, thread or
lock is inherited from the parent). Each gets one end of a pipe: it sends ``("port", N)`` once
its operations endpoint listens, and it stops when the pipe closes (the parent died, even by
SIGKILL, so no worker outlives it). A stop is SIGTERM to every worker: each finishes its batch,
commits and exits, as a single scorer does.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, Callable, Optional

log = logging.getLogger("triage.workers")

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
Target = Callable[[int, Connection], None]  # (slot, pipe) -> runs the worker


@dataclass
class Slot:
    """One worker position: its current process, and the history of its deaths."""

    index: int
    proc: Optional[BaseProcess] = None
    conn: Optional[Connection] = None
    port: Optional[int] = None
    deaths: deque[float] = field(default_factory=deque)  # monotonic times within the window
    restart_at: Optional[float] = None


class GaveUp(Exception):
    """A worker died more often than allowed within the window."""


class WorkerPool:
    """Run ``target(slot, conn)`` in ``n`` processes until ``stop`` is set (``run``)."""

    def __init__(self, n: int, target: Target, *, max_restarts: int, window_s: float,
                 stop: threading.Event, on_death: Callable[[int], None] = lambda slot: None,
                 on_restart: Callable[[int], None] = lambda slot: None) -> None:
        self.slots = [Slot(i) for i in range(n)]
        self.target = target
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.stop = stop
        self.on_death = on_death  # e.g. keep the dead worker's counters (MetricsMerger.retire)
        self.on_restart = on_restart
        self._ctx = multiprocessing.get_context("spawn")

    # --- what the operations endpoint reads (from its own thread) ---------------------------
    def ports(self) -> dict[int, Optional[int]]:
        """slot -> the port of its worker's endpoint (None while it is (re)starting)."""
        return {s.index: s.port if s.proc is not None and s.proc.is_alive() else None for s in self.slots}

    # --- the supervisor loop ----------------------------------------------------------------
    def run(self) -> None:
        """Until ``stop``; then stop every worker and wait for it. Raises GaveUp (after stopping
        the others) when a worker keeps dying."""
        try:
            for slot in self.slots:
                self._start(slot)
            while not self.stop.is_set():
                self._step(timeout_s=0.5)
        finally:
            self.shutdown()

    def _step(self, timeout_s: float) -> None:
        waits: list[Any] = []
        for s in self.slots:
            if s.proc is not None:
                waits.append(s.proc.sentinel)
                if s.conn is not None:
                    waits.append(s.conn)
        ready = wait(waits, timeout_s)
        now = time.monotonic()
        for s in self.slots:
            if s.conn is not None and s.conn in ready:
                self._receive(s)
            if s.proc is not None and s.proc.sentinel in ready:
                self._died(s, now)
            elif s.proc is None and s.restart_at is not None and now >= s.restart_at and not self.stop.is_set():
                self._start(s)

    def _receive(self, s: Slot) -> None:
        assert s.conn is not None
        try:
            kind, value = s.conn.recv()
        except (EOFError, OSError):
            s.conn.close()
            s.conn = None
            return
        if kind == "port":
            s.port = int(value)

    def _died(self, s: Slot, now: float) -> None:
        assert s.proc is not None
        s.proc.join()
        code = s.proc.exitcode
        if s.conn is not None:
            s.conn.close()
        s.proc, s.conn, s.port = None, None, None
        self.on_death(s.index)
        if self.stop.is_set():
            return
        s.deaths.append(now)
        while s.deaths and now - s.deaths[0] > self.window_s:
            s.deaths.popleft()
        if len(s.deaths) > self.max_restarts:
            raise GaveUp(f"worker {s.index} died {len(s.deaths)} times within {self.window_s:g} s "
                         f"(last exit code {code}); see its log lines above")
        backoff = min(FIRST_BACKOFF_S * 2 ** (len(s.deaths) - 1), MAX_BACKOFF_S)
        log.error("worker %d exited with code %s; restarting it in %.1f s (%d of %d restarts allowed within %g s)",
                  s.index, code, backoff, len(s.deaths), self.max_restarts, self.window_s)
        s.restart_at = now + backoff

    def _start(self, s: Slot) -> None:
        parent_end, child_end = self._ctx.Pipe()  # duplex: the worker also reads it, to see the parent go
        proc = self._ctx.Process(target=self.target, args=(s.index, child_end), name=f"triage-worker-{s.index}",
                                 daemon=False)
        proc.start()
        child_end.close()  # only the child holds it: the parent's death closes the pipe
        if s.deaths:
            self.on_restart(s.index)
        s.proc, s.conn, s.port, s.restart_at = proc, parent_end, None, None
        log.info("started worker %d (pid %s)", s.index, proc.pid)

    def shutdown(self) -> None:
        """SIGTERM every worker still running and wait for each (a second stop kills them)."""
        live = [s for s in self.slots if s.proc is not None and s.proc.is_alive()]
        for s in live:
            assert s.proc is not None and s.proc.pid is not None
            try:
                os.kill(s.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            for s in live:
                assert s.proc is not None
                s.proc.join()
        except KeyboardInterrupt:  # the second signal: the user means it
            for s in live:
                assert s.proc is not None
                s.proc.kill()
            raise
        finally:
            for s in self.slots:
                if s.conn is not None:
                    s.conn.close()

    def running(self) -> int:
        return sum(1 for s in self.slots if s.proc is not None and s.proc.is_alive())

    def exit_codes(self) -> list[Optional[int]]:
        return [None if s.proc is None else s.proc.exitcode for s in self.slots]


def watch_parent(conn: Connection, stop: threading.Event) -> threading.Thread:
    """In a worker: set ``stop`` when the pipe from the parent closes (the parent is gone)."""

    def watch() -> None:
        try:
            while conn.recv() is not None:
                pass
        except (EOFError, OSError):
            pass
        if not stop.is_set():
            log.warning("the parent process is gone: stopping this worker")
            stop.set()

    t = threading.Thread(target=watch, name="parent-watch", daemon=True)
    t.start()
    return t
