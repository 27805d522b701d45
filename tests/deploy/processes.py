"""Running triage processes for the deploy tests: wait for their ops endpoints, and start the
retrain job when this build has one (issue 3) so its metrics are checked too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional

from tests.fixtures import DEADLINE_S, REPO, _env
from triage.runtime.broker import free_port
from triage.settings import Settings


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """(status, body); HTTP errors are answers here, not exceptions."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_until(check: Callable[[], Optional[str]], what: str, alive: Callable[[], Optional[str]],
               timeout: float = DEADLINE_S, every: float = 0.25) -> str:
    """Poll ``check`` (returns a value when satisfied) until it succeeds; bounded in time and
    count; ``alive`` returns an error text when the process under test has died."""
    deadline = time.monotonic() + timeout
    last = ""
    for _ in range(int(timeout / every) + 1):
        dead = alive()
        assert dead is None, f"process died while waiting for {what}:\n{dead}"
        try:
            got = check()
            if got is not None:
                return got
        except OSError as exc:
            last = repr(exc)
        if time.monotonic() > deadline:
            break
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} ({last})")


class RetrainProcess:
    """``triage train`` into a fresh registry, then ``triage retrain --every`` on its own port."""

    def __init__(self, settings: Settings, data: Path, workdir: Path) -> None:
        registry = workdir / "registry"
        env = {**os.environ, **_env(settings)}
        env.pop("TRIAGE_MODEL", None)
        env.pop("TRIAGE_REFERENCE", None)
        self.log_path = workdir / "retrain.log"
        train = subprocess.run([sys.executable, "-m", "triage", "train", "--data", str(data), "--registry", str(registry)],
                               env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert train.returncode == 0, f"triage train failed:\n{train.stdout}\n{train.stderr}"
        self.metrics_port = free_port()
        env["TRIAGE_METRICS_PORT"] = str(self.metrics_port)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "triage", "retrain", "--registry", str(registry), "--every", "3600"],
            env=env, cwd=REPO, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
        )

    def dead(self) -> Optional[str]:
        return None if self.proc.poll() is None else self.log_path.read_text(errors="replace")

    def metrics(self) -> str:
        return wait_until(lambda: http_get(f"http://127.0.0.1:{self.metrics_port}/metrics")[1],
                          "retrain /metrics", self.dead)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def ready_state(port: int) -> tuple[int, dict[str, object]]:
    code, body = http_get(f"http://127.0.0.1:{port}/readyz")
    return code, json.loads(body)


class TriageProcess:
    """``triage <argv>`` in a subprocess with its own /metrics port (the audit consumer, the
    Label Studio bridge): for the metric and scrape tests."""

    def __init__(self, settings: Settings, argv: list[str], workdir: Path, name: str,
                 extra_env: Optional[dict[str, str]] = None) -> None:
        env = {**os.environ, **_env(settings), **(extra_env or {})}
        self.metrics_port = free_port()
        env["TRIAGE_METRICS_PORT"] = str(self.metrics_port)
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "triage", *argv], env=env, cwd=REPO,
                                     stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT)

    def dead(self) -> Optional[str]:
        return None if self.proc.poll() is None else self.log_path.read_text(errors="replace")

    def metrics(self) -> str:
        return wait_until(lambda: http_get(f"http://127.0.0.1:{self.metrics_port}/metrics")[1],
                          f"{self.name} /metrics", self.dead)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
