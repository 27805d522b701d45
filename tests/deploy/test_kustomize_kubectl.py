"""The in-process renderer (tests/deploy/kustomize.py) against the real one: `kubectl kustomize`
prints the same objects for the base and every overlay. Skipped where kubectl is not installed
(it is not a Debian package scripts/setup_deploytools.sh can add); the other deploy tests then
still validate the in-process rendering."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import DEPLOY
from tests.deploy.kustomize import render

DIRS = [DEPLOY / "k8s" / "base", *sorted(p.parent for p in (DEPLOY / "k8s" / "overlays").glob("*/kustomization.yaml"))]


@pytest.mark.parametrize("directory", DIRS, ids=lambda p: p.relative_to(DEPLOY / "k8s").as_posix())
def test_kubectl_kustomize_renders_what_the_tests_validate(directory: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    theirs = [d for d in yaml.safe_load_all(out.stdout) if d]

    def key(d: dict) -> tuple[str, str]:
        return d["kind"], d["metadata"]["name"]

    assert sorted(render(directory), key=key) == sorted(theirs, key=key)
