"""CLI subcommands; importing this package registers them with ``triage.cli``."""

from triage.commands import annotate, broker, demo, models, quickstart, retrain, select, serve, train  # noqa: F401
