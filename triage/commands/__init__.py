"""CLI subcommands; importing this package registers them with ``triage.cli``."""

from triage.commands import audit, broker, quickstart, serve  # noqa: F401
