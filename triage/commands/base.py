"""How commands declare themselves, and the setting flags they take.

A command module defines ``run(settings, args)`` decorated with :func:`subcommand`, which
records a :class:`CommandSpec` in :data:`COMMANDS`; ``triage.cli`` turns the specs into the
argparse tree. This module (and every command module) imports nothing heavy and never
``triage.cli``: a command imports its real dependencies inside ``run``, so building the
parser (``triage X --help``) stays cheap.

Setting flags are generated from ``Settings``: one flag group per settings section
(connection, topics, serving, policy, retrain, operations, label_studio). A command names
the sections it takes, plus single fields of other sections it also reads (``fields``); each
field becomes ``--field-name`` (or the flag the field names itself), and its help is the
field's docstring plus its default and env variable.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, get_args

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from triage.errors import ConfigError, TriageError
from triage.settings import FIELD_SECTION, SECTIONS, Settings, env_var, flag_of

log = logging.getLogger("triage")

Command = Callable[[Settings, argparse.Namespace], int]
Arguments = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class Action:
    """One action of a command with actions (``triage models promote``): its own arguments
    and the settings sections (and single fields) it takes besides the command's."""

    name: str
    help: str
    arguments: Optional[Arguments] = None
    sections: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class CommandSpec:
    """``triage NAME``: its help, own arguments, settings sections and fields, actions, handler."""

    name: str
    help: str
    run: Command
    sections: tuple[str, ...] = ()
    arguments: Optional[Arguments] = None
    actions: tuple[Action, ...] = ()
    fields: tuple[str, ...] = ()


COMMANDS: list[CommandSpec] = []
"""Every registered command, in registration order (``triage.commands`` imports them by name)."""


def subcommand(
    name: str, help_text: str, sections: Sequence[str] = (),
    arguments: Optional[Arguments] = None, actions: Sequence[Action] = (), fields: Sequence[str] = (),
) -> Callable[[Command], Command]:
    """Register ``triage NAME``: its own arguments, the setting flags of ``sections`` and the
    single settings ``fields`` it reads from other sections.

    With ``actions`` (``triage NAME ACTION``), ``arguments``, ``sections`` and ``fields`` are
    the command's group options: each is accepted before the action and after it (``triage
    models --registry R rollback`` and ``triage models rollback --registry R``), and each
    action's --help lists them. Every such option defaults to argparse.SUPPRESS on both
    levels, so the position not used never overrides the other with a default."""
    unknown = [s for s in [*sections, *(s for a in actions for s in a.sections)] if s not in SECTIONS]
    unknown += [f for f in [*fields, *(f for a in actions for f in a.fields)] if f not in FIELD_SECTION]
    if unknown:
        raise ValueError(f"triage {name}: unknown settings section(s) or field(s): {', '.join(unknown)}")

    def register(fn: Command) -> Command:
        COMMANDS.append(CommandSpec(name, help_text, fn, tuple(sections), arguments, tuple(actions), tuple(fields)))
        return fn

    return register


def escape_help(text: str) -> str:
    """``text`` for argparse's help, which %-formats it: a literal ``%`` becomes ``%%``."""
    return text.replace("%", "%%")


def build_command(sub: argparse._SubParsersAction, spec: CommandSpec) -> argparse.ArgumentParser:
    """Add ``triage NAME`` (and its actions) to ``sub``."""
    p = sub.add_parser(spec.name, help=escape_help(spec.help), description=escape_help(spec.help),
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    if spec.arguments:
        spec.arguments(p)
    add_settings_flags(p, spec.sections, spec.fields)
    if spec.actions:
        subs = p.add_subparsers(dest="action", required=True, metavar="ACTION")
        for action in spec.actions:
            a = subs.add_parser(action.name, help=escape_help(action.help), description=escape_help(action.help),
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
            if action.arguments:
                action.arguments(a)
            if spec.arguments:
                spec.arguments(a)
            add_settings_flags(a, spec.sections + action.sections, spec.fields + action.fields)
    p.set_defaults(_handler=spec.run)
    return p


def add_settings_flags(parser: argparse.ArgumentParser, sections: Sequence[str], fields: Sequence[str] = ()) -> None:
    """Add ``--flag`` for every field of ``sections``, and for each of ``fields``, in one
    argument group per section (defaults suppressed so only flags actually given override the
    environment). A flag the command already defines itself (e.g. ``--registry``,
    ``--model``) is left as the command defined it."""
    wanted = list(dict.fromkeys([*sections, *(FIELD_SECTION[f] for f in fields)]))
    for section in sections_in_order(wanted):
        cls = SECTIONS[section]
        names = list(cls.model_fields) if section in sections else [f for f in cls.model_fields if f in fields]
        names = [n for n in names if flag_of(n) not in parser._option_string_actions]
        if not names:
            continue
        group = parser.add_argument_group(f"{section} settings", escape_help(section_summary(section)))
        for name in names:
            add_setting_flag(group, name)


def sections_in_order(names: Sequence[str]) -> list[str]:
    """``names`` in the order of ``SECTIONS`` (so every command lists its groups alike)."""
    return [s for s in SECTIONS if s in names]


def section_summary(section: str) -> str:
    """The first paragraph of a section class's docstring, on one line."""
    doc = (SECTIONS[section].__doc__ or "").strip().split("\n\n")[0]
    return " ".join(doc.split())


def add_setting_flag(parser: Any, name: str) -> None:
    """``--name`` for the Settings field ``name`` (help: its docstring, default and env
    variable; default suppressed)."""
    field = settings_field(name)
    flag = flag_of(name)
    help_text = escape_help(f"{' '.join((field.description or '').split())} "
                            f"[default: {shown_default(name)}; env {env_var(name)}]")
    choices = choices_of(field.annotation)
    if field.annotation is bool:
        parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                            default=argparse.SUPPRESS, help=help_text)
    else:
        parser.add_argument(flag, dest=name, default=argparse.SUPPRESS, choices=choices,
                            metavar=name.upper() if not choices else None, help=help_text)


def settings_field(name: str) -> FieldInfo:
    return SECTIONS[FIELD_SECTION[name]].model_fields[name]


def shown_default(name: str) -> str:
    """A field's default as help shows it (secrets masked, None as ``(unset)``)."""
    default = settings_field(name).default
    if default is None:
        return "(unset)"
    return "*****" if isinstance(default, SecretStr) else str(default)


def choices_of(annotation: Any) -> Optional[list[str]]:
    """The allowed values of a ``Literal`` (or ``Optional[Literal]``) field, else None."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    inner = args[0] if len(args) == 1 else annotation
    literal = get_args(inner)
    if literal and all(isinstance(v, str) for v in literal):
        return list(literal)
    return None


def registry_arg(p: argparse.ArgumentParser, required: bool = True) -> None:
    """``--registry DIR|s3://bucket/prefix``, parsed into ``settings.serving.registry`` like the settings flag."""
    p.add_argument("--registry", dest="registry", required=required, default=argparse.SUPPRESS,
                   metavar="DIR|s3://BUCKET/PREFIX", help="model registry: a directory, or s3://bucket/prefix with "
                   "the endpoint and credentials from the AWS environment [env TRIAGE_REGISTRY]")


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGTERM/SIGINT set ``stop``: the loops finish their batch, flush, commit and leave."""

    owner = os.getpid()

    def handler(signum: int, _frame: Any) -> None:
        if os.getpid() != owner:
            # A process a library forked (a worker pool) inherited this handler: a pool ends its
            # workers with SIGTERM, so they must die as the default action would, not log and wait.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if stop.is_set():  # second signal: the user means it
            raise KeyboardInterrupt
        log.info("received %s: finishing the current batch, then stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_guarded(name: str, command: Callable[[], int]) -> int:
    """``command()``'s exit code; a triage error is one line on stderr (2 for bad configuration)."""
    try:
        return command()
    except ConfigError as exc:
        print(f"{name}: {exc.message}", file=sys.stderr)
        return 2
    except TriageError as exc:
        print(f"{name}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
