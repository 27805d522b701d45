"""A directory registry's promote and rollback are one commit, whatever moment SIGKILL picks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.helpers import REPO
from triage.lifecycle.registry import Registry
from triage.runtime.broker import EmbeddedBroker


def _same_bytes_bundle(reg: Registry) -> str:
    manifest = {k: v for k, v in reg.manifest("v1").items() if k not in ("version", "sha256", "path", "status")}
    return reg.add_bundle(reg.model_path("v1").read_bytes(), manifest, reg.canary("v1"))


def test_a_rollback_killed_between_current_and_history_never_rolls_back_to_what_it_rolled_back(
        registry: Registry, broker: EmbeddedBroker) -> None:
    """CURRENT and HISTORY were two writes: killed between them, CURRENT said v2 and HISTORY
    still ended in v3, so the operator's next rollback brought back v3, the version just
    rolled back."""
    for _ in range(2):
        registry.promote(_same_bytes_bundle(registry))
    assert (registry.current(), registry.history()) == ("v3", ["v1", "v2", "v3"])
    env = {**os.environ, "TRIAGE_FAILPOINT": "registry.after_current:kill"}
    done = subprocess.run([sys.executable, "-m", "triage", "models", "rollback", "--registry", str(registry.root),
                           "--bootstrap-servers", broker.bootstrap_servers],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert (registry.current(), registry.history()) == ("v2", ["v1", "v2"])
    assert registry.rollback()["version"] == "v1"
    assert (registry.current(), registry.history()) == ("v1", ["v1"])
    assert not (registry.root / "HISTORY.next").exists()
