"""Deploy-test fixtures: the Debian tools (promtool, prometheus, docker-compose v1), installed
once per session when missing. Tests that need them FAIL, never skip, when they cannot be had."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROM_DIR = DEPLOY / "prometheus"

# executable -> Debian package that provides it
TOOLS = {"promtool": "prometheus", "prometheus": "prometheus", "docker-compose": "docker-compose"}
APT_TIMEOUT_S = 900


def _apt_install(packages: list[str]) -> str:
    """Install Debian packages quietly; returns "" on success or the reason it failed."""
    if os.geteuid() != 0:
        return "not running as root, so apt-get cannot install them"
    if shutil.which("apt-get") is None:
        return "apt-get is not available on this system"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=300"]  # other sessions may hold the dpkg lock
    for cmd in (["apt-get", *lock, "update", "-qq"],
                ["apt-get", *lock, "install", "-y", "-qq", "--no-install-recommends", *packages]):
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return f"`{' '.join(cmd)}` did not finish within {APT_TIMEOUT_S}s"
        if done.returncode != 0:
            return f"`{' '.join(cmd)}` exited {done.returncode}:\n{(done.stdout + done.stderr)[-2000:]}"
    return ""


@pytest.fixture(scope="session")
def deploy_tools() -> dict[str, str]:
    """Paths of promtool, prometheus and docker-compose, installing them once if missing."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    reason = _apt_install(sorted({TOOLS[t] for t in missing})) if missing else ""
    paths = {tool: shutil.which(tool) for tool in TOOLS}
    absent = [tool for tool, path in paths.items() if path is None]
    if absent:
        pytest.fail(
            f"deploy tests need {', '.join(absent)} (Debian packages "
            f"{', '.join(sorted({TOOLS[t] for t in absent}))}); automatic install failed: "
            f"{reason or 'packages installed but the tools are still not on PATH'}. "
            "Install them with: apt-get update && apt-get install -y prometheus docker-compose",
            pytrace=False,
        )
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
