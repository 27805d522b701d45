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
from tests.deploy.shipped import BRIDGE_WEBHOOK_PORT, SHIPPED
from triage.cli import build_parser
from triage.settings import Settings

ONE_SHOT = {"topic-init", "train-init"}
ENV_EXAMPLE = REPO / ".env.example"
# Variables a fresh clone must set in .env (no default: secrets).
REQUIRED_SECRETS = {"LABEL_STUDIO_PASSWORD", "LABEL_STUDIO_USER_TOKEN", "LABEL_STUDIO_WEBHOOK_SECRET"}


def _example_env() -> dict[str, str]:
    """The uncommented KEY=VALUE lines of .env.example."""
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("COMPOSE_", "TRIAGE_", "KAFKA_", "GRAFANA_", "PROMETHEUS_", "LABEL_STUDIO_"))}


@pytest.fixture(scope="module")
def compose(docker_compose: str) -> dict[str, Any]:
    """The stack as docker-compose v1 resolves it (anchors merged, variables defaulted), with the
    variables of .env.example."""
    env = {**_clean_env(), **_example_env()}  # as after `cp .env.example .env`
    done = subprocess.run([docker_compose, "-f", "docker-compose.yml", "config"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"docker-compose config rejected docker-compose.yml:\n{done.stderr}"
    return yaml.safe_load(done.stdout)


def test_compose_config_quiet_validation_passes(docker_compose: str) -> None:
    done = subprocess.run([docker_compose, "-f", "docker-compose.yml", "--env-file", ".env.example", "config", "-q"],
                          cwd=REPO, env=_clean_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "ERROR" not in done.stderr


def test_compose_refuses_to_start_without_the_label_studio_secrets(docker_compose: str) -> None:
    """No default password or token: without .env, config names the variable to set."""
    env = {**_clean_env(), **{k: v for k, v in _example_env().items() if k not in REQUIRED_SECRETS}}
    done = subprocess.run([docker_compose, "-f", "docker-compose.yml", "config", "-q"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "in .env" in done.stderr and any(name in done.stderr for name in REQUIRED_SECRETS), done.stderr


def test_env_example_covers_every_variable_and_holds_no_real_secret() -> None:
    text = re.sub(r"^\s*#.*$", "", (REPO / "docker-compose.yml").read_text(), flags=re.M)  # live lines only
    used = set(re.findall(r"(?<!\$)\$\{(\w+)", text))  # $${...} is the container shell's
    required = set(re.findall(r"(?<!\$)\$\{(\w+):\?", text))
    assert required == REQUIRED_SECRETS
    example = ENV_EXAMPLE.read_text()
    undocumented = sorted(v for v in used if not re.search(rf"^#?\s*{v}=", example, re.M))
    assert not undocumented, f".env.example does not mention {undocumented}"
    values = _example_env()
    assert REQUIRED_SECRETS <= set(values), "the required variables must be set (placeholders) in .env.example"
    for key, value in values.items():
        if any(word in key for word in ("PASSWORD", "TOKEN", "SECRET")):
            assert "change-me" in value, f"{key} in .env.example must be a change-me placeholder"


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
    out = {name: list(services[name]["command"]) for name in ("scorer", "retrain", "producer", "audit",
                                                               "label-studio-bridge")}
    script = "\n".join(services["train-init"]["command"]).replace("$$", "$")
    line = re.search(r"exec triage (train .*)", script)
    assert line, "train-init no longer runs `triage train`"
    # the compose-escaped shell default ${VAR:-default} -> default
    out["train-init"] = shlex.split(re.sub(r'\$\{\w+:-([^}]*)\}', r"\1", line.group(1)))
    return out


def test_triage_commands_in_the_stack_parse(compose: dict[str, Any]) -> None:
    parser = build_parser()
    for service, argv in _triage_commands(compose).items():
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


def _prometheus_targets() -> dict[str, set[str]]:
    doc = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    out: dict[str, set[str]] = {}
    for job in doc["scrape_configs"]:
        targets = {t for sc in job.get("static_configs", []) for t in sc["targets"]}
        targets |= {f"{n}:{sd['port']}" for sd in job.get("dns_sd_configs", []) for n in sd["names"]}
        out[job["job_name"]] = targets
    return out


def test_every_shipped_process_is_a_service_and_a_prometheus_job(compose: dict[str, Any]) -> None:
    """Whatever exports a metric an alert or panel uses runs in the stack and is scraped."""
    services = compose["services"]
    jobs = _prometheus_targets()
    for s in SHIPPED:
        svc = services.get(s.service)
        assert svc, f"`triage {s.command}` is not a compose service ({s.service})"
        assert svc["command"][0] == s.command, s.service
        assert svc["environment"]["TRIAGE_METRICS_PORT"] == str(s.port), s.service
        assert str(s.port) in [str(p) for p in svc.get("expose", [])], s.service
        assert f"{s.service}:{s.port}" in jobs.get(s.job, set()), f"no Prometheus job {s.job} scraping {s.service}:{s.port}"
        assert svc["healthcheck"]["test"] and f":{s.port}/" in " ".join(svc["healthcheck"]["test"]), s.service


def test_label_studio_service(compose: dict[str, Any]) -> None:
    ls = compose["services"]["label-studio"]
    assert ls["image"].startswith("heartexlabs/label-studio:")
    env = ls["environment"]
    example = _example_env()
    assert env["LABEL_STUDIO_USERNAME"] == example["LABEL_STUDIO_USERNAME"]
    assert env["LABEL_STUDIO_PASSWORD"] == example["LABEL_STUDIO_PASSWORD"]
    assert env["LABEL_STUDIO_USER_TOKEN"] == example["LABEL_STUDIO_USER_TOKEN"]
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    assert env["SENTRY_DSN"] == ""
    assert any(v.startswith("label-studio-data:/label-studio/data") for v in ls["volumes"]) and "label-studio-data" in compose["volumes"]
    assert "/health" in " ".join(ls["healthcheck"]["test"])
    assert any(str(p).endswith(":8080") or (isinstance(p, dict) and p.get("target") == 8080) for p in ls["ports"])


def test_bridge_service_is_wired_to_label_studio_kafka_and_the_registry(compose: dict[str, Any]) -> None:
    services = compose["services"]
    bridge = services["label-studio-bridge"]
    assert bridge.get("deploy", {}).get("replicas", 1) == 1, "the bridge is the single writer of tasks"
    assert "ports" not in bridge  # only Label Studio (on the compose network) calls the webhook
    argv = bridge["command"]
    assert argv[argv.index("--url") + 1] == "http://label-studio:8080"
    assert argv[argv.index("--webhook-port") + 1] == str(BRIDGE_WEBHOOK_PORT)
    assert argv[argv.index("--webhook-url") + 1] == f"http://label-studio-bridge:{BRIDGE_WEBHOOK_PORT}/webhook"
    assert argv[argv.index("--registry") + 1] == "/registry" and "registry:/registry:ro" in bridge["volumes"]
    assert str(BRIDGE_WEBHOOK_PORT) in [str(p) for p in bridge["expose"]]
    assert "--api-key" not in argv and "--webhook-secret" not in argv, "secrets never on the command line"
    env = bridge["environment"]
    assert env["TRIAGE_LABEL_STUDIO_API_KEY"] == services["label-studio"]["environment"]["LABEL_STUDIO_USER_TOKEN"]
    assert env["TRIAGE_LABEL_STUDIO_WEBHOOK_SECRET"] == _example_env()["LABEL_STUDIO_WEBHOOK_SECRET"]
    assert env["TRIAGE_LABEL_STUDIO_GROUP_ID"] != services["scorer"]["environment"]["TRIAGE_GROUP_ID"], "own consumer group"
    deps = bridge["depends_on"]
    assert deps["kafka"]["condition"] == "service_healthy"
    assert deps["label-studio"]["condition"] == "service_healthy"
    assert deps["topic-init"]["condition"] == "service_completed_successfully"
    assert deps["train-init"]["condition"] == "service_completed_successfully"


def test_audit_slice_is_on_and_the_risk_target_is_shared(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert float(services["scorer"]["environment"]["TRIAGE_AUDIT_RATE"]) > 0, "no audit samples, no estimate"
    alphas = {services[n]["environment"]["TRIAGE_RISK_ALPHA"] for n in ("scorer", "audit")}
    assert len(alphas) == 1
    assert services["audit"]["depends_on"]["topic-init"]["condition"] == "service_completed_successfully"
