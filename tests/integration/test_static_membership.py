"""Static group membership on the real embedded broker: a rolling restart of 3 scorer-group
members (processes standing in for pods, bench/rolling_restart.py) rebalances the surviving
members with dynamic membership, and never with static membership (group_instance_id = the
pod name). The dynamic run shows the harness sees rebalances when they happen."""

from __future__ import annotations

from pathlib import Path

from bench.rolling_restart import rolling_restart
from triage.runtime.broker import EmbeddedBroker


def test_a_rolling_restart_rebalances_no_survivor_with_static_membership(
        broker: EmbeddedBroker, kafka_client: str, tmp_path: Path) -> None:
    # 45 s: a restarted member is back within Tansu's join (half the session timeout, plus a 3 s
    # sync) and its own start-up, with room for a loaded machine (at 30 s a starved start-up
    # outlived the session once and the survivors rebalanced, as they should then).
    static = rolling_restart(broker.bootstrap_servers, static=True, kafka_client=kafka_client,
                             log=tmp_path / "static.jsonl", session_timeout_ms=45_000)
    assert static.per_restart == [0, 0, 0], f"survivors rebalanced: see {tmp_path / 'static.jsonl'}"
    assert static.rejoin_rebalances == 0
    dynamic = rolling_restart(broker.bootstrap_servers, static=False, kafka_client=kafka_client,
                              log=tmp_path / "dynamic.jsonl")
    assert all(n >= 1 for n in dynamic.per_restart), dynamic  # every departure moved the others' partitions
