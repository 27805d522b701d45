"""CLI subcommands; importing this package registers them with ``triage.cli``."""

from triage.commands import (  # noqa: F401
    annotate,
    audit,
    broker,
    demo,
    label_studio,
    models,
    quickstart,
    replay,
    retrain,
    select,
    serve,
    simulate,
    train,
)
