"""``triage labels rebuild``: rebuild the registry's label store from the labels topic."""

from __future__ import annotations

import argparse
import sys

from triage.commands.base import Action, registry_arg, subcommand
from triage.errors import ConfigError
from triage.settings import Settings
from triage.transport import check_broker


def _group_args(p: argparse.ArgumentParser) -> None:
    registry_arg(p, required=False)  # given before or after the action: required of neither parser


def _rebuild_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--replace", action="store_true",
                   help="set the rows the store holds aside first (a file: renamed; object storage: deleted)")


ACTIONS = (
    Action("rebuild", "rebuild the label store from the labels topic alone (same rows, same order rules)",
           _rebuild_args),
)


@subcommand("labels", "Manage the registry's label store.", ("connection", "topics"), _group_args, ACTIONS,
            ("accept_new_classes", "max_message_bytes"))
def run(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.label_rebuild import rebuild_label_store
    from triage.lifecycle.registry import registry_from

    if settings.serving.registry is None:
        raise ConfigError("needs the registry: --registry DIR|s3://BUCKET/PREFIX (before or after the action) "
                          "or TRIAGE_REGISTRY")
    registry = registry_from(settings.serving)
    registry.check_readable()
    check_broker(settings)
    report = rebuild_label_store(settings, registry, replace=args.replace,
                                 progress=lambda m: print(f"[labels] {m}", file=sys.stderr, flush=True))
    print(f"label store of {registry.location}: {report.rows} rows")
    return 0
