"""`triage monitor` end to end on the embedded broker: a scorer serves digits v1, the monitor
reads its outputs. In distribution the label-free estimate matches the true accuracy of the
served predictions and no alarm fires; after a covariate shift (inputs drawn toward the ones
the model is unsure of, so P(y | x) is unchanged) an alarm fires, the estimate follows the
accuracy down and a retrain request is published. Then a SIGKILL-free restart check: a new
monitor on the same checkpoint neither resets nor re-counts."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from consumers.monitor import MonitorConsumer, config_of
from tests.fixtures import decoded, produce, read_all, registry_v1
from tests.helpers import wait_until
from tests.integration.test_hotswap import start_inprocess, stop_inprocess
from triage.contracts import encode
from triage.contracts.retrain_request import decode_retrain_request
from triage.monitoring import checkpoint
from triage.settings import Settings

REFERENCE, WINDOW = 1_000, 1_000


def _send(s: Settings, X: np.ndarray, rows: np.ndarray, prefix: str) -> list[tuple[bytes, bytes]]:
    records = [(f"{prefix}{k}".encode(), encode({"id": f"{prefix}{k}:{i}", "features": X[i].tolist()}))
               for k, i in enumerate(rows)]
    produce(s, s.topics.samples_topic, records)
    return records


def _outputs(s: Settings, prefix: str, n: int) -> list[dict[str, Any]]:
    def routed(out: list[dict[str, Any]]) -> bool:
        mine = [d for t in (s.topics.predictions_topic, s.topics.review_topic) for d in decoded(out, t)
                if d["id"].startswith(prefix) and d.get("reason") != "audit"]
        return len(mine) >= n

    out = read_all(s, [s.topics.predictions_topic, s.topics.review_topic], expect=n, stop_when=routed)
    return [d for t in (s.topics.predictions_topic, s.topics.review_topic) for d in decoded(out, t)
            if d["id"].startswith(prefix) and d.get("reason") != "audit"]


def _accuracy(outs: list[dict[str, Any]], y: np.ndarray) -> float:
    return float(np.mean([(d.get("label") or d.get("predicted")) == str(int(y[int(d["id"].split(":")[1])]))
                          for d in outs]))


def _value(m: MonitorConsumer, name: str, **labels: str) -> float:
    v = m.metrics.registry.get_sample_value(name, labels)
    return 0.0 if v is None else v


def _folded(m: MonitorConsumer) -> int:
    """Outputs past the merge (read, released into the estimate and the detectors, and exported:
    the monitor's thread sets the gauges just after it counts, so both are waited for)."""
    v = m.state.versions.get("v1")
    exported = m.metrics.registry.get_sample_value("triage_estimated_accuracy", {"model_version": "v1"})
    # the gauge must hold the estimate of what was counted, not the one before the last fold
    # (a whole phase can arrive in one fold: the gauge then still shows the phase before)
    return 0 if v is None or exported is None or exported != v.estimate().accuracy else v.seen


def test_estimate_tracks_accuracy_and_a_covariate_shift_raises_an_alarm_and_a_retrain_request(
    settings_factory: Callable[..., Settings], digits: tuple[np.ndarray, np.ndarray], tmp_path: Path,
) -> None:
    X, y = digits
    reg = registry_v1(tmp_path / "registry", X[:700], y[:700])
    s = settings_factory(registry=reg.root, drift_reference_samples=REFERENCE, monitor_window=WINDOW,
                         monitor_state_dir=tmp_path / "monitor", monitor_checkpoint_s=0.5)
    rng = np.random.default_rng(0)
    pool = np.arange(700, len(X))
    scorer = start_inprocess(s, reg)
    monitor = MonitorConsumer(s)
    thread = threading.Thread(target=monitor.run, daemon=True)
    thread.start()
    try:
        # In distribution: i.i.d. draws from the held-out rows.
        first = _outputs(s, "a", len(_send(s, X, rng.choice(pool, 4_000), "a")))
        wait_until(lambda: _folded(monitor) >= 4_000, "the monitor to fold phase 1 in")
        est = _value(monitor, "triage_estimated_accuracy", model_version="v1")
        true_first = _accuracy(first, y)
        print(f"in distribution: estimated {est:.3f}, true {true_first:.3f}")
        assert abs(est - true_first) <= 0.05
        assert sum(d.alarms for d in monitor.state.versions["v1"].detectors.values()) == 0
        assert monitor.state.versions["v1"].calibrated

        # Covariate shift: draw toward the inputs v1 was unsure of (selection on x alone).
        confidence = {int(d["id"].split(":")[1]): d["confidence"] for d in first}
        seen = np.array(sorted(confidence))
        weights = np.array([(1.0 - confidence[i]) + 0.02 for i in seen])
        shifted = rng.choice(seen, 5_000, p=weights / weights.sum())
        second = _outputs(s, "b", len(_send(s, X, shifted, "b")))
        wait_until(lambda: _folded(monitor) >= 9_000, "the monitor to fold phase 2 in")
        alarms = {n: d.alarms for n, d in monitor.state.versions["v1"].detectors.items() if d.alarms}
        est = _value(monitor, "triage_estimated_accuracy", model_version="v1")
        true_second = _accuracy(second, y)
        print(f"after the shift: alarms {alarms}, estimated {est:.3f}, true {true_second:.3f}")
        assert alarms, "no drift alarm within 5,000 shifted samples"
        assert true_second < true_first - 0.1  # the shift did hurt
        assert abs(est - true_second) <= 0.1
        requests = read_all(s, [s.topics.retrain_requests_topic], expect=1)
        req = decode_retrain_request(requests[0]["value"], 10_000)
        assert req.model_version == "v1" and req.reason == "drift" and req.statistic > req.threshold
        # counted once the broker acknowledged it, which the reader above can see first
        wait_until(lambda: _value(monitor, "triage_retrain_requests_total", reason="drift") >= 1,
                   "the monitor to count its acknowledged request")
        assert _value(monitor, "triage_retrain_requests_total", reason="drift") == 1
    finally:
        monitor.stop_event.set()
        thread.join(60)
        stop_inprocess(*scorer)
    assert not thread.is_alive()

    # A restart on the checkpoint: the same state, nothing re-counted (everything was committed).
    again = MonitorConsumer(s)
    before = monitor.state.versions["v1"]
    after = again.state.versions["v1"]
    assert after.seen == before.seen == 9_000
    assert {n: d.alarms for n, d in after.detectors.items()} == {n: d.alarms for n, d in before.detectors.items()}
    again.run(idle_exit_s=3.0)
    assert again.state.versions["v1"].seen == 9_000
    assert _value(again, "triage_monitor_records_total", kind="replayed") == 0


def _prediction(i: int, rng: np.random.Generator) -> tuple[bytes, bytes]:
    conf = float(rng.beta(8, 1))
    doc = {"id": f"p{i}", "label": str(int(rng.integers(0, 10))), "confidence": conf,
           "scores": {"margin": conf / 2, "entropy": 1 - conf, "outlier": float(rng.random())},
           "model_version": "v1", "meta": None}
    return f"p{i}".encode(), encode(doc)


def test_sigkill_mid_stream_neither_resets_nor_double_counts(
    settings_factory: Callable[..., Settings], triage_process: Callable[..., Any], tmp_path: Path,
) -> None:
    """`triage monitor` SIGKILLed mid-stream three times, at its 10th, 10th and 25th batch of 200 (a
    failpoint: the batch folded in, perhaps checkpointed, not committed), then run to the end: its
    checkpoint has seen every record exactly once."""
    from consumers.monitor import config_of
    from triage.monitoring import checkpoint
    from triage.runtime.failpoints import ENV

    s = settings_factory(drift_reference_samples=500, monitor_window=200, monitor_checkpoint_s=0.2,
                         monitor_state_dir=tmp_path / "monitor", batch_size=200, monitor_bucket_ms=5,
                         monitor_max_hold_s=0)
    rng = np.random.default_rng(4)
    total = 15_000
    for start in range(0, total, 500):  # produce times spread over many buckets, as live traffic is
        produce(s, s.topics.predictions_topic, [_prediction(i, rng) for i in range(start, start + 500)])
    seen_at_kill = []
    # checkpointing every 0.2 s, a kill lands after the fold and before its checkpoint; every
    # 0.01 s, mostly after the checkpoint and before the commit (the restart skips what it covers)
    for every_s, at in (("0.2", 10), ("0.01", 10), ("0.01", 25)):
        proc = triage_process("monitor", s, env={ENV: f"monitor.batch:kill@{at}", "TRIAGE_MONITOR_CHECKPOINT_S": every_s})
        wait_until(lambda: proc.proc.poll() is not None, "the failpoint to kill the monitor", timeout_s=180)
        assert proc.proc.returncode == -signal.SIGKILL, proc.log()[-2000:]
        state = checkpoint.load(tmp_path / "monitor", config_of(s))
        seen = state.versions["v1"].seen if "v1" in state.versions else 0
        assert seen < total, "killed after the end: not mid-stream"
        assert seen == sum(state.covered.values()), "a record folded twice, or one covered but not folded"
        seen_at_kill.append(seen)
        time.sleep(s.connection.session_timeout_ms / 1000 + 1)  # as a restarted pod: the old session is over
    # DEBUG: each batch's offsets, the assignment and the coverage, in the log if this fails
    last = triage_process("monitor", s, env={"TRIAGE_LOG_LEVEL": "DEBUG"})
    wait_until(lambda: checkpoint.load(tmp_path / "monitor", config_of(s)).versions["v1"].seen >= total,
               "the last run to checkpoint everything", alive=last.dead, timeout_s=180)
    assert last.terminate() == 0
    state = checkpoint.load(tmp_path / "monitor", config_of(s))
    print(f"checkpoint after each kill: {seen_at_kill}; at the end {state.versions['v1'].seen} of {total}")
    assert seen_at_kill == sorted(seen_at_kill), "a restart went back on the checkpoint"
    assert state.versions["v1"].seen == total
    assert state.versions["v1"].calibrated


def test_an_idle_stream_still_gets_its_last_batches_checkpointed_and_committed(
    settings_factory: Callable[..., Settings], tmp_path: Path,
) -> None:
    """The stream stops within a checkpoint interval of the last save, with nothing held in the
    merge: the idle monitor checkpoints and commits what it folded once the interval is up (it
    used to wait for a next batch that never came, so the checkpoint and the committed offsets
    stayed behind while it idled: the SIGKILL test's "stall")."""
    from consumers.monitor import config_of
    from triage.monitoring import checkpoint
    from tests.reliability.world import committed

    s = settings_factory(monitor_state_dir=tmp_path / "monitor", monitor_checkpoint_s=10.0, monitor_max_hold_s=0,
                         monitor_bucket_ms=1, drift_reference_samples=100, monitor_window=100)
    produce(s, s.topics.predictions_topic, [_prediction(i, np.random.default_rng(1)) for i in range(300)])
    monitor = MonitorConsumer(s)
    thread = threading.Thread(target=monitor.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: sum(monitor.state.covered.values()) == 300, "the monitor to fold all 300")
        wait_until(lambda: sum(checkpoint.load(tmp_path / "monitor", config_of(s)).covered.values()) == 300,
                   "the idle monitor to checkpoint all 300", timeout_s=60)
        wait_until(lambda: committed(s, s.monitor.monitor_group_id, s.topics.predictions_topic) == 300,
                   "the idle monitor to commit all 300", timeout_s=60)
    finally:
        monitor.stop_event.set()
        thread.join(60)
    assert not thread.is_alive()


def test_retrain_on_request_runs_only_when_the_monitor_asks(
    settings_factory: Callable[..., Settings], triage_process: Callable[..., Any], registry: Any,
) -> None:
    """`triage retrain --on-request` (options after the action) waits; an invalid request does not
    wake it; a valid one (what the monitor publishes) runs one retrain."""
    from triage.contracts.retrain_request import RetrainRequest

    s = settings_factory(registry=registry.root)
    proc = triage_process("retrain", s, "--registry", str(registry.root), "--on-request")
    proc.metrics()  # up, and its request reader subscribed
    wait_until(lambda: "retrain-requests" in proc.log() or proc.metric("triage_records_consumed_total",
                                                                     loop="retrain-requests") == 0,
               "the request reader to start", alive=proc.dead)
    produce(s, s.topics.retrain_requests_topic, [(b"v1", b'{"model_version":"v1","reason":"nope"}')])
    wait_until(lambda: proc.metric("triage_records_consumed_total", loop="retrain-requests") >= 1,
               "the invalid request to be read", alive=proc.dead)
    assert "outcome:" not in proc.log()
    request = RetrainRequest("v1", "drift", "confidence", 31.2, 28.8, 1_700_000_000_000)
    produce(s, s.topics.retrain_requests_topic, [(b"v1", encode(request))])
    wait_until(lambda: "outcome:" in proc.log(), "one retrain run", alive=proc.dead)
    assert proc.log().count("outcome:") == 1
    assert "requested a retrain of v1 (drift on confidence)" in proc.log()
    assert proc.terminate() == 0


def test_a_concept_shift_shows_as_audit_accuracy_below_the_estimate_band(
    settings_factory: Callable[..., Settings], digits: tuple[np.ndarray, np.ndarray], tmp_path: Path,
) -> None:
    """Concept drift: the inputs stay in distribution (so the label-free estimate stays high and no
    drift alarm fires) but the humans' labels of the audit slice now disagree with the model on a
    third of the samples. The audit consumer's interval and the monitor's accepted band, both
    computed by the shipped processes, meet TriageEstimateDisagreesWithAudit's condition. The
    monitor reads the same labels: joined to their audit copies, they pull its estimate down by
    about the third that is now wrong, while the accepted estimate the alert compares stays
    label-free."""
    from prometheus_client import CollectorRegistry

    from consumers.audit import AuditConsumer
    from triage.metrics import AuditMetrics

    X, y = digits
    reg = registry_v1(tmp_path / "registry", X[:700], y[:700])
    s = settings_factory(registry=reg.root, audit_rate=0.5, monitor_window=1_000, drift_reference_samples=500,
                         monitor_state_dir=tmp_path / "monitor")
    rng = np.random.default_rng(1)
    scorer = start_inprocess(s, reg)
    monitor = MonitorConsumer(s)
    thread = threading.Thread(target=monitor.run, daemon=True)
    thread.start()
    try:
        rows = rng.choice(np.arange(700, len(X)), 3_000)
        _send(s, X, rows, "c")
        outs = _outputs(s, "c", len(rows))
        wait_until(lambda: _folded(monitor) >= len(rows), "the monitor to fold every output in")
        audits = [d for d in decoded(read_all(s, [s.topics.review_topic], expect=1), s.topics.review_topic)
                  if d["reason"] == "audit"]
        labels = []
        for k, d in enumerate(audits):
            truth = int(y[int(d["id"].split(":")[1])])
            label = (truth + 1) % 10 if k % 3 == 0 else truth  # the concept moved under a third of them
            labels.append((d["id"].encode(), encode({"id": d["id"], "label": str(label)})))
        produce(s, s.topics.labels_topic, labels)
        audit = AuditConsumer(s, metrics=AuditMetrics(CollectorRegistry()))
        audit.run(idle_exit_s=3.0)
        wait_until(lambda: _value(monitor, "triage_estimated_accuracy_correction_labels", model_version="v1")
                   >= s.policy.audit_recent_labels, "the monitor to join the audit labels")
        wait_until(lambda: len(checkpoint.load(s.monitor.monitor_state_dir, config_of(s)).versions["v1"].residuals
                               .filled()) >= s.policy.audit_recent_labels,
                   "the labels in a checkpoint written while idle (not only at the stop)")
    finally:
        monitor.stop_event.set()
        thread.join(60)
        stop_inprocess(*scorer)

    def audit_value(name: str) -> float:
        v = audit.metrics.registry.get_sample_value(name, {"model_version": "v1"})
        assert v is not None, name
        return v

    realized_upper = audit_value("triage_accepted_accuracy_recent_upper")
    band_lower = _value(monitor, "triage_estimated_accepted_accuracy_lower", model_version="v1")
    samples = audit_value("triage_accepted_accuracy_recent_samples")
    alarms = sum(d.alarms for d in monitor.state.versions["v1"].detectors.values())
    print(f"audit: realized upper {realized_upper:.3f} on {samples:.0f} labels; monitor: accepted band lower "
          f"{band_lower:.3f}; drift alarms {alarms}; {len(outs)} outputs")
    assert alarms == 0, "the inputs did not move: no drift alarm"
    assert samples >= 100 and realized_upper < band_lower  # TriageEstimateDisagreesWithAudit's condition
    correction = _value(monitor, "triage_estimated_accuracy_correction", model_version="v1")
    estimate = _value(monitor, "triage_estimated_accuracy", model_version="v1")
    accepted = _value(monitor, "triage_estimated_accepted_accuracy", model_version="v1")
    realized = audit_value("triage_accepted_accuracy_estimate")
    print(f"monitor: correction {correction:.3f}, estimate {estimate:.3f}, accepted (label-free) {accepted:.3f}; "
          f"audit accuracy {realized:.3f}")
    assert -0.45 < correction < -0.2  # a third of the labels now disagree
    assert estimate < accepted - 0.15
    assert _value(monitor, "triage_estimated_accuracy_lower", model_version="v1") <= realized
    again = MonitorConsumer(s)  # a restart keeps the correction
    assert again.state.versions["v1"].correction() == monitor.state.versions["v1"].correction() is not None


def test_review_labels_replace_their_samples_expected_correctness_in_the_window(
    settings_factory: Callable[..., Settings], digits: tuple[np.ndarray, np.ndarray], tmp_path: Path,
) -> None:
    """The scorer sends its unsure samples to review; their labels (the truth here) come back on
    triage.labels while the samples are still in the monitor's window. The estimate then counts
    their realized correctness instead of their confidence: exactly the mean of the known
    correctness of the reviewed samples and the confidence of the others, with the band summing
    p(1-p) over the others only. A restart keeps what was joined."""
    X, y = digits
    reg = registry_v1(tmp_path / "registry", X[:700], y[:700])
    s = settings_factory(registry=reg.root, drift_reference_samples=500, monitor_window=WINDOW,
                         monitor_state_dir=tmp_path / "monitor", monitor_checkpoint_s=0.5)
    rng = np.random.default_rng(2)
    scorer = start_inprocess(s, reg)
    monitor = MonitorConsumer(s)
    thread = threading.Thread(target=monitor.run, daemon=True)
    thread.start()
    try:
        outs = _outputs(s, "r", len(_send(s, X, rng.choice(np.arange(700, len(X)), WINDOW), "r")))
        wait_until(lambda: _folded(monitor) >= WINDOW, "the monitor to fold every output in")
        reviewed = [d for d in outs if "reason" in d]
        assert 0 < len(reviewed) < WINDOW
        truth = {d["id"]: str(int(y[int(d["id"].split(":")[1])])) for d in reviewed}
        produce(s, s.topics.labels_topic, [(k.encode(), encode({"id": k, "label": v})) for k, v in truth.items()])
        wait_until(lambda: _value(monitor, "triage_estimated_accuracy_labelled", model_version="v1") == len(reviewed),
                   "the monitor to join the review labels")
    finally:
        monitor.stop_event.set()
        thread.join(60)
        stop_inprocess(*scorer)
    value = [float(d["predicted"] == truth[d["id"]]) if "reason" in d else d["confidence"] for d in outs]
    open_ = np.array([d["confidence"] for d in outs if "reason" not in d])
    est = monitor.state.versions["v1"].estimate()
    print(f"{len(reviewed)} reviewed of {len(outs)}: estimate {est.accuracy:.4f} (label-free "
          f"{np.mean([d['confidence'] for d in outs]):.4f}), realized {_accuracy(outs, y):.4f}")
    assert _value(monitor, "triage_estimated_accuracy", model_version="v1") == pytest.approx(np.mean(value))
    assert est.upper - est.lower == pytest.approx(2 * 1.959964 * np.sqrt(np.sum(open_ * (1 - open_))) / WINDOW,
                                                  rel=1e-4)
    again = MonitorConsumer(s)
    assert again.state.versions["v1"].labelled() == len(reviewed) and again.state.versions["v1"].estimate() == est
