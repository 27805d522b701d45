"""Shared pieces of the fault tests: a steady load generator and outcome accounting. (Waits,
processes and metric parsing: tests/helpers.py.)"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from tests.helpers import DEADLINE_S, http_get
from triage.examples import example_paths
from triage.records import OutRecord
from triage.settings import Settings
from triage.transport import make_producer


def sample_values(n: int, prefix: str, seed: int = 0) -> list[tuple[str, bytes]]:
    """``n`` valid samples (ids ``prefix0..``) from the bundled digits reference data."""
    with np.load(example_paths()[1]) as d:
        X = d["X"]
    rows = X[np.random.default_rng(seed).integers(0, len(X), n)]
    return [(f"{prefix}{i}", json.dumps({"id": f"{prefix}{i}", "features": r.tolist()}).encode())
            for i, r in enumerate(rows)]


class Load:
    """Produce samples at a steady rate from a thread, re-sending whatever fails (so a broker
    outage delays the load but loses none of it). ``acked`` holds the ids the broker took.
    ``n`` is the most it sends: ``finish()`` ends it early, once the fault it accompanies is over."""

    def __init__(self, settings: Settings, n: int, rate_per_s: float, prefix: str = "s", chunk: int = 100) -> None:
        self.settings = settings
        self.samples = sample_values(n, prefix)
        self.rate = rate_per_s
        self.chunk = chunk
        self.acked: set[str] = set()
        self.attempted: set[str] = set()
        self.failures = 0
        self.error: Optional[BaseException] = None
        self._finish = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)

    def start(self) -> "Load":
        self._thread.start()
        return self

    @property
    def sent(self) -> int:
        return len(self.acked)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def finish(self) -> None:
        """Send no chunk after the one in flight; then wait for the thread (``join``)."""
        self._finish.set()
        self.join()

    def join(self, timeout: float = DEADLINE_S * 2) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "load generator did not finish"
        assert self.error is None, self.error

    def _run(self) -> None:
        producer = make_producer(self.settings)
        topic = self.settings.topics.samples_topic
        started = time.monotonic()
        deadline = started + DEADLINE_S * 4
        try:
            for lo in range(0, len(self.samples), self.chunk):
                if self._finish.is_set():
                    break
                pending = self.samples[lo:lo + self.chunk]
                while pending and time.monotonic() < deadline:
                    self.attempted.update(sid for sid, _ in pending)
                    errors = producer.send_all([OutRecord(topic, sid.encode(), v) for sid, v in pending], 20)
                    self.acked.update(sid for (sid, _), e in zip(pending, errors) if e is None)
                    pending = [p for p, e in zip(pending, errors) if e is not None]
                    if pending:
                        self.failures += 1
                        time.sleep(0.5)
                assert not pending, "load generator gave up"
                # pace: the i-th chunk is due at started + i*chunk/rate
                due = started + (lo + self.chunk) / self.rate
                self._finish.wait(max(0.0, due - time.monotonic()))
        except BaseException as exc:  # surfaced by join()
            self.error = exc
        finally:
            producer.close()


@dataclass
class Tally:
    fault: str
    samples_in: int
    samples_out: int  # distinct sample ids that reached predictions, review or the DLQ
    lost: int
    duplicated: int  # output records beyond the first per sample id

    def record(self) -> "Tally":
        line = json.dumps(asdict(self))
        print(f"\nRELIABILITY {line}")
        report = os.environ.get("TRIAGE_RELIABILITY_REPORT")
        if report:
            with Path(report).open("a") as f:
                f.write(line + "\n")
        return self


def output_ids(settings: Settings, out: list[dict[str, Any]]) -> list[str]:
    """Sample id of every primary output (audit copies excluded; DLQ records by key)."""
    ids: list[str] = []
    for r in out:
        if r["topic"] == settings.topics.dlq_topic:
            ids.append((r["key"] or b"").decode("utf-8", "replace"))
            continue
        doc = json.loads(r["value"])
        if doc.get("reason") != "audit":
            ids.append(doc["id"])
    return ids


def count(fault: str, sent: set[str], ids: list[str]) -> Tally:
    seen = set(ids)
    return Tally(fault, len(sent), len(seen & sent), len(sent - seen), len(ids) - len(seen))


def tally(fault: str, settings: Settings, sent: set[str], out: list[dict[str, Any]]) -> Tally:
    return count(fault, sent, output_ids(settings, out))


def readyz(port: int) -> int:
    """HTTP status of /readyz (0 when the server does not answer)."""
    try:
        return http_get(f"http://127.0.0.1:{port}/readyz", timeout=3)[0]
    except OSError:
        return 0
