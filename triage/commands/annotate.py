"""``triage annotate``: the annotator console."""

from __future__ import annotations

import argparse
import getpass
import sys

from triage.commands.base import subcommand
from triage.errors import ConfigError
from triage.settings import Settings
from triage.transport import check_broker


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--annotator", help="your name, recorded on every label (default: $USER)")
    p.add_argument("--registry", dest="registry", default=argparse.SUPPRESS, metavar="DIR",
                   help="read the class names from the registry's current model")
    p.add_argument("--classes", dest="classes", default=argparse.SUPPRESS, help="comma-separated class names")
    p.add_argument("--annotator-group", default="triage-annotators",
                   help="consumer group shared by annotators (each request goes to one of them); with --pool, "
                        "the prefix of each annotator's own group (GROUP-NAME)")
    p.add_argument("--pool", default=None, metavar="NAME,NAME,...",
                   help="every annotator labelling this review topic, this one included (the same list on every "
                        "console): each console reads every request and shows it to as many of the pool as it asks "
                        "for, never to one who labelled it already (docs/guide/annotating.md)")


@subcommand("annotate", "Label review requests in the terminal, most informative first, one keystroke each.",
            ("connection", "topics"), _args, fields=("blocked_exit_s",))
def run(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.annotator import Console, group_for, raw_terminal
    from triage.annotation.routing import parse_pool
    from triage.lifecycle.registry import registry_from

    classes = settings.serving.class_names
    if classes is None and settings.serving.registry is not None:
        registry = registry_from(settings.serving)
        current = registry.current()
        if current is None:
            raise ConfigError(f"registry {settings.serving.registry} has no current model to take class names from")
        classes = list(registry.manifest(current)["classes"])
    if not classes:
        raise ConfigError("the console needs the class names: pass --registry DIR or --classes a,b,c")
    name = args.annotator or getpass.getuser()
    pool = parse_pool(args.pool) if args.pool is not None else None
    if args.pool is not None and not pool:
        raise ConfigError("--pool needs at least one name")
    if pool and name not in pool:
        raise ConfigError(f"--annotator {name!r} is not in --pool {','.join(pool)}")
    check_broker(settings)
    if not sys.stdin.isatty():
        raise ConfigError("triage annotate needs an interactive terminal on stdin")
    console = Console(settings, classes, name, group_id=group_for(args.annotator_group, name, pool), pool=pool)
    with raw_terminal(sys.stdin):
        return console.run()
