"""The live control's registry write against a real read-only and a real full file system: the
change is not half-made (no file, no remembered change, the old threshold exported), it is
counted and logged, and it is written once the registry takes it again."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from tests.unit.test_live_risk import _batch, _consumer, _Registry, _replay


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "registry"
    root.mkdir()
    try:
        _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(root))
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"mounting a tmpfs needs root (CAP_SYS_ADMIN): {getattr(exc, 'stderr', exc)}")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_a_refused_write_changes_nothing_and_is_retried(tmpfs: Path, fault: str) -> None:
    registry = _Registry(tmpfs, 0.6)
    registry.bundle_dir("v1").mkdir(parents=True)
    if fault == "read-only":
        _mount("-o", "remount,ro", str(tmpfs))
    else:
        with open(tmpfs / "filler", "wb") as fh, pytest.raises(OSError):
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
    consumer = _consumer(registry, risk_live_control=True)
    _replay(consumer, _batch(np.random.default_rng(9), 600, 0.15, start=0, ts_ms=1_000))
    m = consumer.metrics
    assert m.live_write_errors._value.get() == 1
    assert registry.live_risk("v1") is None and consumer.control.history["v1"] == []
    assert m.live_threshold.labels(version="v1")._value.get() == 0.6  # the scorers keep it
    assert m.live_actions.labels(action="tighten")._value.get() == 0
    consumer.after_poll(None)  # idle: retried, still refused
    assert m.live_write_errors._value.get() == 2 and registry.live_risk("v1") is None

    if fault == "read-only":
        _mount("-o", "remount,rw", str(tmpfs))
    else:
        (tmpfs / "filler").unlink()
    consumer.after_poll(None)
    doc = registry.live_risk("v1")
    assert doc is not None and doc["threshold"] < 0.6 and len(doc["history"]) == 1
    assert m.live_actions.labels(action="tighten")._value.get() == 1
    consumer.after_poll(None)  # written: nothing more to do
    assert m.live_write_errors._value.get() == 2 and len(registry.live_risk("v1")["history"]) == 1  # type: ignore[index]
    assert not list(tmpfs.glob("models/v1/.live_risk.json.*"))  # no temporary file left behind
