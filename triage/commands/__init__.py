"""CLI subcommands; importing this package registers them with ``triage.cli``."""

from triage.commands import broker, models, quickstart, retrain, serve, train  # noqa: F401
