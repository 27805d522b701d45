"""The bridge's exactly-once promises under hostile conditions, against the real Label Studio
and the real broker: tasks created and deleted around running reconciles, malformed webhook
bodies of every shape, SIGKILL mid-import and mid-publish (on cue: failpoints), Label Studio gone
mid-reconcile or down while a request waits for its task.

Every test ends with the same oracle: per sample, the labels topic holds each annotation's
label exactly once, and no retraction of an annotation that still exists."""

from __future__ import annotations

import http.client
import json
import random
import re
import signal
import threading
import uuid
from typing import Any, Callable, Optional

import numpy as np
from hypothesis import HealthCheck, given, settings

from tests import contract_strategies
from tests.fixtures import DEADLINE_S, produce, read_all
from tests.helpers import TriageProcess, wait_until
from tests.integration import test_labelstudio_bridge as base
from tests.integration.test_labelstudio_bridge import (
    Setup, _bridge_args, _choice, _labels, _project, _review, _tasks, reconciles,
)
from tests.profiles import examples
from tests.reliability.proxy import TcpProxy
from tests.reliability.world import committed
from triage.annotation.labelstudio.client import LabelStudio
from triage.annotation.labelstudio.webhook import Webhook
from triage.lifecycle.labelstore import UNDO
from triage.runtime.broker import free_port
from triage.settings import Settings

contract_strategies.SCHEMAS.setdefault("webhook", Webhook)
setup, bridge_process = base.setup, base.bridge_process  # the fixtures of the bridge's own tests
DEAD_WEBHOOK = "http://127.0.0.1:9/webhook"  # Label Studio's POSTs go nowhere: reconciles do the work


def _import(client: LabelStudio, project: int, samples: list[str]) -> list[int]:
    return client.create_tasks(project, [{"data": {"sample_id": s, "summary": s}} for s in samples])


def _by_sample(settings: Settings, expect: int) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for label in _labels(settings, expect):
        out.setdefault(label["id"], []).append(label["label"])
    return out


def _wait_labels(settings: Settings, n: int, bridge: TriageProcess) -> dict[str, list[str]]:
    wait_until(lambda: len(_labels(settings, n)) >= n, f"{n} labels", every_s=0.5, alive=bridge.dead)
    return _by_sample(settings, n)


def _text_project(client: LabelStudio, prefix: str, tasks: int, every: int) -> tuple[str, int, list[int], dict[str, str]]:
    """A project the bridge finds by title (a text config over classes 0-9) of ``tasks`` tasks,
    every ``every``-th annotated: (title, project, task ids, sample -> label)."""
    title = f"triage-{uuid.uuid4().hex[:8]}"
    config = ('<View><Text name="summary" value="$summary"/><Choices name="label" toName="summary">'
              + "".join(f'<Choice value="{i}"/>' for i in range(10)) + "</Choices></View>")
    project = client.create_project(title, config)
    ids = _import(client, project, [f"{prefix}{i}" for i in range(tasks)])
    annotated = {f"{prefix}{i}": str(i % 10) for i in range(0, tasks, every)}
    for sample, label in annotated.items():
        client.create_annotation(ids[int(sample[len(prefix):])], _text_choice(label))
    return title, project, ids, annotated


def _text_choice(label: str) -> list[dict[str, Any]]:
    return [{"from_name": "label", "to_name": "summary", "type": "choices", "value": {"choices": [label]}}]


def test_tasks_created_and_deleted_around_running_reconciles_never_retract_a_label(
        setup: Setup, label_studio: Any, bridge_process: Callable[..., TriageProcess]) -> None:
    """Full reconciles every half second while another thread imports and deletes unannotated
    tasks (offset pages used to shift under it, so an annotated task went missing from one
    listing and its label was retracted for good)."""
    s, client = setup.settings, setup.client
    title, project, ids, annotated = _text_project(client, "t", 160, 8)
    bridge = bridge_process(s, *_bridge_args(label_studio, title, "--webhook-url", DEAD_WEBHOOK, "--reconcile-s",
                                             "0.5", "--full-reconcile-s", "0.5"))
    _wait_labels(s, len(annotated), bridge)
    stop = threading.Event()
    churn = {"imported": 0, "deleted": 0}
    rng = random.Random(7)
    late = {f"t{i}": "9" for i in range(5, 160, 31) if f"t{i}" not in annotated}  # annotated mid-churn
    # the churn deletes only tasks nobody annotates: a deleted annotated task is rightly undone
    spare = [i for i in ids if f"t{ids.index(i)}" not in annotated and f"t{ids.index(i)}" not in late]

    def churning() -> None:
        n = 0
        while not stop.is_set():
            fresh = _import(client, project, [f"c{n}-{k}" for k in range(5)])
            n += 1
            churn["imported"] += len(fresh)
            spare.extend(fresh)
            for victim in rng.sample(spare, min(5, len(spare))):
                spare.remove(victim)
                status, _ = label_studio.api("DELETE", f"/api/tasks/{victim}/")
                churn["deleted"] += status == 204

    worker = threading.Thread(target=churning, daemon=True)
    worker.start()
    try:
        reconciles(bridge, 4)
        for sample, label in late.items():
            client.create_annotation(ids[int(sample[1:])], _text_choice(label))
        reconciles(bridge, 3)
    finally:
        stop.set()
        worker.join(60)
    assert churn["deleted"] >= 20 and churn["imported"] >= 20, churn
    reconciles(bridge, 2)
    expected = {**annotated, **late}
    by_sample = _by_sample(s, len(expected))
    assert by_sample == {sample: [label] for sample, label in expected.items()}, by_sample
    assert bridge.metric("triage_labelstudio_unlisted_tasks_total", outcome="deleted") == 0


def test_malformed_webhook_bodies_never_stop_the_bridge(
        setup: Setup, label_studio: Any, bridge_process: Callable[..., TriageProcess],
        digits: tuple[np.ndarray, np.ndarray]) -> None:
    """Before: six bodies like ``task.id: "abc"`` crashed the publisher six times and the bridge
    exited; a deeply nested one raised RecursionError."""
    X, y = digits
    s, title, client = setup.settings, setup.title, setup.client
    port = free_port()
    bridge = bridge_process(s, *_bridge_args(label_studio, title, "--reconcile-s", "600"),
                            "--webhook-port", str(port), "--webhook-secret", "right")
    wait_until(lambda: "webhooks of project" in bridge.log(), "the webhook listener", alive=bridge.dead)

    def post(body: bytes) -> Optional[int]:
        """The answer's status, or None when the bridge closed the connection first."""
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("POST", "/webhook", body=body,
                         headers={"X-Triage-Webhook-Secret": "right", "Content-Type": "application/json"})
            return conn.getresponse().status
        except OSError:
            return None
        finally:
            conn.close()

    task = {"id": 1, "data": {"sample_id": "x"}}
    hand_picked = [
        json.dumps({"action": "ANNOTATION_CREATED", "task": {"id": "abc"}, "annotation": {"id": 1}}),
        json.dumps({"action": "ANNOTATION_CREATED", "task": [task], "annotation": {"id": 1}}),
        json.dumps({"action": "ANNOTATION_UPDATED", "task": task, "annotation": {"id": 1, "result": {"choices": 1}}}),
        json.dumps({"action": "ANNOTATIONS_DELETED", "annotations": [{"id": "1"}]}),
        json.dumps({"action": "ANNOTATIONS_DELETED", "annotations": 5}),
        "[" * 200_000 + "]" * 200_000,
        '{"action": "ANNOTATION_CREATED", "project": ' + '{"a": ' * 100_000 + "1" + "}" * 100_000 + "}",
        '{"action": "X", "pad": "' + "x" * 4_900_000 + '"}',  # large but under the limit: accepted, ignored
    ] * 2
    answers = [post(b.encode()) for b in hand_picked]
    assert all(a is not None and 400 <= a < 500 for a in answers[:7] + answers[8:15]), answers
    assert answers[7] == answers[15] == 200
    assert post(b'{"action": "X", "pad": "' + b"x" * 6_000_000 + b'"}') in (413, None)
    generated: list[Optional[int]] = []

    @settings(max_examples=examples(40), suppress_health_check=list(HealthCheck))
    @given(contract_strategies.cases("webhook", 8, 100_000))
    def hammer(case: contract_strategies.Case) -> None:
        generated.append(post(case.value or b""))

    hammer()
    assert all(a is not None and (a == 200 or 400 <= a < 500) for a in generated), generated
    refused = sum(bridge.metric("triage_labelstudio_webhooks_refused_total", reason=r)
                  for r in ("too_large", "not_json", "too_deep", "bad_shape"))
    assert refused >= 15 and bridge.metric("triage_labelstudio_webhooks_refused_total", reason="too_large") == 1
    assert bridge.metric("triage_loop_helper_restarts_total", thread="label-studio-publisher") == 0
    # still up: the next real annotation becomes a label through its webhook
    produce(s, s.topics.review_topic, [(b"m1", _review("m1", X[1], 0.5))])
    project = _project(client, title)
    real = wait_until(lambda: _tasks(client, project), "the task", every_s=0.5, alive=bridge.dead)[0]
    client.create_annotation(real["id"], _choice(str(y[1])))
    wait_until(lambda: "m1" in _by_sample(s, 1), "the real annotation's label", every_s=0.5, alive=bridge.dead)
    assert _by_sample(s, 1)["m1"] == [str(y[1])]
    assert bridge.metric("triage_labelstudio_labels_published_total", kind="label", source="webhook") >= 1
    assert bridge.proc.poll() is None and "Traceback" not in bridge.log()


def test_sigkill_mid_import_and_mid_publish_loses_and_repeats_nothing(
        setup: Setup, label_studio: Any, bridge_process: Callable[..., TriageProcess],
        digits: tuple[np.ndarray, np.ndarray]) -> None:
    """Killed on cue by failpoints (triage/runtime/failpoints.py), not by a timer: after Label
    Studio made the tasks but before the bridge noted them (nothing committed), and after the
    40th label reached the topic but before the bridge's ledger took it in. Restarted: 0
    duplicate tasks, 0 lost labels, 0 repeated labels."""
    X, _ = digits
    s, title, client = setup.settings, setup.title, setup.client
    group = f"bridge-{uuid.uuid4().hex[:6]}"
    args = [*_bridge_args(label_studio, title, "--webhook-url", DEAD_WEBHOOK, "--reconcile-s", "1"),
            "--bridge-group-id", group]
    first = bridge_process(s, *args, env={"TRIAGE_FAILPOINT": "bridge.after_import:kill"})
    samples = [f"k{i}" for i in range(150)]
    produce(s, s.topics.review_topic, [(sid.encode(), _review(sid, X[i], i / 150)) for i, sid in enumerate(samples)])
    assert first.proc.wait(DEADLINE_S) == -signal.SIGKILL, first.log()[-3000:]
    project = _project(client, title)
    made = len(_tasks(client, project))
    assert 0 < made <= 150 and committed(s, group, s.topics.review_topic) == 0, made
    second = bridge_process(s, *args)
    produce(s, s.topics.review_topic, [(b"k150", _review("k150", X[150], 0.5))])
    tasks = wait_until(lambda: (lambda t: t if len(t) == 151 else None)(_tasks(client, project)), "151 tasks",
                       every_s=0.5, alive=second.dead)
    assert len({t["data"]["sample_id"] for t in tasks}) == 151  # 0 duplicate tasks
    wait_until(lambda: committed(s, group, s.topics.review_topic) == 151, "every request committed",
               alive=second.dead)
    second.kill()

    # mid-publish: annotations made while the bridge is down are published by its first reconcile,
    # one task at a time; the 40th is on the topic when the bridge dies, not in its ledger
    truth = {t["data"]["sample_id"]: str(i % 10) for i, t in enumerate(tasks)}
    for t in tasks:
        client.create_annotation(t["id"], _choice(truth[t["data"]["sample_id"]]))
    third = bridge_process(s, *args, env={"TRIAGE_FAILPOINT": "bridge.after_publish:kill@40"})
    assert third.proc.wait(DEADLINE_S) == -signal.SIGKILL, third.log()[-3000:]
    assert len(read_all(s, [s.topics.labels_topic], expect=41, timeout_s=5)) == 40
    fourth = bridge_process(s, *args)
    _wait_labels(s, len(tasks), fourth)
    reconciles(fourth, 2)
    by_sample = _by_sample(s, len(tasks))
    assert by_sample == {sample: [label] for sample, label in truth.items()}  # 0 lost, 0 repeated


def test_label_studio_gone_mid_reconcile_costs_nothing(
        setup: Setup, label_studio: Any, bridge_process: Callable[..., TriageProcess]) -> None:
    """Label Studio's connections are cut while a full listing pages (and refused for a while):
    nothing is dead-lettered or retracted, and every annotation is published once after."""
    s, client = setup.settings, setup.client
    title, _, ids, truth = _text_project(client, "g", 250, 6)
    host, port = label_studio.url.removeprefix("http://").split(":")
    proxy = TcpProxy(host, int(port), free_port()).start()
    try:
        bridge = bridge_process(s, *_bridge_args(label_studio, title, "--webhook-url", DEAD_WEBHOOK, "--reconcile-s",
                                                 "0.5", "--full-reconcile-s", "0.5"), "--url", f"http://{proxy.address}")
        _wait_labels(s, len(truth), bridge)
        for _ in range(2):
            opened = proxy.connections_total
            wait_until(lambda: proxy.connections_total > opened, "a reconcile to start", every_s=0.005,
                       alive=bridge.dead)
            proxy.cut()  # mid-listing: its first page is read, the next ones are refused
            wait_until(lambda: bridge.metric("triage_labelstudio_errors_total", operation="tasks") > 0,
                       "the bridge to see Label Studio gone", alive=bridge.dead)
            more = {f"g{i}": "3" for i in range(1 + len(truth), 250, 53) if f"g{i}" not in truth}
            for sample, label in more.items():
                client.create_annotation(ids[int(sample[1:])], _text_choice(label))
            truth.update(more)
            proxy.restore()
            reconciles(bridge, 2)
        by_sample = _by_sample(s, len(truth))
        assert by_sample == {sample: [label] for sample, label in truth.items()}, by_sample
        assert not any(UNDO in labels for labels in by_sample.values())
        assert read_all(s, [s.topics.dlq_topic], expect=1, timeout_s=3) == []
        assert bridge.proc.poll() is None
    finally:
        proxy.stop()


def test_label_studio_down_blocks_the_review_loop_until_blocked_exit_s(
        setup: Setup, label_studio: Any, bridge_process: Callable[..., TriageProcess],
        digits: tuple[np.ndarray, np.ndarray]) -> None:
    """Label Studio gone while a review request waits for its task: the bridge holds the batch
    (nothing dead-lettered or committed), and past ``--blocked-exit-s 3`` (given after the
    action; the environment says 240) exits 1. Restarted with Label Studio back, the request
    becomes exactly one task."""
    X, _ = digits
    s, title, client = setup.settings, setup.title, setup.client
    host, port = label_studio.url.removeprefix("http://").split(":")
    proxy = TcpProxy(host, int(port), free_port()).start()
    group = f"bridge-{uuid.uuid4().hex[:6]}"
    args = [*_bridge_args(label_studio, title, "--webhook-url", DEAD_WEBHOOK, "--reconcile-s", "600"),
            "--bridge-group-id", group]
    try:
        bridge = bridge_process(s, *args, "--url", f"http://{proxy.address}", "--blocked-exit-s", "3")
        wait_until(lambda: "bridging" in bridge.log(), "the bridge to start", alive=bridge.dead)
        proxy.cut()
        produce(s, s.topics.review_topic, [(b"d1", _review("d1", X[1], 0.5))])
        try:
            code: Optional[int] = bridge.proc.wait(90)
        except Exception:  # noqa: BLE001 - reported below
            code = None
        log = bridge.log()
        assert code == 1, f"exit {code}; log:\n{log[-3000:]}"
        match = re.search(r"label-studio: blocked for (\d+) s \((\w+): ", log)
        assert match is not None and match.group(2) == "dependency" and int(match.group(1)) < 240, log[-3000:]
        assert read_all(s, [s.topics.dlq_topic], expect=1, timeout_s=3) == []
        assert committed(s, group, s.topics.review_topic) == 0
    finally:
        proxy.stop()
    again = bridge_process(s, *args)
    project = _project(client, title)
    tasks = wait_until(lambda: _tasks(client, project) or None, "the task", every_s=0.5, alive=again.dead)
    wait_until(lambda: committed(s, group, s.topics.review_topic) == 1, "the request committed", alive=again.dead)
    assert [t["data"]["sample_id"] for t in _tasks(client, project)] == ["d1"], tasks


def _post_webhook(port: int, secret: str, body: dict[str, Any]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/webhook", body=json.dumps(body).encode(),
                     headers={"X-Triage-Webhook-Secret": secret, "Content-Type": "application/json"})
        return conn.getresponse().status
    finally:
        conn.close()


def test_a_deleted_task_is_retracted_at_once_through_its_webhook_and_a_missed_one_never(
        setup: Setup, label_studio: Any, bridge_process: Callable[..., TriageProcess]) -> None:
    """Label Studio's TASKS_DELETED webhook (an annotated task deleted) retracts its label long
    before --full-reconcile-s (600 s; every reconcile here is 600 s apart): only after a direct
    fetch says 404. The same webhook naming a task that exists (a forged or stale one) retracts
    nothing."""
    s, client = setup.settings, setup.client
    title, _, ids, truth = _text_project(client, "x", 6, 2)  # x0, x2, x4 annotated
    port = free_port()
    bridge = bridge_process(s, *_bridge_args(label_studio, title, "--reconcile-s", "600", "--full-reconcile-s", "600"),
                            "--webhook-port", str(port), "--webhook-secret", "right")
    _wait_labels(s, len(truth), bridge)  # the first reconcile (full) publishes them
    status, _ = label_studio.api("DELETE", f"/api/tasks/{ids[0]}/")
    assert status == 204
    by_sample = wait_until(lambda: (lambda b: b if UNDO in b.get("x0", []) else None)(_by_sample(s, 4)),
                           "the deleted task's undo", every_s=0.5, alive=bridge.dead)
    assert _post_webhook(port, "right", {"action": "TASKS_DELETED", "tasks": [{"id": ids[2]}]}) == 200
    wait_until(lambda: bridge.metric("triage_labelstudio_unlisted_tasks_total", outcome="present") == 1,
               "the bridge to fetch the task the forged webhook named", alive=bridge.dead)
    by_sample = _by_sample(s, 4)
    assert by_sample == {"x0": [truth["x0"], UNDO], "x2": [truth["x2"]], "x4": [truth["x4"]]}, by_sample
    assert bridge.metric("triage_labelstudio_unlisted_tasks_total", outcome="deleted") == 1
    assert bridge.metric("triage_labelstudio_labels_published_total", source="webhook", kind="undo") == 1
    assert bridge.metric("triage_labelstudio_reconcile_requests_total", kind="full") > 0  # only the first one
    assert "a full reconcile now" not in bridge.log()


def test_a_deleted_task_whose_webhook_is_lost_is_retracted_by_an_early_full_sweep(
        setup: Setup, label_studio: Any, bridge_process: Callable[..., TriageProcess]) -> None:
    """Webhooks go nowhere; incremental reconciles every second never list a deleted task, but
    the project's task count falls, so a full sweep runs at once, not at --full-reconcile-s."""
    s, client = setup.settings, setup.client
    title, _, ids, truth = _text_project(client, "y", 6, 2)
    bridge = bridge_process(s, *_bridge_args(label_studio, title, "--webhook-url", DEAD_WEBHOOK, "--reconcile-s", "1",
                                             "--full-reconcile-s", "600"))
    _wait_labels(s, len(truth), bridge)
    reconciles(bridge, 2)  # incremental ones: the task count is known
    status, _ = label_studio.api("DELETE", f"/api/tasks/{ids[2]}/")
    assert status == 204
    wait_until(lambda: UNDO in _by_sample(s, 4).get("y2", []), "the deleted task's undo", every_s=0.5,
               alive=bridge.dead)
    reconciles(bridge, 2)
    by_sample = _by_sample(s, 4)
    assert by_sample == {"y0": [truth["y0"]], "y2": [truth["y2"], UNDO], "y4": [truth["y4"]]}, by_sample
    assert "a full reconcile now" in bridge.log()
