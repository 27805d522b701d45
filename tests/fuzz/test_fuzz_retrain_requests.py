"""The retrain job's request reader (``RetrainRequests``, what ``triage retrain --on-request`` and
``--every`` start) on generated retrain requests.

One reader runs for the whole test, with a stand-in for the retrain job's wait loop
(``triage/commands/retrain.py``: wait for the wake-up, clear it, run) that counts runs instead of
training. Each hypothesis example produces ~20-40 generated requests (valid and malformed) in
one go, then one valid sentinel request alone. Property per example: the reader thread stays
alive and nothing makes its handler raise; every record is consumed; a batch without a valid
request runs nothing, one with valid requests runs at least once and at most once per valid
request (requests read before a run make one run); the sentinel alone makes exactly one run;
what the reader last acted on is a request the contract accepts.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from typing import Callable, Optional

from hypothesis import given

from consumers.retrain_requests import RetrainRequests
from tests.fuzz.kit import FUZZ, MAX_BYTES, Feeder, In, records, sticky, value
from tests.helpers import wait_until
from triage.contracts import encode
from triage.contracts.retrain_request import RetrainRequest, decode_retrain_request
from triage.errors import InputError
from triage.metrics import LoopMetrics
from triage.settings import Settings

LOOP = "retrain-requests"


def valid(v: Optional[bytes]) -> Optional[RetrainRequest]:
    try:
        return decode_retrain_request(v, MAX_BYTES)
    except InputError:
        return None


def test_invalid_requests_never_run_a_retrain_and_a_valid_one_runs_one(
    settings_factory: Callable[..., Settings],
) -> None:
    tag, n = uuid.uuid4().hex[:6], itertools.count()
    s = settings_factory(max_message_bytes=MAX_BYTES, retrain_requests_topic=f"requests-{tag}")
    metrics = LoopMetrics()
    reader = RetrainRequests(s, metrics).start()
    runs: list[RetrainRequest] = []
    done = threading.Event()

    def job() -> None:  # the wait loop of `triage retrain --on-request`, a run being a count
        while not done.is_set():
            if reader.wake.wait(0.1):
                assert reader.last is not None
                runs.append(reader.last)  # before the clear (the job clears, then runs): settle() waits for it
                reader.wake.clear()

    runner = threading.Thread(target=job, name="fuzz-retrain-job", daemon=True)
    runner.start()
    feeder = Feeder(s)
    consumed = 0
    ran: list[int] = []

    def alive() -> Optional[str]:
        if reader._thread is None or not reader._thread.is_alive():
            return "the request reader thread ended"
        return None if runner.is_alive() else "the stand-in retrain job ended"

    def settle(total: int) -> None:
        """Every record consumed, and a wake-up it set taken by the job (or none set)."""
        wait_until(lambda: value(metrics.records, loop=LOOP) >= total, f"the reader to consume {total} records",
                   alive=alive)
        wait_until(lambda: not reader.wake.is_set(), "the job to take the wake-up", alive=alive)
        time.sleep(0.3)  # a run the last records could still start shows up here

    try:
        @FUZZ
        @given(batch=records("retrain_request", 20, 40))
        @sticky
        def run(batch: list[In]) -> None:
            nonlocal consumed
            i = next(n)
            ran.append(i)
            accepted = [r for r in (valid(rec.value) for rec in batch) if r is not None]
            before = len(runs)
            feeder.send(s.topics.retrain_requests_topic, batch)
            consumed += len(batch)
            settle(consumed)
            made = len(runs) - before
            print(f"requests batch of {len(batch)}: {len(accepted)} valid, {made} runs")
            if not accepted:
                assert made == 0, "a batch without a valid request ran a retrain"
            else:
                assert 1 <= made <= len(accepted), (made, len(accepted))
                assert all(r in accepted for r in runs[before:]), "a run acted on a request the contract refuses"
            sentinel = RetrainRequest(f"v{i + 1}", "drift", "confidence", 31.5, 28.8, 1_700_000_000_000 + i)
            feeder.send(s.topics.retrain_requests_topic, [In(sentinel.model_version.encode(), encode(sentinel))])
            consumed += 1
            settle(consumed)
            assert runs[before + made:] == [sentinel], runs[before + made:]
            assert value(metrics.internal_errors, loop=LOOP) == 0, "a record made the handler raise"
            assert alive() is None

        run()
        assert len(ran) >= min(2, FUZZ.max_examples), f"hypothesis ran only {len(ran)} examples"
    finally:
        reader.close()
        done.set()
        runner.join(10)
        feeder.close()
    assert reader._thread is not None and not reader._thread.is_alive()
