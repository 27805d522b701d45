"""The ``triage`` subcommands, one module each.

Each module declares its command with ``triage.commands.base.subcommand``; ``load_commands``
imports them (cheaply: a command imports its heavy dependencies inside ``run``) and returns
their specs for ``triage.cli`` to build the parser from. Nothing here imports ``triage.cli``.
"""

from __future__ import annotations

import importlib

from triage.commands.base import COMMANDS, CommandSpec

MODULES = (
    "annotate", "audit", "broker", "demo", "label_studio", "labels", "models", "monitor", "quickstart",
    "replay", "retrain", "select", "serve", "simulate", "train",
)
"""The command modules, in the order ``triage --help`` lists them."""


def load_commands() -> list[CommandSpec]:
    """Every command's spec, in ``MODULES`` order (importing a module registers its command)."""
    for name in MODULES:
        importlib.import_module(f"triage.commands.{name}")
    order = {f"triage.commands.{m}": i for i, m in enumerate(MODULES)}
    return sorted(COMMANDS, key=lambda spec: order.get(spec.run.__module__, len(order)))
