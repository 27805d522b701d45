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
from typing import Optional, Sequence

import pydantic

from triage.commands.base import build_command, run_guarded
from triage.errors import ConfigError
from triage.runtime.logs import (  # noqa: F401 - RateLimit, Redact, HIDDEN, client_log_level: tested here
    HIDDEN, RateLimit, Redact, client_log_level, configure_logging, secrets_of,
)
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

    def command() -> int:
        settings = settings_from_args(args)
        configure_logging(settings.operations.log_level, client_logs=settings.connection.client_logs,
                          secrets=secrets_of(settings))
        return int(args._handler(settings, args) or 0)

    return run_guarded(name, command)
