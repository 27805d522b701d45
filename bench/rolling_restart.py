"""Rebalances during a rolling restart: dynamic vs static group membership.

    .venv/bin/python bench/rolling_restart.py            # both modes -> bench/results/rolling_restart.json
    .venv/bin/python bench/rolling_restart.py --mode static --kafka-client kafka-python

Starts an embedded broker (Tansu) and N member processes standing in for scorer pods. Each
member is triage's own group consumer (``triage.transport.make_consumer`` with the scorers'
group and settings) and records every assignment and revocation. Then it restarts them one at
a time like a Deployment's rolling update: SIGTERM, wait for the exit, start a replacement with
the same name (the pod name, so the same ``group_instance_id`` when static), wait until the
group covers every partition again.

A *survivor rebalance* is a revocation seen by a member that was not the one restarting at that
moment (a member's revocation in its own shutdown does not count). Assert-free: it prints the
counts; tests/deploy/test_static_membership.py checks them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from triage.runtime.broker import EmbeddedBroker  # noqa: E402
from triage.settings import Settings  # noqa: E402
from triage.transport import ensure_topics, make_consumer  # noqa: E402

SETTLE_S = 180.0
"""Longest wait for the group to cover every partition again (Tansu's dynamic rebalances
take about 15 s each here); a bound against a stall, not a measurement."""


@dataclass
class Result:
    mode: str
    kafka_client: str
    members: int
    partitions: int
    session_timeout_ms: int
    survivor_rebalances: int
    rejoin_rebalances: int
    per_restart: list[int] = field(default_factory=list)
    restart_s: list[float] = field(default_factory=list)  # SIGTERM -> every partition owned again
    wall_s: float = 0.0
    cpu_s: float = 0.0


def _settings(bootstrap: str, topic: str, group: str, client: str, session_ms: int,
              instance: Optional[str]) -> Settings:
    return Settings(bootstrap_servers=bootstrap, kafka_client=client, group_id=group, samples_topic=topic,
                    session_timeout_ms=session_ms, group_instance_id=instance, create_topics=False)


def member(args: argparse.Namespace) -> None:
    """One member: subscribe, poll, write each assignment change and revocation as a JSON line."""
    events = open(args.events, "a", buffering=1)

    def emit(kind: str, partitions: Optional[list[int]] = None) -> None:
        events.write(json.dumps({"t": time.time(), "name": args.name, "pid": os.getpid(),
                                 "kind": kind, "partitions": partitions}) + "\n")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    s = _settings(args.bootstrap, args.topic, args.group, args.kafka_client, args.session_timeout_ms,
                  args.name if args.static else None)
    consumer = make_consumer(s, [args.topic], group_id=s.connection.group_id, on_revoke=lambda: emit("revoked"))
    emit("started")
    last: Optional[list[int]] = None
    while not stop.is_set():
        consumer.poll_batch(100, 200)
        now = [p for _, p in consumer.assigned()]
        if now != last:
            emit("assigned", now)
            last = now
    emit("closing")
    consumer.close()


class Group:
    """The member processes and their event log."""

    def __init__(self, bootstrap: str, topic: str, client: str, static: bool, session_ms: int, log: Path) -> None:
        self.bootstrap, self.topic, self.client, self.static, self.session_ms = bootstrap, topic, client, static, session_ms
        self.group = f"rolling-{uuid.uuid4().hex[:8]}"
        self.log = log
        log.write_text("")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.cpu_at_start = _child_cpu()

    def start(self, name: str) -> None:
        cmd = [sys.executable, __file__, "member", "--name", name, "--bootstrap", self.bootstrap,
               "--topic", self.topic, "--group", self.group, "--kafka-client", self.client,
               "--session-timeout-ms", str(self.session_ms), "--events", str(self.log)]
        self.procs[name] = subprocess.Popen(cmd + (["--static"] if self.static else []), cwd=REPO)

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    @property
    def cpu_s(self) -> float:
        """CPU seconds of the members that have exited so far."""
        return _child_cpu() - self.cpu_at_start

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def settled(self, partitions: int) -> bool:
        """Every running member holds partitions, and together they hold each partition once."""
        latest: dict[int, list[int]] = {}
        for e in self.events():
            if e["kind"] == "assigned":
                latest[e["pid"]] = e["partitions"]
            elif e["kind"] == "revoked":
                latest[e["pid"]] = []
        held = [latest.get(p.pid, []) for p in self.procs.values()]
        flat = sorted(x for h in held for x in h)
        return all(held) and flat == list(range(partitions))

    def wait_settled(self, partitions: int) -> None:
        deadline = time.monotonic() + SETTLE_S
        while not self.settled(partitions):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the group did not cover its {partitions} partitions within {SETTLE_S:.0f}s: "
                                   f"see {self.log}")
            time.sleep(0.2)

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def _child_cpu() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


def count(events: list[dict[str, Any]], restarts: list[tuple[float, float, str]]) -> tuple[list[int], int]:
    """Per restart window (start, end, restarted name): revocations of the other members; and
    the revocations the restarted member's replacement saw while rejoining."""
    closing = {e["pid"]: e["t"] for e in events if e["kind"] == "closing"}
    per: list[int] = []
    rejoin = 0
    for start, end, name in restarts:
        window = [e for e in events if e["kind"] == "revoked" and start <= e["t"] < end
                  and e["t"] < closing.get(e["pid"], float("inf"))]
        per.append(sum(1 for e in window if e["name"] != name))
        rejoin += sum(1 for e in window if e["name"] == name)
    return per, rejoin


def rolling_restart(bootstrap: str, *, static: bool, kafka_client: str = "confluent", members: int = 3,
                    partitions: int = 6, session_timeout_ms: int = 30_000, settle_s: float = 3.0,
                    log: Path) -> Result:
    """Start ``members`` members, let them settle, restart each in turn; count survivor rebalances.
    ``settle_s`` after each restart lets a late rebalance show up in that restart's window."""
    topic = f"rolling-{uuid.uuid4().hex[:8]}"
    ensure_topics(Settings(bootstrap_servers=bootstrap, kafka_client=kafka_client, topic_partitions=partitions,
                           samples_topic=topic), [topic])
    g = Group(bootstrap, topic, kafka_client, static, session_timeout_ms, log)
    began = time.monotonic()
    names = [f"triage-scorer-{i}" for i in range(members)]
    restarts: list[tuple[float, float, str]] = []
    restart_s: list[float] = []
    try:
        for name in names:
            g.start(name)
        g.wait_settled(partitions)
        time.sleep(settle_s)
        for name in names:
            start = time.time()
            g.stop(name)
            g.start(name)
            g.wait_settled(partitions)
            restart_s.append(round(time.time() - start, 1))
            time.sleep(settle_s)
            restarts.append((start, time.time(), name))
    finally:
        g.close()
    per, rejoin = count(g.events(), restarts)
    return Result("static" if static else "dynamic", kafka_client, members, partitions, session_timeout_ms,
                  sum(per), rejoin, per, restart_s, round(time.monotonic() - began, 1), round(g.cpu_s, 2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command")
    m = sub.add_parser("member")
    for flag in ("--name", "--bootstrap", "--topic", "--group", "--kafka-client", "--events"):
        m.add_argument(flag, required=True)
    m.add_argument("--session-timeout-ms", type=int, required=True)
    m.add_argument("--static", action="store_true")
    ap.add_argument("--mode", choices=["dynamic", "static", "both"], default="both")
    ap.add_argument("--kafka-client", default="confluent", choices=["confluent", "kafka-python"])
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--session-timeout-ms", type=int, default=30_000)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "rolling_restart.json")
    ap.add_argument("--logs", type=Path, help="directory for the members' event logs and the broker log (default: a temp dir)")
    args = ap.parse_args()
    if args.command == "member":
        member(args)
        return
    modes = ["dynamic", "static"] if args.mode == "both" else [args.mode]
    results = []
    logs = args.logs or Path(tempfile.mkdtemp(prefix="rolling-restart-"))
    logs.mkdir(parents=True, exist_ok=True)
    print(f"event logs in {logs}")
    with EmbeddedBroker(log_file=logs / "tansu.log") as broker:
        for mode in modes:
            r = rolling_restart(broker.bootstrap_servers, static=mode == "static", kafka_client=args.kafka_client,
                                members=args.members, partitions=args.partitions,
                                session_timeout_ms=args.session_timeout_ms, log=logs / f"{mode}.jsonl")
            print(f"{r.mode:8s} {r.kafka_client}: {r.survivor_rebalances} survivor rebalances over {r.members} "
                  f"restarts {r.per_restart}, {r.rejoin_rebalances} while rejoining; every partition owned again "
                  f"{r.restart_s} s after each SIGTERM; wall {r.wall_s} s, "
                  f"members' CPU {r.cpu_s} s")
            results.append(asdict(r))
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
