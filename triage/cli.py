"""The ``triage`` command. Entry points are the only place that reads the environment.

The commands live in ``triage.commands`` and declare themselves with
``triage.commands.base.subcommand`` (their arguments and the settings sections they take);
this module builds the parser from them, turns flags into ``Settings``, sets up logging and
maps errors to exit codes. Setting flags: one group per settings section, see
``triage.commands.base``.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import threading
import time
from typing import Callable, Optional, Sequence

import pydantic

from triage.commands.base import build_command
from triage.errors import ConfigError, TriageError
from triage.settings import FIELD_SECTION, Settings, env_var, flag_of

log = logging.getLogger("triage")


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {k: v for k, v in vars(args).items() if k in FIELD_SECTION}
    try:
        return Settings(**overrides)
    except pydantic.ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "settings"
            known = loc in FIELD_SECTION
            flag = f"{flag_of(loc) if known else '--' + loc.replace('_', '-')} / {env_var(loc)}" \
                if loc != "settings" else "settings"
            lines.append(f"  {flag}: {err['msg']}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None


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


def configure_logging(level: str, *, client_logs: bool = False, secrets: Sequence[str] = ()) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for name in CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(client_log_level(level, client_logs))
    for handler in logging.getLogger().handlers:
        for old in [f for f in handler.filters if isinstance(f, (RateLimit, Redact))]:
            handler.removeFilter(old)
        handler.addFilter(Redact(secrets))
        handler.addFilter(RateLimit())


def _secrets(settings: Settings) -> list[str]:
    conn = settings.connection
    return [s.get_secret_value() for s in (conn.sasl_password, conn.ssl_key_password) if s is not None]


def build_parser() -> argparse.ArgumentParser:
    from triage.commands import load_commands

    parser = argparse.ArgumentParser(
        prog="triage",
        description="Score a Kafka stream with an ONNX classifier; send uncertain and outlier "
        "samples to human review; retrain and hot-swap.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for spec in load_commands():
        build_command(sub, spec)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    name = " ".join(["triage", args.command] + ([args.action] if getattr(args, "action", None) else []))
    try:
        settings = settings_from_args(args)
        configure_logging(settings.operations.log_level, client_logs=settings.connection.client_logs,
                          secrets=_secrets(settings))
        return int(args._handler(settings, args) or 0)
    except ConfigError as exc:
        print(f"{name}: {exc.message}", file=sys.stderr)
        return 2
    except TriageError as exc:
        print(f"{name}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

