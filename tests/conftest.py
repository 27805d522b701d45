"""Test tiers. Markers are assigned here, once, by path and fixture; no test file marks itself.

- ``broker``: uses the embedded Kafka broker (the ``broker`` fixture, or starts its own).
- ``labelstudio``: uses the real Label Studio (the ``label_studio`` fixture).
- ``exporters``: builds the exporter zoo (lightgbm, xgboost, catboost, torch, ...).
- ``deploytools``: runs promtool, prometheus or docker-compose, or installs triage in a venv.
- ``process``: starts a subprocess (``python -m triage ...``) without a broker.
- ``load``: paced loads that exist to run for a while.
- ``slow``: the soak; left out unless ``-m`` names it (``-m slow``), whatever else ``-m`` says.
- ``fast``: everything else: unit, contract and property tests, in process. A fast test that
  starts a subprocess fails (``_fast_tests_start_no_process``), so a wrong tier cannot hide.

``--kafka-clients``: ``one`` (default) runs every broker test on the default client and the
transport and fault tests (``CLIENT_SENSITIVE``) on both; ``both`` runs every broker test on both.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.fixtures import (  # noqa: F401
    KAFKA_CLIENTS,
    broker, digits, example_model, kafka_client, registry, registry_template, s3, scorer_process, settings_factory,
    triage_process, zoo,
)
from tests.labelstudio import label_studio  # noqa: F401
from tests.profiles import PROFILE  # noqa: F401  (registers and loads the Hypothesis profile)

TESTS = Path(__file__).resolve().parent
# Where the client is what is under test: transport behaviour and the fault tests (the unit
# tests of the transport take the client as their own parameter).
CLIENT_SENSITIVE = {
    "integration/test_transport.py", "reliability/test_broker_outage.py", "reliability/test_process_faults.py",
    "reliability/test_input_faults.py", "integration/test_topic_history.py", "reliability/test_world_faults.py",
    "reliability/test_retrain_outage.py",
}
HEAVY = ("broker", "labelstudio", "exporters", "deploytools", "process", "load", "slow")

# by fixture: a test using any of these gets the marker
BY_FIXTURE = {
    "broker": {"broker"},
    "labelstudio": {"label_studio"},
    "exporters": {"zoo"},
    "deploytools": {"deploy_tools", "promtool", "prometheus_bin", "docker_compose"},
    "process": {"triage_process", "scorer_process", "s3"},
}
# by path (a file, or a directory ending in /): tests that start what no fixture names
BY_PATH = {
    "broker": {"integration/", "fuzz/", "reliability/test_security.py", "deploy/test_readiness.py"},
    "exporters": {"integration/test_compat_matrix.py", "unit/test_compat_adapter.py"},
    "deploytools": {"deploy/test_core_install.py"},
    "process": {"bench/", "reliability/test_live_risk_registry.py",  # these two run mount
                "reliability/test_s3_server.py", "reliability/test_registry_faults.py",
                "deploy/test_kustomize_kubectl.py", "unit/test_allocator.py"},  # page faults of fresh processes
    "load": {"reliability/test_process_faults.py", "reliability/test_broker_outage.py"},
    "slow": {"reliability/test_soak.py", "unit/test_risk_validity_seeds.py"},
}
# one xdist worker each (--dist loadgroup): their session fixtures are expensive to start twice.
# Other tests that are not fast stay on one worker per file, for their module fixtures.
GROUPS = ("labelstudio", "exporters")



def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--kafka-clients", choices=("one", "both"), default="one",
                     help="one: the default client, both only for CLIENT_SENSITIVE files; both: every broker "
                          "test under both clients")


def _rel(path: Path) -> str:
    return path.resolve().relative_to(TESTS).as_posix()


def _matches(rel: str, patterns: set[str]) -> bool:
    return any(rel == p or (p.endswith("/") and rel.startswith(p)) for p in patterns)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kafka_client" not in metafunc.fixturenames:
        return
    both = metafunc.config.getoption("--kafka-clients") == "both" or _rel(metafunc.definition.path) in CLIENT_SENSITIVE
    metafunc.parametrize("kafka_client", KAFKA_CLIENTS if both else KAFKA_CLIENTS[:1], indirect=True)


def markers_of(rel: str, fixtures: set[str]) -> set[str]:
    """The tier markers of a test at ``rel`` (relative to tests/) using ``fixtures``."""
    found = {m for m, names in BY_FIXTURE.items() if names & fixtures}
    found |= {m for m, paths in BY_PATH.items() if _matches(rel, paths)}
    return found or {"fast"}


@pytest.hookimpl(tryfirst=True)  # before xdist's, which reads the xdist_group marks set here
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        hand = {m.name for m in item.iter_markers() if m.name in HEAVY + ("fast",)}
        if hand:
            raise pytest.UsageError(f"{item.nodeid}: tier markers {sorted(hand)} are set by hand; "
                                    "assign them in tests/conftest.py (BY_FIXTURE / BY_PATH)")
        rel = _rel(item.path)
        markers = markers_of(rel, set(getattr(item, "fixturenames", ())))
        for name in sorted(markers):
            item.add_marker(name)
        group = next((g for g in GROUPS if g in markers), None if "fast" in markers else rel)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    # The soak runs only when asked for by name (`-m slow`); any other -m still leaves it out.
    if "slow" not in (config.option.markexpr or ""):
        soak = [item for item in items if item.get_closest_marker("slow")]
        if soak:
            config.hook.pytest_deselected(items=soak)
            items[:] = [item for item in items if not item.get_closest_marker("slow")]


@pytest.hookimpl(trylast=True)  # after xdist's hook: check it grouped what was marked
def pytest_collection_finish(session: pytest.Session) -> None:
    if not session.config.getoption("loadgroup", False):
        return
    ungrouped = [i.nodeid for i in session.items if i.get_closest_marker("xdist_group") and "@" not in i.nodeid]
    if ungrouped:
        raise pytest.UsageError(f"--dist loadgroup did not group {ungrouped[0]} (and {len(ungrouped) - 1} more): "
                                "this pytest and pytest-xdist disagree on node ids; see the pytest pin in pyproject.toml")


ALLOWED_IN_FAST = {"ruff"}  # a linter binary: milliseconds, and the fast tier is where lint belongs


class StartedProcess(AssertionError):
    pass


@pytest.fixture(autouse=True)
def _fast_tests_start_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The fast tier is in process: a fast test that starts a subprocess is in the wrong tier."""
    if request.node.get_closest_marker("fast") is not None:
        started = subprocess.Popen.__init__

        def refuse(self: Any, args: Any, *a: Any, **kw: Any) -> None:
            program = Path(str(args[0] if isinstance(args, (list, tuple)) else str(args).split()[0])).name
            if program not in ALLOWED_IN_FAST:
                raise StartedProcess(f"a fast-tier test started {args!r}: give it a marker in tests/conftest.py")
            started(self, args, *a, **kw)
        monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    yield
