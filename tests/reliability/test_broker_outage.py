"""Broker outage: a proxy between the scorer and the broker is cut under load, for longer than
the group's session timeout and until the scorer has shown the outage (/readyz 503,
triage_ready 0).

The broker advertises the proxy's address, so every connection (the scorer's, the load
generator's, the readers') goes through it. The memory-only broker itself keeps running,
so nothing written before the cut is lost with it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.fixtures import read_all
from tests.helpers import ScorerProcess, metric_value, wait_until
from tests.reliability.helpers import Load, readyz, tally
from tests.reliability.proxy import TcpProxy
from triage.runtime.broker import EmbeddedBroker, free_port
from triage.settings import Settings

SESSION_TIMEOUT_MS = 6000
# The outage outlasts the session timeout (the broker drops the scorer from its group, which must
# rejoin), and then lasts until the scorer has shown it; never longer than OUTAGE_MAX_S.
OUTAGE_MIN_S = SESSION_TIMEOUT_MS / 1000 + 2
OUTAGE_MAX_S = 60.0


class ProxiedBroker:
    def __init__(self, broker: EmbeddedBroker, proxy: TcpProxy) -> None:
        self.broker = broker
        self.proxy = proxy
        self.bootstrap_servers = proxy.address


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxiedBroker]:
    port = free_port()
    log = tmp_path_factory.mktemp("proxied") / "tansu.log"
    with EmbeddedBroker(log_file=log, advertised=f"127.0.0.1:{port}") as b:
        proxy = TcpProxy("127.0.0.1", b.port, port).start()
        try:
            yield ProxiedBroker(b, proxy)
        finally:
            proxy.stop()


@pytest.fixture
def broker(proxied: ProxiedBroker) -> ProxiedBroker:
    """Overrides the session broker: settings_factory now points at the proxy."""
    return proxied


def test_scorer_rides_out_a_broker_outage(
    proxied: ProxiedBroker, settings_factory: Callable[..., Settings],
    example_model: tuple[Path, Path], scorer_process: Callable[..., ScorerProcess],
) -> None:
    model_path, ref = example_model
    s = settings_factory(batch_size=100, session_timeout_ms=SESSION_TIMEOUT_MS)
    load = Load(s, n=12_000, rate_per_s=400).start()
    proc = scorer_process(s, "--model", str(model_path), "--reference", str(ref))
    wait_until(lambda: proc.metric("triage_batches_total") >= 3, "the scorer to process batches", alive=proc.dead)
    wait_until(lambda: readyz(proc.metrics_port) == 200, "readiness before the outage", alive=proc.dead)
    pid = proc.proc.pid

    proxy = proxied.proxy
    proxy.cut()
    cut_at = time.monotonic()
    statuses: list[int] = []
    ready_gauge: list[float] = []

    def outage_shown() -> bool:
        """One probe: /readyz and triage_ready; true once the outage is long enough and was seen."""
        statuses.append(readyz(proc.metrics_port))
        text = proc.metrics(timeout_s=5)
        ready_gauge.append(metric_value(text, "triage_ready"))
        return time.monotonic() - cut_at >= OUTAGE_MIN_S and 503 in statuses and 0.0 in ready_gauge

    try:
        wait_until(outage_shown, "the scorer to show the outage (/readyz 503, triage_ready 0)",
                   timeout_s=OUTAGE_MAX_S, every_s=0.5, alive=proc.dead)
    finally:
        during = proc.metrics(timeout_s=5) if proc.proc.poll() is None else ""
        proxy.restore()
    outage_s = time.monotonic() - cut_at
    restored_at = time.monotonic()

    assert proc.proc.poll() is None, "the scorer exited during the outage:\n" + proc.log()
    assert 503 in statuses, f"/readyz never reported the outage: {statuses}"
    assert 0.0 in ready_gauge, "triage_ready never dropped to 0"
    wait_until(lambda: readyz(proc.metrics_port) == 200, "readiness after the outage", timeout_s=120, alive=proc.dead)
    recovered_s = time.monotonic() - restored_at
    # ready again: the scorer scores what the load sent meanwhile, then the load ends
    batches = proc.metric("triage_batches_total")
    wait_until(lambda: proc.metric("triage_batches_total") > batches or not load.running,
               "the scorer to score after the outage", alive=proc.dead)
    load.finish()
    out = read_all(s, s.topics.outputs(), expect=load.sent, timeout_s=180,
                   stop_when=lambda got: len({r["key"] for r in got}) >= load.sent)
    after = proc.metrics()
    assert proc.proc.pid == pid and proc.proc.poll() is None, "the scorer was restarted or died"
    t = tally(f"broker outage {outage_s:.0f}s under load (proxy cut)", s, load.acked, out).record()
    errors = metric_value(after, "triage_broker_errors_total")
    print(f"outage: /readyz 503 for {statuses.count(503)}/{len(statuses)} probes; ready again "
          f"{recovered_s:.1f}s after restore; broker errors {errors:.0f} (during: "
          f"{metric_value(during, 'triage_broker_errors_total'):.0f}); load re-sends {load.failures}")
    assert t.lost == 0, t
    assert errors > 0, "the outage left no trace in triage_broker_errors_total"
