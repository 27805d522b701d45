"""docker-compose.yml and the Dockerfile: docker-compose v1 validates the stack (no engine
needed), and the stack has the shape the operations guide promises."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import REPO
from triage.cli import build_parser
from triage.settings import Settings

# Commands the stack runs that other issues are adding (issue 3: registry, train, retrain).
# Shrink this as they land: the test fails when a listed command exists, so it stays honest.
COMMANDS_NOT_YET_MERGED: set[str] = set()
ONE_SHOT = {"topic-init", "train-init"}


@pytest.fixture(scope="module")
def compose(docker_compose: str) -> dict[str, Any]:
    """The stack as docker-compose v1 resolves it (anchors merged, variables defaulted)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "TRIAGE_", "KAFKA_", "GRAFANA_", "PROMETHEUS_"))}
    done = subprocess.run([docker_compose, "-f", "docker-compose.yml", "config"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"docker-compose config rejected docker-compose.yml:\n{done.stderr}"
    return yaml.safe_load(done.stdout)


def test_compose_config_quiet_validation_passes(docker_compose: str) -> None:
    done = subprocess.run([docker_compose, "-f", "docker-compose.yml", "config", "-q"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "ERROR" not in done.stderr


def test_kafka_is_the_official_image_in_kraft_mode_with_a_volume(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "zookeeper" not in " ".join(map(str, env.values())).lower()
    data_dir = env["KAFKA_LOG_DIRS"]
    assert any(v.startswith("kafka-data:" + data_dir) for v in kafka["volumes"])
    assert "kafka-data" in compose["volumes"]


def test_scorer_runs_two_replicas_in_one_group_with_partitions_to_spare(compose: dict[str, Any]) -> None:
    services = compose["services"]
    scorer = services["scorer"]
    replicas = scorer["deploy"]["replicas"]
    assert replicas == 2
    assert scorer["environment"]["TRIAGE_GROUP_ID"]  # one service = one group for every replica
    assert "ports" not in scorer, "published ports would collide between replicas"
    init = services["topic-init"]
    script = "\n".join(init["command"]).replace("$$", "$")  # config keeps compose escapes
    partitions = int(init["environment"]["SAMPLES_PARTITIONS"])
    assert "--topic triage.samples --partitions $SAMPLES_PARTITIONS" in script
    assert partitions >= replicas, "every scorer replica needs at least one samples partition"
    for topic in ("samples", "predictions", "review", "labels", "models", "dlq"):
        assert f"--create --if-not-exists --topic triage.{topic} " in script


def test_long_running_services_have_health_checks_and_restart_policies(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        if name in ONE_SHOT:
            assert svc.get("restart", "no") == "no", f"{name} is one-shot and must not restart"
            continue
        assert svc.get("restart") in ("unless-stopped", "always", "on-failure"), f"{name} has no restart policy"
        assert "healthcheck" in svc and svc["healthcheck"].get("test"), f"{name} has no health check"


def test_startup_order_waits_for_topics_and_the_first_model(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("scorer", "retrain"):
        deps = services[name]["depends_on"]
        assert deps["topic-init"]["condition"] == "service_completed_successfully"
        assert deps["train-init"]["condition"] == "service_completed_successfully"
    assert services["topic-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["producer"]["depends_on"]["topic-init"]["condition"] == "service_completed_successfully"


def test_retrain_and_scorers_share_the_registry_volume(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "registry:/registry:ro" in services["scorer"]["volumes"]
    assert any(v.startswith("registry:/registry") and not v.endswith(":ro") for v in services["retrain"]["volumes"])
    assert any(v.startswith("registry:/registry") for v in services["train-init"]["volumes"])
    for name in ("scorer", "retrain", "train-init"):
        assert services[name]["environment"]["TRIAGE_REGISTRY"] == "/registry"


def test_prometheus_and_grafana_mount_the_files_in_deploy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    mounts = {v.split(":")[1]: Path(v.split(":")[0]) for v in services["prometheus"]["volumes"] + services["grafana"]["volumes"]
              if v.startswith("/")}
    assert (mounts["/etc/prometheus"] / "prometheus.yml").is_file()
    assert (mounts["/etc/prometheus"] / "alerts.yml").is_file()
    assert (mounts["/etc/grafana/provisioning"] / "datasources" / "prometheus.yml").is_file()
    assert (mounts["/var/lib/grafana/dashboards"] / "triage.json").is_file()


def test_every_triage_environment_variable_is_a_setting(compose: dict[str, Any]) -> None:
    """Unknown TRIAGE_* variables are silently ignored by pydantic-settings: catch typos here."""
    fields = {f"TRIAGE_{name.upper()}" for name in dict(Settings.fields())}
    for name, svc in compose["services"].items():
        for key in svc.get("environment", {}):
            if key.startswith("TRIAGE_"):
                assert key in fields, f"{name}: {key} is not a triage setting"


def _triage_commands(compose: dict[str, Any]) -> dict[str, list[str]]:
    services = compose["services"]
    out = {name: list(services[name]["command"]) for name in ("scorer", "retrain", "producer")}
    script = "\n".join(services["train-init"]["command"]).replace("$$", "$")
    line = re.search(r"exec triage (train .*)", script)
    assert line, "train-init no longer runs `triage train`"
    # the compose-escaped shell default ${VAR:-default} -> default
    out["train-init"] = shlex.split(re.sub(r'\$\{\w+:-([^}]*)\}', r"\1", line.group(1)))
    return out


def test_triage_commands_in_the_stack_parse(compose: dict[str, Any]) -> None:
    parser = build_parser()
    registered = set(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert not COMMANDS_NOT_YET_MERGED & registered, (
        f"{COMMANDS_NOT_YET_MERGED & registered} now exist: remove them from COMMANDS_NOT_YET_MERGED")
    for service, argv in _triage_commands(compose).items():
        if argv[0] in COMMANDS_NOT_YET_MERGED:
            continue
        try:
            parser.parse_args(argv)
        except SystemExit as exc:  # argparse reports the bad flag on stderr
            raise AssertionError(f"{service}: `triage {' '.join(argv)}` does not parse") from exc


def test_dockerfile_is_slim_non_root_and_installs_from_pyproject() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.\d+-slim", text, re.M)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "pip wheel --wheel-dir /wheels ." in text  # dependencies resolved from pyproject.toml
    assert "--no-index" in text  # the runtime stage installs only what the build stage resolved
    ignored = (REPO / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "tests"):
        assert entry in ignored
