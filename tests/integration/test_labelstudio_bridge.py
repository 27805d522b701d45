"""The Label Studio bridge against a real Label Studio (started by the suite) and the real broker.

Scorer -> review topic -> bridge -> tasks with the model's guess; annotations made through
Label Studio's REST API -> labels -> `triage retrain --once` promotes -> the scorer swaps.
Plus: a SIGKILLed bridge restarted (no duplicate task, no lost or repeated label), a webhook
that never arrives (reconcile catches it), an annotation updated and then deleted (undo).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest

from tests.fixtures import produce, read_all, read_headers, registry_v1
from tests.helpers import REPO, TriageProcess, settings_env, wait_until
from triage.runtime.broker import free_port
from triage.lifecycle.labelstore import UNDO
from triage.annotation.labelstudio.client import LabelStudio
from triage.contracts import LabelOrigin, encode_label
from triage.settings import Settings


@pytest.fixture
def bridge_process(triage_process: Callable[..., TriageProcess]) -> Callable[..., TriageProcess]:
    return lambda settings, *extra, env=None: triage_process("label-studio", settings, *extra, env=env)


@dataclass
class Setup:
    settings: Settings
    title: str
    client: LabelStudio


@pytest.fixture
def setup(settings_factory: Callable[..., Settings], label_studio: Any) -> Setup:
    """Settings with the Label Studio key, a fresh project title, and a client."""
    return Setup(settings_factory(label_studio_api_key=label_studio.token), f"triage-{uuid.uuid4().hex[:8]}",
                 LabelStudio(label_studio.url, label_studio.token))


def reconciles(bridge: TriageProcess, n: int) -> None:
    """Wait until ``bridge`` completed ``n`` more reconciles: its reconcile-lag gauge, set at every
    poll to the time since the last completed reconcile, drops ``n`` times."""
    lags: list[float] = []

    def dropped() -> bool:
        lags.append(bridge.metric("triage_labelstudio_reconcile_lag_seconds"))
        return sum(b < a for a, b in zip(lags, lags[1:])) >= n

    wait_until(dropped, f"{n} more reconciles", every_s=0.1, alive=bridge.dead)


def _review(sample_id: str, X: np.ndarray, priority: float, predicted: str = "3") -> bytes:
    return json.dumps({
        "id": sample_id, "features": [float(v) for v in X], "reason": "uncertain", "predicted": predicted,
        "confidence": 0.55, "scores": {"margin": 0.1, "entropy": 0.6, "outlier": 0.4}, "priority": priority,
        "model_version": "v1", "meta": None, "top": [{"label": predicted, "p": 0.55}, {"label": "5", "p": 0.3}],
    }).encode()


def _choice(label: str) -> list[dict[str, Any]]:
    return [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]


def _labels(settings: Settings, expect: int) -> list[dict[str, Any]]:
    records = read_headers(settings, settings.topics.labels_topic, expect)
    return [dict(json.loads(r["value"]), headers=r["headers"]) for r in records]


def _tasks(client: LabelStudio, project: int) -> list[dict[str, Any]]:
    return list(client.tasks(project))


def _project(client: LabelStudio, title: str) -> int:
    return wait_until(lambda: client.find_project(title), f"project {title}", every_s=0.5)


def _bridge_args(label_studio: Any, title: str, *extra: str) -> list[str]:
    return ["--url", label_studio.url, "--project-title", title, "--classes", ",".join(str(i) for i in range(10)),
            "--feature-count", "64", "--webhook-port", "0", "--reconcile-s", "2",
            "--bridge-group-id", f"bridge-{uuid.uuid4().hex[:6]}", *extra]


def test_reviews_become_tasks_and_annotations_become_labels_exactly_once(
        setup: Setup, label_studio: Any, bridge_process: Callable[..., TriageProcess],
        digits: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = digits
    s, title, client = setup.settings, setup.title, setup.client
    first = bridge_process(s, *_bridge_args(label_studio, title))
    ids = [f"s{i}" for i in range(12)]
    produce(s, s.topics.review_topic, [(sid.encode(), _review(sid, X[i], priority=i / 12)) for i, sid in enumerate(ids)]
            + [(b"bad", b"{not json")])
    project = _project(client, title)
    tasks = wait_until(lambda: (lambda t: t if len(t) == 12 else None)(_tasks(client, project)), "12 tasks",
                       every_s=0.5, alive=first.dead)
    data = {t["data"]["sample_id"]: t for t in tasks}
    assert sorted(data) == sorted(ids)
    one = data["s3"]
    assert one["data"]["image"].startswith("data:image/png;base64,") and one["data"]["model_version"] == "v1"
    assert one["data"]["priority"] == pytest.approx(3 / 12)
    # the model's guess is a pre-annotation
    pred = one["predictions"][0]
    assert pred["model_version"] == "v1" and pred["result"][0]["value"]["choices"] == ["3"]

    # A label through the REST API; the webhook delivers it.
    a3 = client.create_annotation(one["id"], _choice(str(y[3])))
    labels = _labels(s, 1)
    assert [(l["id"], l["label"]) for l in labels] == [("s3", str(y[3]))]
    assert labels[0]["annotator"] and labels[0]["origin"]["tool"] == "label-studio"

    # Updated, then deleted: the new label, then an undo.
    client.update_annotation(a3, _choice("8"))
    wait_until(lambda: len(_labels(s, 2)) >= 2, "update", every_s=0.5, alive=first.dead)
    client.delete_annotation(a3)
    labels = wait_until(lambda: (lambda l: l if len(l) >= 3 else None)(_labels(s, 3)), "undo", every_s=0.5,
                        alive=first.dead)
    assert [l["label"] for l in labels] == [str(y[3]), "8", UNDO]
    # A skipped task is not a label.
    client.create_annotation(data["s4"]["id"], [], was_cancelled=True)

    # SIGKILL the bridge; annotate while it is down (its webhook is lost); more reviews arrive,
    # some of them redeliveries of requests that already have tasks.
    first.kill()
    for sid in ("s5", "s6"):
        i = int(sid[1:])
        client.create_annotation(data[sid]["id"], _choice(str(y[i])))
    produce(s, s.topics.review_topic, [(b"s7", _review("s7", X[7], 0.5)), (b"s20", _review("s20", X[20], 0.9))])
    second = bridge_process(s, *_bridge_args(label_studio, title))
    tasks = wait_until(lambda: (lambda t: t if len(t) == 13 else None)(_tasks(client, project)), "13 tasks",
                       every_s=0.5, alive=second.dead)
    assert len({t["data"]["sample_id"] for t in tasks}) == 13  # no duplicate task
    wait_until(lambda: len(_labels(s, 5)) >= 5, "labels made while the bridge was down", every_s=0.5,
               alive=second.dead)
    reconciles(second, 2)  # two more reconciles: nothing may be published again
    labels = _labels(s, 5)
    by_sample: dict[str, list[str]] = {}
    for label in labels:  # one key = one partition: per-sample order is the publication order
        by_sample.setdefault(label["id"], []).append(label["label"])
    assert by_sample == {"s3": [str(y[3]), "8", UNDO], "s5": [str(y[5])], "s6": [str(y[6])]}, by_sample
    assert second.metric("triage_labelstudio_labels_published_total", kind="label", source="reconcile") >= 2
    assert second.metric("triage_labelstudio_tasks_existing_total") >= 1
    assert first.log().count("Traceback") == 0 and second.log().count("Traceback") == 0


def test_a_deleted_answer_an_earlier_bridge_left_standing_is_withdrawn_at_start_up(
        setup: Setup, label_studio: Any, bridge_process: Callable[..., TriageProcess]) -> None:
    """The bridge before per-annotator retractions reported alice's deleted annotation by
    republishing bob's label: her answer still voted in training. Its successor withdraws it."""
    s = setup.settings
    old = [("7", "alice@x", 10, None), ("1", "bob@x", 11, None), ("1", "bob@x", 11, 10)]
    produce(s, s.topics.labels_topic, [(b"s", encode_label("s", label, annotator=who, origin=LabelOrigin(
        "label-studio", ann, 1, deleted))) for label, who, ann, deleted in old])
    bridge = bridge_process(s, *_bridge_args(label_studio, setup.title))
    labels = wait_until(lambda: (lambda ls: ls if len(ls) >= 4 else None)(_labels(s, 4)), "the repair",
                        every_s=0.5, alive=bridge.dead)
    assert (labels[3]["label"], labels[3]["annotator"], labels[3]["origin"]["deleted"]) == (UNDO, "alice@x", 10)
    assert bridge.metric("triage_labelstudio_labels_published_total", source="repair", kind="undo") == 1
    assert "1 deleted annotations still voted" in bridge.log()


def test_a_webhook_that_never_arrives_is_caught_by_reconcile(
        setup: Setup, label_studio: Any, bridge_process: Callable[..., TriageProcess],
        digits: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = digits
    s, title, client = setup.settings, setup.title, setup.client
    dead = f"http://127.0.0.1:{free_port()}/webhook"  # Label Studio's POSTs go nowhere
    bridge = bridge_process(s, *_bridge_args(label_studio, title, "--webhook-url", dead))
    produce(s, s.topics.review_topic, [(b"w1", _review("w1", X[1], 0.5))])
    project = _project(client, title)
    task = wait_until(lambda: _tasks(client, project), "a task", every_s=0.5, alive=bridge.dead)[0]
    client.create_annotation(task["id"], _choice(str(y[1])))
    labels = _labels(s, 1)
    assert [(l["id"], l["label"]) for l in labels] == [("w1", str(y[1]))]
    assert bridge.metric("triage_labelstudio_labels_published_total", kind="label", source="reconcile") == 1
    assert bridge.metric("triage_labelstudio_labels_published_total", kind="label", source="webhook") == 0


def test_webhooks_need_the_shared_secret(
        settings_factory: Callable[..., Settings], label_studio: Any, bridge_process: Callable[..., TriageProcess]) -> None:
    import urllib.error
    import urllib.request

    s = settings_factory(label_studio_api_key=label_studio.token)
    port = free_port()
    bridge = bridge_process(s, *_bridge_args(label_studio, f"triage-{uuid.uuid4().hex[:8]}"),
                            "--webhook-port", str(port), "--webhook-secret", "right")
    wait_until(lambda: "webhooks of project" in bridge.log(), "the bridge's webhook listener", alive=bridge.dead)

    def post(body: bytes, secret: str) -> int:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/webhook", data=body, method="POST",
                                     headers={"X-Triage-Webhook-Secret": secret, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert post(b'{"action": "ANNOTATION_CREATED"}', "wrong") == 401
    assert post(b"{not json", "right") == 400
    # well-formed, but about a task that is not one of the bridge's (no sample id)
    assert post(b'{"action": "ANNOTATION_CREATED", "task": {"id": 999999, "data": {}}, '
                b'"annotation": {"id": 1, "result": [{"type": "choices", "value": {"choices": ["3"]}}]}}', "right") == 200
    assert post(b'{"action": "ANNOTATION_CREATED", "annotation": {"id": 2}}', "right") == 400  # no task
    assert bridge.metric("triage_labelstudio_invalid_total", reason="unauthorized_webhook") == 1
    wait_until(lambda: bridge.metric("triage_labelstudio_invalid_total", reason="no_sample_id") == 1,
               "the queued webhooks to be judged", alive=bridge.dead)
    assert bridge.metric("triage_labelstudio_invalid_total", reason="bad_webhook") == 2  # not JSON, no task
    assert bridge.metric("triage_labelstudio_webhooks_refused_total", reason="not_json") == 1
    assert bridge.metric("triage_labelstudio_webhooks_refused_total", reason="bad_shape") == 1
    assert bridge.proc.poll() is None  # still running


def test_scorer_reviews_labelled_in_label_studio_retrain_and_swap_the_scorer(
        settings_factory: Callable[..., Settings], label_studio: Any, bridge_process: Callable[..., TriageProcess],
        scorer_process: Callable[..., Any], digits: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    """The whole loop with humans in Label Studio: scorer -> review -> tasks with the model's
    guess -> annotations through the REST API -> labels -> retrain promotes -> the scorer swaps."""
    X, y = digits
    s = settings_factory(label_studio_api_key=label_studio.token, retrain_group_id=f"r-{uuid.uuid4().hex[:6]}")
    reg = registry_v1(tmp_path / "registry", X[:60], y[:60])
    scorer = scorer_process(s, "--registry", str(reg.root), "--uncertainty-threshold", "0.2")
    pool = range(300, 460)
    produce(s, s.topics.samples_topic, [(f"d{i}".encode(), json.dumps({"id": f"d{i}", "features": X[i].tolist()}).encode())
                                         for i in pool])
    title = f"triage-{uuid.uuid4().hex[:8]}"
    bridge = bridge_process(s, "--url", label_studio.url, "--project-title", title, "--registry", str(reg.root),
                            "--webhook-port", "0", "--reconcile-s", "2", "--bridge-group-id", f"b-{uuid.uuid4().hex[:6]}")
    client = LabelStudio(label_studio.url, label_studio.token)
    project = _project(client, title)

    # the scorer has routed every sample; then one task per review request
    wait_until(lambda: scorer.metric("triage_samples_total") >= len(pool), "the scorer to route the pool",
               alive=scorer.dead)
    review = {r["key"] for r in read_all(s, [s.topics.review_topic], expect=int(scorer.metric(
        "triage_samples_total", route="review")))}
    assert len(review) >= 30, f"only {len(review)} review requests: too few labels to retrain on"
    tasks = wait_until(lambda: (lambda t: t if len(t) == len(review) else None)(_tasks(client, project)),
                       f"{len(review)} tasks", every_s=0.5, alive=bridge.dead)
    for task in tasks:  # every task carries the model's guess from v1
        assert task["predictions"][0]["model_version"] == "v1"
        truth = str(y[int(task["data"]["sample_id"][1:])])
        client.create_annotation(task["id"], _choice(truth))
    labels = _labels(s, len(tasks))
    assert len(labels) == len(tasks) and {l["id"] for l in labels} == {t["data"]["sample_id"] for t in tasks}

    env = {**os.environ, **settings_env(s), "TRIAGE_METRICS_PORT": "0"}
    done = subprocess.run([sys.executable, "-m", "triage", "retrain", "--registry", str(reg.root), "--once"], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert reg.current() == "v2", done.stderr[-3000:]
    assert reg.manifest("v2")["data"]["labels_trained"] > 0
    wait_until(lambda: "swapped model v1 -> v2" in scorer.log(), "the scorer's swap to v2", alive=scorer.dead)
