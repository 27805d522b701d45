"""SIGTERM to the retrain job (`triage retrain --every`) while its ingest faces a broker outage:
it leaves its batch uncommitted and exits within the grace period an orchestrator gives it (30 s,
Kubernetes' default; compose gives it 60 s)."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from typing import Callable

from tests.helpers import TriageProcess, wait_until
from tests.reliability.test_broker_outage import ProxiedBroker, broker, proxied  # noqa: F401 - the proxied broker
from tests.reliability.world import send_labels
from triage.lifecycle.registry import Registry
from triage.settings import Settings

LABELS = 2000
GRACE_S = 30.0  # terminationGracePeriodSeconds when deploy/k8s/base/retrain.yaml sets none


def test_retrain_ingest_stops_on_sigterm_during_a_broker_outage(
    proxied: ProxiedBroker, settings_factory: Callable[..., Settings], registry: Registry,  # noqa: F811
    triage_process: Callable[..., TriageProcess],
) -> None:
    # one label per batch, none of which can join: the ingest dead-letters them one send at a time
    s = settings_factory(retrain_group_id=f"retrain-{uuid.uuid4().hex[:8]}", batch_size=1)
    send_labels(s, LABELS, "T", features=False)
    proc = triage_process("retrain", s, "--registry", str(registry.root), "--every", "3600")
    wait_until(lambda: proc.metric("triage_records_consumed_total", loop="retrain") >= 20,
               "the ingest to be dead-lettering labels", alive=proc.dead)
    proxied.proxy.cut()
    try:
        time.sleep(3)  # the stimulus: the ingest is sending dead letters into the outage
        assert proc.proc.poll() is None, proc.log()
        proc.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        try:
            code = proc.proc.wait(GRACE_S)
        except subprocess.TimeoutExpired:
            code = None
        took = time.monotonic() - started
    finally:
        proxied.proxy.restore()
    print(f"SIGTERM during a broker outage: exit {code} after {took:.1f} s (grace {GRACE_S:.0f} s)")
    assert code == 0, f"still running {GRACE_S:.0f} s after SIGTERM (exit {code}); log:\n{proc.log()[-3000:]}"
