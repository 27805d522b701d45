"""CLI subcommands; importing this package registers them with ``triage.cli``."""

from triage.commands import broker, quickstart, replay, serve  # noqa: F401
