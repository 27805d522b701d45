"""The Prometheus config and alert rules: promtool validates them and runs their unit tests;
every alert has a runbook, a firing case and a quiet case, and the operations guide says how to act on it."""

from __future__ import annotations

import importlib.util
import subprocess
from types import ModuleType
from typing import Any

import yaml

from tests.deploy.conftest import PROM_DIR, REPO

RULES = PROM_DIR / "alerts.yml"
TESTS = PROM_DIR / "tests"


def _alerts() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), cwd=REPO, capture_output=True, text=True, timeout=300)


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("promtool_tests_generate", TESTS / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_promtool_check_config(promtool: str) -> None:
    done = _run(promtool, "check", "config", str(PROM_DIR / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_promtool_check_rules(promtool: str) -> None:
    done = _run(promtool, "check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    rules = sum(len(g["rules"]) for g in yaml.safe_load(RULES.read_text())["groups"])  # alerts and recordings
    assert f"SUCCESS: {rules} rules found" in done.stdout + done.stderr


def test_promtool_unit_tests_pass(promtool: str) -> None:
    files = sorted(str(p) for p in TESTS.glob("*_test.yml"))
    assert len(files) >= 6
    done = _run(promtool, "test", "rules", *files)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAILED" not in done.stdout + done.stderr


def test_generated_unit_tests_are_current() -> None:
    gen = _generator()
    stale = [p.name for p, text in gen.generated().items() if not p.exists() or p.read_text() != text]
    assert not stale, f"{stale} are stale: run python deploy/prometheus/tests/generate.py"


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in (TESTS / "cases").glob("*.yml"):
        for test in yaml.safe_load(case.read_text())["tests"]:
            for check in test.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {a["alert"] for a in _alerts()}
    assert names - firing == set(), f"alerts never tested firing: {names - firing}"
    assert names - quiet == set(), f"alerts never tested quiet: {names - quiet}"


def test_every_alert_has_severity_summary_and_runbook() -> None:
    for alert in _alerts():
        assert alert["labels"]["severity"] in ("warning", "critical"), alert["alert"]
        notes = alert["annotations"]
        assert notes.get("summary"), alert["alert"]
        runbook = notes.get("runbook", "")
        assert "Means:" in runbook and "Do:" in runbook, f"{alert['alert']}: runbook must say what it means and what to do"


def test_operations_guide_covers_every_alert() -> None:
    guide = (REPO / "docs" / "operations" / "alerts.md").read_text()
    missing = [a["alert"] for a in _alerts() if f"`{a['alert']}`" not in guide]
    assert not missing, f"docs/operations/alerts.md does not cover {missing}"
