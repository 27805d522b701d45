"""Deploy-test fixtures: the Debian tools (promtool, prometheus, docker-compose v1), installed by
scripts/setup_deploytools.sh. Tests that need them FAIL, never skip, when they are missing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROM_DIR = DEPLOY / "prometheus"

# executable -> Debian package that provides it
TOOLS = {"promtool": "prometheus", "prometheus": "prometheus", "docker-compose": "docker-compose"}


@pytest.fixture(scope="session")
def deploy_tools() -> dict[str, str]:
    """Paths of promtool, prometheus and docker-compose. Installing them is scripts/setup_deploytools.sh's
    job (./scripts/test.sh runs it): a test tier installs nothing, and fails when they are missing."""
    paths = {tool: shutil.which(tool) for tool in TOOLS}
    absent = [tool for tool, path in paths.items() if path is None]
    if absent:
        pytest.fail(f"deploy tests need {', '.join(absent)} (Debian packages "
                    f"{', '.join(sorted({TOOLS[t] for t in absent}))}): run scripts/setup_deploytools.sh",
                    pytrace=False)
    return {tool: str(path) for tool, path in paths.items()}


@pytest.fixture(scope="session")
def promtool(deploy_tools: dict[str, str]) -> str:
    return deploy_tools["promtool"]


@pytest.fixture(scope="session")
def prometheus_bin(deploy_tools: dict[str, str]) -> str:
    return deploy_tools["prometheus"]


@pytest.fixture(scope="session")
def docker_compose(deploy_tools: dict[str, str]) -> str:
    return deploy_tools["docker-compose"]
