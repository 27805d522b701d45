"""``--help`` of every command and every action formats, in process, and lists its flags;
building the parser stays cheap (no scikit-learn, matplotlib, skl2onnx, onnxruntime, Kafka
clients) and ``triage.commands`` never imports ``triage.cli``."""

from __future__ import annotations

import argparse
import importlib
import importlib.abc
import sys
from typing import Any

import pytest

from triage.cli import build_parser, main
from triage.commands.base import COMMANDS
from triage.settings import SECTIONS, flag_of


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _tree() -> list[tuple[list[str], argparse.ArgumentParser]]:
    """(argv words, parser) of the top level, every command and every action, by introspection."""
    out: list[tuple[list[str], argparse.ArgumentParser]] = []

    def walk(words: list[str], parser: argparse.ArgumentParser) -> None:
        out.append((words, parser))
        for name, child in _subparsers(parser).items():
            walk([*words, name], child)

    walk([], build_parser())
    return out


TREE = _tree()
TREE_BY_WORDS = [(' '.join(w), p) for w, p in TREE]


def test_the_tree_has_every_command_and_action() -> None:
    commands = {tuple(words) for words, _ in TREE if len(words) == 1}
    assert commands == {(spec.name,) for spec in COMMANDS}
    assert ("models", "rollback") in {tuple(words) for words, _ in TREE}
    assert len(TREE) > 15


@pytest.mark.parametrize("words,parser", TREE, ids=[" ".join(w) or "triage" for w, _ in TREE])
def test_help_formats_and_lists_every_flag(words: list[str], parser: argparse.ArgumentParser,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    text = parser.format_help()
    flags = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    for flag in flags:
        assert flag in text, f"triage {' '.join(words)} --help does not list {flag}"
    with pytest.raises(SystemExit) as exited:
        main([*words, "--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == text  # what `triage ... --help` prints is that help


@pytest.mark.parametrize("words,parser", [(w, p) for w, p in TREE if len(w) == 2],
                         ids=[" ".join(w) for w, _ in TREE if len(w) == 2])
def test_an_action_accepts_every_option_of_its_command(words: list[str], parser: argparse.ArgumentParser) -> None:
    """Group options (``triage models --registry R``) are accepted after the action too."""
    command = dict(TREE_BY_WORDS)[words[0]]
    def flags(p: argparse.ArgumentParser) -> set[str]:
        return {o for a in p._actions for o in a.option_strings if o.startswith("--") and o != "--help"}
    assert flags(command) <= flags(parser), f"`triage {' '.join(words)}` lacks {sorted(flags(command) - flags(parser))}"


def test_a_percent_in_a_settings_docstring_reaches_the_help_unescaped() -> None:
    """retrain's --eval-label-share help says "~20% more" (argparse %-formats help: it crashed)."""
    retrain = _subparsers(build_parser())["retrain"]
    assert "~20% more labels" in " ".join(retrain.format_help().split())


def test_every_settings_section_is_one_flag_group() -> None:
    serve = _subparsers(build_parser())["serve"]
    titles = [g.title for g in serve._action_groups]
    for section in ("connection", "topics", "serving", "policy", "operations"):
        assert titles.count(f"{section} settings") == 1
        group = next(g for g in serve._action_groups if g.title == f"{section} settings")
        listed = {o for a in group._group_actions for o in a.option_strings}
        assert {flag_of(f) for f in SECTIONS[section].model_fields} <= listed


def test_group_options_work_before_and_after_the_action() -> None:
    parser = build_parser()
    after = parser.parse_args(["models", "rollback", "--registry", "R", "--bootstrap-servers", "b:1"])
    before = parser.parse_args(["models", "--registry", "R", "--bootstrap-servers", "b:1", "rollback"])
    for args in (after, before):
        assert (args.command, args.action, str(args.registry), args.bootstrap_servers) == ("models", "rollback", "R", "b:1")
    imported = parser.parse_args(["models", "import", "--model", "m.onnx", "--reference", "r.npz",
                                  "--outlier-quantile", "0.99", "--seed", "3", "--classes", "a,b"])
    assert (imported.outlier_quantile, imported.seed, imported.classes) == ("0.99", "3", "a,b")


def test_auto_family_help_matches_the_training_rule() -> None:
    """The help of --model-family states the row counts the code uses."""
    from triage.lifecycle.training import AUTO_MIN_ROWS, AUTO_OOF_BELOW, AUTO_OOF_FOLDS, VALIDATION_FRACTION
    from triage.settings import RetrainSettings

    doc = " ".join((RetrainSettings.model_fields["model_family"].description or "").split())
    assert f"under {AUTO_MIN_ROWS} rows logreg" in doc
    assert f"from {AUTO_MIN_ROWS} rows logreg or mlp, compared on {AUTO_OOF_FOLDS}-fold" in doc
    assert f"from {AUTO_OOF_BELOW} rows logreg, mlp or gb, compared on a {VALIDATION_FRACTION:.0%} validation" in doc


HEAVY = ("sklearn", "matplotlib", "skl2onnx", "onnxruntime", "confluent_kafka", "kafka", "consumers", "scipy")
FRESH = ("triage",)  # every triage module is imported afresh, so a heavy import anywhere shows


class _Refuse(importlib.abc.MetaPathFinder):
    """Records (and refuses) every import of a heavy library."""

    def __init__(self) -> None:
        self.tried: list[str] = []

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".")[0] in HEAVY:
            self.tried.append(name)
            raise ImportError(f"building the parser imported {name}")


def test_building_the_parser_imports_no_heavy_library_and_commands_never_import_cli() -> None:
    """In process, as in a fresh interpreter: the heavy libraries and every triage module are taken
    out of sys.modules (and put back after), and a finder refuses the heavy ones."""
    def ours(name: str, prefixes: tuple[str, ...]) -> bool:
        return any(name == p or name.startswith(p + ".") for p in prefixes)

    saved = {n: m for n, m in sys.modules.items() if ours(n, HEAVY) or ours(n, FRESH)}
    refuse = _Refuse()
    for name in saved:
        del sys.modules[name]
    sys.meta_path.insert(0, refuse)
    try:
        commands = importlib.import_module("triage.commands")
        commands.load_commands()
        assert "triage.cli" not in sys.modules, "triage.commands imported triage.cli"
        importlib.import_module("triage.cli").build_parser().format_help()
    finally:
        sys.meta_path.remove(refuse)
        for name in [n for n in sys.modules if ours(n, HEAVY) or ours(n, FRESH)]:
            del sys.modules[name]
        sys.modules.update(saved)
        for name, module in saved.items():  # parents point at the originals again (`import a.b as m` reads them)
            parent, _, child = name.rpartition(".")
            if parent in sys.modules:
                setattr(sys.modules[parent], child, module)
    assert refuse.tried == []


@pytest.mark.parametrize("words", [w for w, p in TREE if len(w) == 2 and "--registry" in p._option_string_actions],
                         ids=[" ".join(w) for w, p in TREE if len(w) == 2 and "--registry" in p._option_string_actions])
def test_the_registry_goes_before_or_after_every_action(words: list[str]) -> None:
    """`triage labels rebuild --registry R` (as the docs write it) was refused: --registry was
    required of the command's parser and of the action's, so either place failed the other."""
    parser = build_parser()
    extra = ["v1"] if words[1] in ("show", "promote") else []
    extra += ["--model", "m.onnx"] if words[1] == "import" else []
    after = parser.parse_args([*words, *extra, "--registry", "R"])
    before = parser.parse_args([words[0], "--registry", "R", words[1], *extra])
    assert str(after.registry) == str(before.registry) == "R"
