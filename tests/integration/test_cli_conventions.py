"""CLI conventions (issue 12, item 4), with real processes.

Group options go before or after the action (every --help, in process: tests/unit/test_cli_help.py);
every command that needs Kafka, with no broker, ends non-zero with one line of its own naming
the address (no librdkafka / kafka-python noise, no traceback); promote/import --promote with
no broker leave the registry unchanged; --client-logs brings the client's lines back.

The no-broker cases use a closed loopback port and --connect-timeout-s 3; timing is only
bounded generously (the subprocess timeout), never asserted tightly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest

from tests.fixtures import REPO
from triage.runtime.broker import free_port
from triage.cli import build_parser
from triage.examples import example_paths
from triage.lifecycle.registry import Registry
from triage.settings import Settings

TIMEOUT_S = 60.0
NOISE = ("rdkafka", "Connect failed", "Connect to ipv4", "Traceback", "kafka.net", "ECONNREFUSED")


def _env() -> dict[str, str]:
    """The caller's environment without TRIAGE_* settings (tests pass flags explicitly)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}


def triage(*args: str, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "triage", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout, env=_env(), stdin=subprocess.DEVNULL)


def add_v2(registry: Registry) -> str:
    manifest = {k: v for k, v in registry.manifest("v1").items() if k not in ("version", "sha256", "path", "status")}
    return registry.add_bundle(registry.model_path("v1").read_bytes(), manifest, registry.canary("v1"))


def kafka_flags(s: Settings) -> list[str]:
    return ["--bootstrap-servers", s.connection.bootstrap_servers, "--models-topic", s.topics.models_topic,
            "--kafka-client", s.connection.kafka_client]


# --- group options before or after the action -------------------------------------------------


@pytest.mark.parametrize("where", ["before", "after"])
def test_list_and_show_take_the_registry_before_or_after_the_action(registry: Registry, where: str) -> None:
    for action in (["list"], ["show", "v1"]):
        flags = ["--registry", str(registry.root)]
        argv = ["models", *flags, *action] if where == "before" else ["models", *action, *flags]
        done = triage(*argv)
        assert done.returncode == 0, done.stderr
        assert "v1" in done.stdout


def test_promote_and_rollback_take_group_options_after_the_action(
        settings_factory: Callable[..., Settings], registry: Registry) -> None:
    s = settings_factory()
    v2 = add_v2(registry)
    done = triage("models", "promote", v2, "--registry", str(registry.root), *kafka_flags(s))
    assert done.returncode == 0, done.stderr
    assert f"CURRENT = {v2}" in done.stdout and registry.current() == v2
    done = triage("models", "rollback", "--registry", str(registry.root), *kafka_flags(s))
    assert done.returncode == 0, done.stderr
    assert "CURRENT = v1" in done.stdout and registry.current() == "v1"
    # Mixed: the registry before the action, the Kafka flags after it.
    done = triage("models", "--registry", str(registry.root), "promote", v2, "--force", *kafka_flags(s))
    assert done.returncode == 0, done.stderr
    assert registry.current() == v2


def test_models_without_a_registry_says_where_to_give_it() -> None:
    done = triage("models", "list")
    assert done.returncode == 2
    assert "--registry DIR" in done.stderr and "TRIAGE_REGISTRY" in done.stderr


# --- --help ----------------------------------------------------------------------------------


def _subparsers(parser: object) -> dict[str, object]:
    actions = getattr(parser, "_subparsers", None)
    return dict(actions._group_actions[0].choices) if actions is not None else {}  # type: ignore[attr-defined]


def _flags(parser: object) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"}  # type: ignore[attr-defined]


def test_models_import_help_lists_registry_kafka_topics_and_model_flags() -> None:
    done = triage("models", "import", "--help")
    assert done.returncode == 0, done.stderr
    serve = _flags(_subparsers(build_parser())["serve"])
    model_flags = {"--classes", "--input-name", "--output-name", "--feature-count", "--output-kind"}
    assert model_flags <= serve
    for flag in ("--registry", "--model", "--reference", "--promote", "--outlier-quantile", "--bootstrap-servers",
                 "--kafka-client", "--connect-timeout-s", "--client-logs", "--models-topic", *model_flags):
        assert flag in done.stdout, flag


# --- no broker -------------------------------------------------------------------------------


def _no_broker_cases(registry: Path, data: Path) -> dict[str, list[str]]:
    model, reference = example_paths()
    return {
        "serve": ["serve", "--model", str(model), "--metrics-port", "0"],
        "retrain-once": ["retrain", "--once", "--registry", str(registry)],
        "retrain-every": ["retrain", "--every", "60", "--registry", str(registry), "--metrics-port", "0"],
        "models-promote": ["models", "promote", "v2", "--registry", str(registry)],
        "models-rollback": ["models", "rollback", "--registry", str(registry)],
        "models-import-promote": ["models", "import", "--registry", str(registry), "--model", str(model),
                                  "--reference", str(reference), "--promote"],
        "annotate": ["annotate", "--classes", "a,b"],
        "audit": ["audit", "--metrics-port", "0"],
        "replay": ["replay", "--data", str(data), "--rate", "0"],
    }


CASES = ["serve", "retrain-once", "retrain-every", "models-promote", "models-rollback", "models-import-promote",
         "annotate", "audit", "replay"]


@pytest.fixture(scope="module", params=["confluent", "kafka-python"])
def no_broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
              digits: tuple[np.ndarray, np.ndarray]) -> Iterator[dict[str, object]]:
    """Every broker-needing command against a closed port, run concurrently (one client each)."""
    from tests.fixtures import registry_v1

    client = str(request.param)
    root = tmp_path_factory.mktemp(f"no-broker-{client}")
    X, y = digits
    reg = registry_v1(root / "registry", X[:300], y[:300], holdout_fraction=0.8)
    v2 = add_v2(reg)
    reg.promote(v2)  # so rollback has somewhere to go
    reg.promote("v1")
    data = root / "data.npz"
    np.savez(data, X=X[:20])
    port = free_port()
    common = ["--bootstrap-servers", f"127.0.0.1:{port}", "--kafka-client", client, "--connect-timeout-s", "3"]
    before = {"current": reg.current(), "versions": reg.versions(), "history": reg.history()}
    cases = _no_broker_cases(reg.root, data)
    with ThreadPoolExecutor(len(cases)) as pool:
        futures = {name: pool.submit(triage, *argv, *common) for name, argv in cases.items()}
        results = {name: f.result() for name, f in futures.items()}
    yield {"results": results, "address": f"127.0.0.1:{port}", "registry": reg, "before": before}


@pytest.mark.parametrize("case", CASES)
def test_no_broker_one_line_naming_the_address(no_broker: dict[str, object], case: str) -> None:
    done = no_broker["results"][case]  # type: ignore[index]
    address = str(no_broker["address"])
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0, done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("triage ") and address in lines[0], lines[0]
    assert "no Kafka broker answered" in lines[0] and "--bootstrap-servers" in lines[0]
    assert not [n for n in NOISE if n in done.stderr + done.stdout], done.stderr


def test_no_broker_leaves_the_registry_unchanged(no_broker: dict[str, object]) -> None:
    reg: Registry = no_broker["registry"]  # type: ignore[assignment]
    before = no_broker["before"]
    assert {"current": reg.current(), "versions": reg.versions(), "history": reg.history()} == before
    for case in ("models-promote", "models-rollback", "models-import-promote"):
        done = no_broker["results"][case]  # type: ignore[index]
        assert "registry unchanged" in done.stderr, done.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_bad_model_is_named_before_the_broker_is_tried(tmp_path: Path, workers: str) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not a model")
    done = triage("serve", "--model", str(model), "--workers", workers, "--metrics-port", "0",
                  "--bootstrap-servers", f"127.0.0.1:{free_port()}", "--connect-timeout-s", "30")
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0 and len(lines) == 1, done.stderr
    assert str(model) in lines[0] and "broker" not in lines[0], lines[0]


@pytest.mark.parametrize("client,marker", [("confluent", "rdkafka"), ("kafka-python", "kafka.")])
def test_client_logs_on_request(client: str, marker: str) -> None:
    model, _ = example_paths()
    argv = ["serve", "--model", str(model), "--metrics-port", "0", "--bootstrap-servers", f"127.0.0.1:{free_port()}",
            "--kafka-client", client, "--connect-timeout-s", "3"]
    quiet = triage(*argv)
    loud = triage(*argv, "--client-logs")
    assert quiet.returncode != 0 and loud.returncode != 0
    assert marker not in quiet.stderr
    assert marker in loud.stderr, loud.stderr
    assert "no Kafka broker answered" in loud.stderr.splitlines()[-1]
