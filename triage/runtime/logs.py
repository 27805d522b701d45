"""Logging of every triage process: one line format, client libraries' logs rate-limited and
hidden unless asked for, secrets redacted (``triage.cli`` and the scorer's worker processes)."""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from contextlib import contextmanager
from logging.handlers import BufferingHandler
from typing import Callable, Iterator, Sequence

from triage.settings import Settings

CLIENT_LOGGERS = ("rdkafka", "kafka")
"""Where the Kafka client libraries log: librdkafka through the ``logger`` config key
(triage.transport.confluent), kafka-python to its own ``kafka.*`` loggers."""
CLIENT_LOG_EVERY_S = 30.0
HIDDEN = logging.CRITICAL + 1


def _is_client(name: str) -> bool:
    return any(name == n or name.startswith(n + ".") for n in CLIENT_LOGGERS)


class RateLimit(logging.Filter):
    """Lets the same client message through at most once per ``every_s`` seconds; the next
    one that passes says how many were suppressed meanwhile. Messages are the same when
    they differ only in numbers (timings, counters). Records of other loggers pass."""

    MAX_KEYS = 1000

    def __init__(self, every_s: float = CLIENT_LOG_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every_s = every_s
        self.clock = clock
        self._seen: dict[tuple[str, int, str], list[float]] = {}  # key -> [last shown, suppressed]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not _is_client(record.name):
            return True
        text = record.getMessage()
        key = (record.name, record.levelno, re.sub(r"\d+", "#", text))
        now = self.clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is not None and now - entry[0] < self.every_s:
                entry[1] += 1
                return False
            if len(self._seen) >= self.MAX_KEYS:
                self._seen.clear()
            self._seen[key] = [now, 0]
        suppressed = int(entry[1]) if entry is not None else 0
        if suppressed:
            record.msg, record.args = f"{text} [{suppressed} more like this in the last {self.every_s:g} s]", ()
        return True


class Redact(logging.Filter):
    """Replaces secret values in any record's text (kafka-python logs its configuration at DEBUG)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            text = record.getMessage()
            if any(s in text for s in self.secrets):
                for s in self.secrets:
                    text = text.replace(s, "**********")
                record.msg, record.args = text, ()
        return True


def client_log_level(level: str, client_logs: bool) -> int:
    """Client logs are DEBUG-level detail: hidden unless --log-level DEBUG, or shown from
    WARNING up when asked for with --client-logs."""
    if getattr(logging, level) <= logging.DEBUG:
        return logging.DEBUG
    return logging.WARNING if client_logs else HIDDEN


def configure_logging(level: str, *, client_logs: bool = False, secrets: Sequence[str] = (), tag: str = "") -> None:
    """``tag`` (e.g. "worker 1") goes after the logger name on every line."""
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s" + (f" [{tag}]" if tag else "") + ": %(message)s",
        stream=sys.stderr,
    )
    for name in CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(client_log_level(level, client_logs))
    for handler in logging.getLogger().handlers:
        for old in [f for f in handler.filters if isinstance(f, (RateLimit, Redact))]:
            handler.removeFilter(old)
        handler.addFilter(Redact(secrets))
        handler.addFilter(RateLimit())


def secrets_of(settings: Settings) -> list[str]:
    conn = settings.connection
    return [s.get_secret_value() for s in (conn.sasl_password, conn.ssl_key_password) if s is not None]


@contextmanager
def held_back() -> Iterator[Callable[[], None]]:
    """Log records made inside are held back; call the yielded function to emit them (after a
    check that may still end the command in one line, say). Records not emitted are dropped."""
    root = logging.getLogger()
    saved, held = root.handlers[:], BufferingHandler(10_000)
    root.handlers = [held]

    def emit() -> None:
        for record in held.buffer:
            root.handle(record)
        held.buffer.clear()

    try:
        yield emit
    finally:
        root.handlers = saved
