"""The bridge's exactly-once promises under hostile conditions, against the real Label Studio
and the real broker: tasks created and deleted around running reconciles, malformed webhook
bodies of every shape, SIGKILL mid-import and mid-publish, Label Studio gone mid-reconcile.

Every test ends with the same oracle: per sample, the labels topic holds each annotation's
label exactly once, and no retraction of an annotation that still exists."""

from __future__ import annotations

import http.client
import json
import random
import threading
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional

import numpy as np
from hypothesis import HealthCheck, given, settings

from tests import contract_strategies
from tests.fixtures import produce, read_all
from tests.helpers import TriageProcess, wait_until
from tests.integration import test_labelstudio_bridge as base
from tests.integration.test_labelstudio_bridge import (
    Setup, _bridge_args, _choice, _labels, _project, _review, _tasks, reconciles,
)
from tests.profiles import examples
from tests.reliability.proxy import TcpProxy
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


class HoldImports:
    """An HTTP proxy to Label Studio that forwards every call, but holds the answer of the first
    task import after Label Studio made the tasks (``imported`` is set), until released: the
    bridge is then killed between Label Studio's commit and its own."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.imported = threading.Event()
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
                req = urllib.request.Request(outer.target + self.path, data=body, method=self.command,
                                             headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                try:
                    with urllib.request.urlopen(req, timeout=60) as r:
                        status, raw, kind = r.status, r.read(), r.headers.get("Content-Type", "")
                except urllib.error.HTTPError as e:
                    status, raw, kind = e.code, e.read(), e.headers.get("Content-Type", "")
                if "/import" in self.path and not outer.imported.is_set():
                    outer.imported.set()
                    outer.release.wait(60)
                    return  # the bridge is gone: the answer is never sent
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = do_PATCH = do_DELETE = _forward  # noqa: N815

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()


def test_sigkill_mid_import_and_mid_publish_loses_and_repeats_nothing(
        setup: Setup, label_studio: Any, bridge_process: Callable[..., TriageProcess],
        digits: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = digits
    s, title, client = setup.settings, setup.title, setup.client
    hold = HoldImports(label_studio.url)
    try:
        args = _bridge_args(label_studio, title, "--webhook-url", DEAD_WEBHOOK, "--reconcile-s", "1")
        first = bridge_process(s, *args, "--url", hold.url)
        samples = [f"k{i}" for i in range(150)]
        produce(s, s.topics.review_topic, [(sid.encode(), _review(sid, X[i], i / 150)) for i, sid in enumerate(samples)])
        assert hold.imported.wait(120), first.log()[-3000:]
        first.kill()  # Label Studio made the tasks; the bridge never heard, and committed nothing
    finally:
        hold.close()
    project = _project(client, title)
    made = len(_tasks(client, project))
    assert 0 < made <= 150
    second = bridge_process(s, *args)
    produce(s, s.topics.review_topic, [(b"k150", _review("k150", X[150], 0.5))])
    tasks = wait_until(lambda: (lambda t: t if len(t) == 151 else None)(_tasks(client, project)), "151 tasks",
                       every_s=0.5, alive=second.dead)
    assert len({t["data"]["sample_id"] for t in tasks}) == 151  # 0 duplicate tasks
    reconciles(second, 1)
    second.kill()

    # mid-publish: annotations made while the bridge is down are published by its first reconcile
    truth = {t["data"]["sample_id"]: str(i % 10) for i, t in enumerate(tasks)}
    for t in tasks:
        client.create_annotation(t["id"], _choice(truth[t["data"]["sample_id"]]))
    third = bridge_process(s, *args)
    wait_until(lambda: third.metric("triage_labelstudio_labels_published_total", source="reconcile") >= 1,
               "the first labels", every_s=0.02, alive=third.dead)
    third.kill()
    at_kill = len(read_all(s, [s.topics.labels_topic], expect=len(tasks), timeout_s=5))
    assert 0 < at_kill < len(tasks), f"killed after {at_kill} of {len(tasks)} labels: not mid-publish"
    fourth = bridge_process(s, *args)
    by_sample = _wait_labels(s, len(tasks), fourth)
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
