"""Label Studio reconcile benchmark: a full reconcile (every task listed) against an incremental
one (only the tasks changed since the last reconcile), on one project, measured in one run.

A project of ``--tasks`` tasks (default 5000), ``--annotated`` of them with an annotation, is
imported into a real Label Studio (started here, or ``--url``/``--token`` of a running one).
The bridge's own ``reconcile`` runs against it in-process, with a producer that acknowledges
at once (the broker is not what is measured). Per round: ``--changes`` annotations are
changed, then one incremental and one full reconcile run; both must publish exactly the
changes. Reported: median wall time and Label Studio requests of each kind, and their ratios.

    .venv/bin/python -m bench.labelstudio_reconcile      # writes bench/results/labelstudio_reconcile.{json,md}
    .venv/bin/python -m bench.labelstudio_reconcile --tasks 500 --rounds 2 --out /tmp/ls
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Optional

from consumers.labelstudio_bridge import CURSOR_OVERLAP, Bridge
from triage.annotation.labelstudio.client import LabelStudio
from triage.errors import TransportError
from triage.records import OutRecord
from triage.settings import Settings

OUT = Path(__file__).resolve().parent / "results"
CLASSES = [str(i) for i in range(10)]
CONFIG = ('<View><Text name="summary" value="$summary"/><Choices name="label" toName="summary">'
          + "".join(f'<Choice value="{c}"/>' for c in CLASSES) + "</Choices></View>")


class AckAll:
    """A producer that acknowledges every record at once."""

    def __init__(self) -> None:
        self.sent = 0

    def send_all(self, records: list[OutRecord], timeout_s: float, stop: object = None) -> list[Optional[TransportError]]:
        self.sent += len(records)
        return [None] * len(records)

    def close(self, timeout_s: float = 10.0) -> None:
        pass


def _choice(label: str) -> list[dict[str, Any]]:
    return [{"from_name": "label", "to_name": "summary", "type": "choices", "value": {"choices": [label]}}]


def _project(client: LabelStudio, tasks: int, annotated: int) -> tuple[int, list[int]]:
    project = client.create_project(f"bench-{uuid.uuid4().hex[:8]}", CONFIG)
    every = max(tasks // max(annotated, 1), 1)
    ids: list[int] = []
    for start in range(0, tasks, 500):
        batch = [{"data": {"sample_id": f"b{i}", "summary": f"b{i}"},
                  **({"annotations": [{"result": _choice(CLASSES[i % 10])}]} if i % every == 0 else {})}
                 for i in range(start, min(start + 500, tasks))]
        ids += client.create_tasks(project, batch)
    return project, [ids[i] for i in range(0, tasks, every)][:annotated]


def _timed(bridge: Bridge, full: bool) -> tuple[float, int, int]:
    calls, sent = bridge.client.requests, bridge.producer.sent  # type: ignore[union-attr]
    started = time.perf_counter()
    bridge.reconcile(full=full)
    return (time.perf_counter() - started, bridge.client.requests - calls,
            bridge.producer.sent - sent)  # type: ignore[union-attr]


def run(url: str, token: str, tasks: int, annotated: int, changes: int, rounds: int) -> dict[str, Any]:
    client = LabelStudio(url, token, timeout_s=120)
    project, targets = _project(client, tasks, annotated)
    bridge = Bridge(Settings(), CLASSES, client)
    bridge.project_id = project
    bridge.producer = AckAll()  # type: ignore[assignment]
    time.sleep(CURSOR_OVERLAP.total_seconds() + 1.5)
    first = _timed(bridge, True)
    assert first[2] == annotated, f"the first full reconcile published {first[2]} labels, not {annotated}"
    rows: dict[str, list[tuple[float, int, int]]] = {"incremental": [], "full": []}
    for r in range(rounds):
        # reconciles are --reconcile-s (30 s) apart, more than the cursor's overlap: wait that out
        time.sleep(CURSOR_OVERLAP.total_seconds() + 1.5)
        annotations = {a["id"]: a for t in targets[r * changes:(r + 1) * changes] for a in client.task(t)["annotations"]}
        for ann_id, ann in annotations.items():
            was = ann["result"][0]["value"]["choices"][0]
            client.update_annotation(ann_id, _choice(CLASSES[(CLASSES.index(was) + 1) % 10]))
        rows["incremental"].append(_timed(bridge, False))
        rows["full"].append(_timed(bridge, True))
        assert rows["incremental"][-1][2] == len(annotations), rows  # the incremental one caught every change
        assert rows["full"][-1][2] == 0, rows  # and the full one found nothing left
    summary = {kind: {"seconds": statistics.median(x[0] for x in rs), "requests": statistics.median(x[1] for x in rs)}
               for kind, rs in rows.items()}
    return {"tasks": tasks, "annotated": annotated, "changes_per_round": changes, "rounds": rounds,
            "first_full": {"seconds": first[0], "requests": first[1]}, **summary,
            "time_ratio_full_over_incremental": summary["full"]["seconds"] / summary["incremental"]["seconds"],
            "request_ratio_full_over_incremental": summary["full"]["requests"] / summary["incremental"]["requests"],
            "raw": rows}


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=5000)
    p.add_argument("--annotated", type=int, default=500)
    p.add_argument("--changes", type=int, default=10, help="annotations changed before each pair of reconciles")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--url", help="a running Label Studio (else one is started for the run)")
    p.add_argument("--token", help="its legacy API token")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    server = None
    if args.url is None:
        from tests.labelstudio import start_label_studio

        root = Path(tempfile.mkdtemp(prefix="bench-ls-"))
        server = start_label_studio(root / "data", root / "label-studio.log")
        args.url, args.token = server.url, server.token
    try:
        result = run(args.url, args.token, args.tasks, args.annotated, args.changes, args.rounds)
    finally:
        if server is not None:
            server.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "labelstudio_reconcile.json").write_text(json.dumps(result, indent=2) + "\n")
    full, inc = result["full"], result["incremental"]
    (args.out / "labelstudio_reconcile.md").write_text(
        f"# Label Studio reconcile: full vs incremental\n\n"
        f"{result['tasks']} tasks, {result['annotated']} annotated; {result['changes_per_round']} annotations "
        f"changed before each of {result['rounds']} rounds; medians, one run (`python -m bench.labelstudio_reconcile`).\n\n"
        f"| reconcile | seconds | Label Studio requests |\n|---|---|---|\n"
        f"| full | {full['seconds']:.2f} | {full['requests']:.0f} |\n"
        f"| incremental | {inc['seconds']:.3f} | {inc['requests']:.0f} |\n"
        f"| full / incremental | {result['time_ratio_full_over_incremental']:.0f}x | "
        f"{result['request_ratio_full_over_incremental']:.0f}x |\n")
    print((args.out / "labelstudio_reconcile.md").read_text())
    return result


if __name__ == "__main__":
    main()
