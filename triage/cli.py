"""The ``triage`` command. Entry points are the only place that reads the environment.

Setting flags are generated from ``Settings``: every field in a command's groups becomes
``--field-name``, its help is the field's docstring plus its default and env variable.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any, Callable, Optional, Sequence, get_args

from pydantic import SecretStr, ValidationError

from triage.errors import ConfigError, TriageError
from triage.settings import Settings

log = logging.getLogger("triage")

Command = Callable[[Settings, argparse.Namespace], int]
_BUILDERS: list[Callable[[argparse._SubParsersAction], None]] = []


def add_settings_flags(parser: argparse.ArgumentParser, groups: Sequence[str]) -> None:
    """Add ``--flag`` for every Settings field in ``groups`` (defaults suppressed so only
    flags actually given override the environment)."""
    for group in groups:
        section = parser.add_argument_group(f"{group} settings")
        for name, field in dict(Settings.fields()).items():
            extra = field.json_schema_extra or {}
            if not isinstance(extra, dict) or extra.get("group") != group:
                continue
            default = field.default
            shown = "(unset)" if default is None else ("*****" if isinstance(default, SecretStr) else default)
            help_text = f"{field.description or ''} [default: {shown}; env TRIAGE_{name.upper()}]"
            flag = "--" + name.replace("_", "-")
            choices = _choices(field.annotation)
            if field.annotation is bool:
                section.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                                     default=argparse.SUPPRESS, help=help_text)
            else:
                section.add_argument(flag, dest=name, default=argparse.SUPPRESS, choices=choices,
                                     metavar=name.upper() if not choices else None, help=help_text)


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
            flag = f"--{loc.replace('_', '-')} / TRIAGE_{loc.upper()}" if loc != "settings" else "settings"
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


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # outages: our own warnings say it once
    logging.getLogger("rdkafka").setLevel(logging.ERROR)


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


def subcommand(
    name: str, help_text: str, groups: tuple[str, ...] = (),
    arguments: Optional[Callable[[argparse.ArgumentParser], None]] = None,
) -> Callable[[Command], Command]:
    """Register ``triage NAME``: its own arguments plus the settings flags of ``groups``."""

    def register(fn: Command) -> Command:
        def build(sub: argparse._SubParsersAction) -> None:
            p = sub.add_parser(name, help=help_text, description=help_text,
                               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
            if arguments:
                arguments(p)
            add_settings_flags(p, groups)
            p.set_defaults(_handler=fn)

        _BUILDERS.append(build)
        return fn

    return register


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
        configure_logging(settings.operations.log_level)
        return int(args._handler(settings, args) or 0)
    except ConfigError as exc:
        print(f"triage {args.command}: {exc.message}", file=sys.stderr)
        return 2
    except TriageError as exc:
        print(f"triage {args.command}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

