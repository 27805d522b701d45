"""What the process-level tests share, in one place: bounded waits, ``python -m triage``
subprocesses, and reading a /metrics page.

- ``wait_until``: the one wait loop; every wait in the tests is bounded by ``DEADLINE_S``.
- ``TriageProcess`` (``ScorerProcess``, ``RetrainProcess``): ``triage ARGV`` with the settings as
  ``TRIAGE_*`` environment, its own metrics port and a log file.
- ``metric_value`` / ``metric_samples`` / ``exported``: a /metrics page read with
  prometheus_client's own parser.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, TypeVar

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from triage.runtime.broker import free_port
from triage.settings import Settings, env_var

REPO = Path(__file__).resolve().parents[1]
DEADLINE_S = 90.0  # every wait in the tests is bounded by this
LOG_TAIL = 4000  # characters of a dead process's log shown in a failure

T = TypeVar("T")


# --- waits ---------------------------------------------------------------------------------------


def wait_until(check: Callable[[], T], what: str, *, timeout_s: float = DEADLINE_S, every_s: float = 0.2,
               alive: Optional[Callable[[], Optional[str]]] = None) -> T:
    """Poll ``check`` until it returns something truthy and return that; an exception from
    ``check`` counts as "not yet". ``alive`` returns None while the process (or thread) under
    test runs and its log (or a reason) once it died: the wait then fails at once, with the
    log's tail. On timeout the failure names ``what`` and the last exception ``check`` raised."""
    deadline = time.monotonic() + timeout_s
    last: Optional[BaseException] = None
    while True:
        try:
            got = check()
        except Exception as exc:  # reported if the wait times out
            last = exc
        else:
            if got:
                return got
        if alive is not None:
            dead = alive()
            if dead is not None:
                raise AssertionError(f"died while waiting for {what}:\n{dead[-LOG_TAIL:]}")
        if time.monotonic() >= deadline:
            break
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}"
                         + (f"; last error: {last!r}" if last is not None else ""))


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """(status, body); HTTP errors are answers here, not exceptions (connection errors raise)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


# --- /metrics ------------------------------------------------------------------------------------

# series names a family of each type produces
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
            "summary": ("_sum", "_count"), "gauge": ("",), "info": ("_info",),
            "unknown": ("",), "stateset": ("",), "gaugehistogram": ("_bucket", "_gsum", "_gcount")}


def metric_samples(text: str, name: str, **labels: Any) -> list[Sample]:
    """The samples of series ``name`` (e.g. ``triage_samples_total``, ``triage_confidence_count``)
    whose labels include ``labels``."""
    want = {k: str(v) for k, v in labels.items()}
    return [s for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in want.items())]


def metric_value(text: str, name: str, **labels: Any) -> float:
    """The sum of the samples of series ``name`` whose labels include ``labels`` (0 if none)."""
    return float(sum(s.value for s in metric_samples(text, name, **labels)))


def exported(text: str) -> set[str]:
    """Series names a /metrics page can produce, from its declared families: a labelled metric
    with no children yet still counts (its TYPE line proves the process exports it)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


# --- processes -----------------------------------------------------------------------------------


def settings_env(settings: Settings) -> dict[str, str]:
    """``settings`` as the ``TRIAGE_*`` environment a triage process reads."""
    env = {}
    for name, value in settings.flat(exclude_none=True).items():
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[env_var(name)] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


class TriageProcess:
    """``python -m triage ARGV`` in a subprocess: ``settings`` as ``TRIAGE_*`` environment (plus
    ``extra_env``, minus ``drop_env``), its own metrics port, output in ``workdir/NAME.log``.
    ``program``, ``base_env`` and ``cwd`` run another install's ``triage`` instead (the core venv)."""

    def __init__(self, settings: Settings, argv: list[str], workdir: Path, name: str, *,
                 extra_env: Optional[dict[str, str]] = None, drop_env: Iterable[str] = (),
                 program: Sequence[str] = (sys.executable, "-m", "triage"),
                 base_env: Optional[Mapping[str, str]] = None, cwd: Path = REPO) -> None:
        self.name = name
        self.metrics_port = free_port()
        env = {**(os.environ if base_env is None else base_env), **settings_env(settings), **(extra_env or {}),
               "TRIAGE_METRICS_PORT": str(self.metrics_port)}
        for key in drop_env:
            env.pop(key, None)
        self.log_path = Path(workdir) / f"{name}.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([*program, *argv], env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def dead(self) -> Optional[str]:
        """None while it runs; its exit code and log once it exited (an ``alive`` for wait_until)."""
        code = self.proc.poll()
        return None if code is None else f"{self.name} exited with {code}; log:\n{self.log()}"

    def metrics(self, timeout_s: float = DEADLINE_S) -> str:
        """Its /metrics page, once the endpoint answers (fails at once if the process died)."""
        def page() -> Optional[str]:
            code, body = http_get(self.url + "/metrics")
            return body if code == 200 else None

        return wait_until(page, f"{self.name} /metrics", timeout_s=timeout_s, alive=self.dead)

    def metric(self, name: str, **labels: Any) -> float:
        """``metric_value`` of a fresh scrape: the sum of ``name``'s samples with ``labels``."""
        return metric_value(self.metrics(), name, **labels)

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self) -> int:
        """SIGTERM; its exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def stop(self) -> None:
        """Kill it if it still runs (teardown)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class ScorerProcess(TriageProcess):
    """``triage serve EXTRA...``, logging to ``log_path``."""

    def __init__(self, settings: Settings, extra: list[str], log_path: Path) -> None:
        log_path = Path(log_path)
        super().__init__(settings, ["serve", *extra], log_path.parent, log_path.name.removesuffix(".log"))


class RetrainProcess(TriageProcess):
    """``triage train`` from ``data`` into ``workdir/registry``, then ``triage retrain --every``
    on it (its model settings dropped: the registry names the model)."""

    def __init__(self, settings: Settings, data: Path, workdir: Path) -> None:
        registry = Path(workdir) / "registry"
        env = {**os.environ, **settings_env(settings)}
        for key in ("TRIAGE_MODEL", "TRIAGE_REFERENCE"):
            env.pop(key, None)
        train = subprocess.run([sys.executable, "-m", "triage", "train", "--data", str(data), "--registry", str(registry)],
                               env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert train.returncode == 0, f"triage train failed:\n{train.stdout}\n{train.stderr}"
        super().__init__(settings, ["retrain", "--registry", str(registry), "--every", "3600"], workdir, "retrain",
                         drop_env=("TRIAGE_MODEL", "TRIAGE_REFERENCE"))
