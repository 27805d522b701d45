"""The ``triage`` command. Entry points are the only place that reads the environment.

Setting flags are generated from ``Settings``: every field in a command's groups becomes
``--field-name``, its help is the field's docstring plus its default and env variable.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, get_args

from pydantic import SecretStr, ValidationError

from triage.errors import ConfigError, TriageError
from triage.settings import Settings

log = logging.getLogger("triage")

Command = Callable[[Settings, argparse.Namespace], int]
_BUILDERS: list[Callable[[argparse._SubParsersAction], None]] = []


def add_settings_flags(parser: argparse.ArgumentParser, groups: Sequence[str]) -> None:
    """Add ``--flag`` for every Settings field in ``groups`` (defaults suppressed so only
    flags actually given override the environment). A flag the command already defines
    itself (e.g. ``--registry``, ``--model``) is left as the command defined it."""
    for group in groups:
        section = parser.add_argument_group(f"{group} settings")
        for name, field in dict(Settings.fields()).items():
            extra = field.json_schema_extra or {}
            if isinstance(extra, dict) and extra.get("group") == group:
                add_setting_flag(section, name)


def add_setting_flag(parser: Any, name: str) -> None:
    """``--name`` for the Settings field ``name`` (help: its docstring, default and env
    variable; default suppressed), unless ``parser`` already has that flag."""
    field = dict(Settings.fields())[name]
    flag = flag_of(name)
    if flag in parser._option_string_actions:
        return
    default = field.default
    shown = "(unset)" if default is None else ("*****" if isinstance(default, SecretStr) else default)
    help_text = f"{field.description or ''} [default: {shown}; env TRIAGE_{name.upper()}]"
    choices = _choices(field.annotation)
    if field.annotation is bool:
        parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                            default=argparse.SUPPRESS, help=help_text)
    else:
        parser.add_argument(flag, dest=name, default=argparse.SUPPRESS, choices=choices,
                            metavar=name.upper() if not choices else None, help=help_text)


def flag_of(name: str) -> str:
    """The flag of a Settings field: ``--field-name`` unless the field names its own."""
    extra = dict(Settings.fields())[name].json_schema_extra
    custom = extra.get("flag") if isinstance(extra, dict) else None
    return str(custom) if custom else "--" + name.replace("_", "-")


def _choices(annotation: Any) -> Optional[list[str]]:
    args = [a for a in get_args(annotation) if a is not type(None)]
    inner = args[0] if len(args) == 1 else annotation
    literal = get_args(inner)
    if literal and all(isinstance(v, str) for v in literal):
        return list(literal)
    return None


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {k: v for k, v in vars(args).items() if k in dict(Settings.fields())}
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "settings"
            known = loc in dict(Settings.fields())
            flag = f"{flag_of(loc) if known else '--' + loc.replace('_', '-')} / TRIAGE_{loc.upper()}" \
                if loc != "settings" else "settings"
            lines.append(f"  {flag}: {err['msg']}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGTERM/SIGINT set ``stop``: the loops finish their batch, flush, commit and leave."""

    def handler(signum: int, _frame: Any) -> None:
        if stop.is_set():  # second signal: the user means it
            raise KeyboardInterrupt
        log.info("received %s: finishing the current batch, then stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


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
    # Command modules register themselves on import.
    from triage import commands  # noqa: F401

    parser = argparse.ArgumentParser(
        prog="triage",
        description="Score a Kafka stream with an ONNX classifier; send uncertain and outlier "
        "samples to human review; retrain and hot-swap.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for build in _BUILDERS:
        build(sub)
    return parser


Arguments = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class Action:
    """One action of a command with actions (``triage models promote``): its own arguments
    and the settings groups it takes besides the command's."""

    name: str
    help: str
    arguments: Optional[Arguments] = None
    groups: tuple[str, ...] = ()


def subcommand(
    name: str, help_text: str, groups: tuple[str, ...] = (),
    arguments: Optional[Arguments] = None, actions: Sequence[Action] = (),
) -> Callable[[Command], Command]:
    """Register ``triage NAME``: its own arguments plus the settings flags of ``groups``.

    With ``actions`` (``triage NAME ACTION``), ``arguments`` and ``groups`` are the command's
    group options: each is accepted before the action and after it (``triage models
    --registry R rollback`` and ``triage models rollback --registry R``), and each action's
    --help lists them. Every such option defaults to argparse.SUPPRESS on both levels, so the
    position not used never overrides the other with a default."""

    def register(fn: Command) -> Command:
        def build(sub: argparse._SubParsersAction) -> None:
            p = sub.add_parser(name, help=help_text, description=help_text,
                               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
            if arguments:
                arguments(p)
            add_settings_flags(p, groups)
            if actions:
                subs = p.add_subparsers(dest="action", required=True, metavar="ACTION")
                for action in actions:
                    a = subs.add_parser(action.name, help=action.help, description=action.help,
                                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
                    if action.arguments:
                        action.arguments(a)
                    if arguments:
                        arguments(a)
                    add_settings_flags(a, groups + action.groups)
            p.set_defaults(_handler=fn)

        _BUILDERS.append(build)
        return fn

    return register


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

