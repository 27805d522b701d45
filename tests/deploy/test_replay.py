"""``triage replay``, the stack's sample producer: records, pacing, CLI errors, and a real run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from tests.fixtures import read_all
from tests.helpers import REPO, settings_env
from triage.runtime.pacing import chunk_size, sample_records, send_paced
from triage.errors import TransportError
from triage.records import OutRecord
from triage.settings import Settings


class FlakyProducer:
    """Fails the first send of every record once (retriable), then acknowledges."""

    def __init__(self) -> None:
        self.acked: list[OutRecord] = []
        self._seen: set[bytes] = set()

    def send_all(self, records: list[OutRecord], timeout_s: float, stop: object = None) -> list[Optional[TransportError]]:
        out: list[Optional[TransportError]] = []
        for r in records:
            if r.key not in self._seen:
                self._seen.add(r.key or b"")
                out.append(TransportError("broker busy", retriable=True))
            else:
                self.acked.append(r)
                out.append(None)
        return out

    def close(self) -> None:
        return None


def test_sample_records_loop_and_count() -> None:
    X = np.arange(6, dtype=float).reshape(3, 2)
    recs = list(sample_records(X, prefix="p", loop=True, count=7, topic="t"))
    docs = [json.loads(r.value or b"") for r in recs]
    assert [d["id"] for d in docs] == [f"p-{i}" for i in range(7)]
    assert [d["features"] for d in docs][3] == [0.0, 1.0]  # wrapped around
    assert all(r.key == d["id"].encode() and r.topic == "t" and isinstance(d["ts"], int) for r, d in zip(recs, docs))
    assert len(list(sample_records(X, prefix="p", loop=False, count=0, topic="t"))) == 3


def test_chunk_size_spreads_the_rate_over_ticks() -> None:
    assert chunk_size(50) == 5
    assert chunk_size(1) == 1
    assert chunk_size(0) == 1000


def test_send_paced_retries_until_every_record_is_acknowledged(tmp_path: Path) -> None:
    X = np.ones((25, 3))
    producer = FlakyProducer()
    beat = tmp_path / "beat"
    sent = send_paced(producer, sample_records(X, prefix="x", loop=False, count=0, topic="t"), 0, threading.Event(),
                      heartbeat=beat)
    assert sent == 25
    assert sorted(r.key for r in producer.acked) == sorted(f"x-{i}".encode() for i in range(25))
    assert beat.exists()


def _replay(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "triage", "replay", *args], env={**os.environ, **settings_env(settings)},
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_replay_puts_the_dataset_on_the_samples_topic(
    settings_factory: Callable[..., Settings], example_model: tuple[Path, Path]
) -> None:
    _, ref = example_model
    s = settings_factory()
    done = _replay(s, "--data", str(ref), "--rate", "0", "--count", "60", "--loop", "--id-prefix", "r")
    assert done.returncode == 0, done.stderr
    assert "replayed 60 samples" in done.stdout
    out = read_all(s, [s.topics.samples_topic], expect=60)
    docs = [json.loads(r["value"]) for r in out]
    assert sorted(d["id"] for d in docs) == sorted(f"r-{i}" for i in range(60))
    with np.load(ref) as data:
        X = data["X"]
    by_id = {d["id"]: d for d in docs}
    assert np.allclose(by_id["r-7"]["features"], X[7])


def test_replay_rejects_a_bad_rate_and_a_missing_file(settings_factory: Callable[..., Settings], tmp_path: Path,
                                                      example_model: tuple[Path, Path]) -> None:
    s = settings_factory()
    done = _replay(s, "--data", str(example_model[1]), "--rate", "-1")
    assert done.returncode == 2 and "--rate must be >= 0" in done.stderr
    done = _replay(s, "--data", str(tmp_path / "nope.npz"))
    assert done.returncode == 2 and "does not exist" in done.stderr
