"""Review requests that ask for several annotators, through the bridge and a real Label Studio:
the task's overlap, two people each served it once, two labels; a relabel raises the overlap."""

from __future__ import annotations

import json
import uuid
from typing import Any, Callable

import numpy as np

from tests.fixtures import produce, read_all
from tests.helpers import TriageProcess, wait_until
from tests.integration import test_labelstudio_bridge as base
from tests.integration.test_labelstudio_bridge import Setup, _bridge_args, _choice, _project, _tasks
from triage.contracts import ReviewRequest, ScoreFields, TopClass, encode
from triage.contracts.label import UNDO, answer
from triage.settings import Settings

setup, bridge_process = base.setup, base.bridge_process  # the fixtures of the bridge's own tests


def _request(rid: str, x: np.ndarray, priority: float, annotators: int, labelled_by: tuple[str, ...] = (),
             reason: str = "uncertain") -> tuple[bytes, bytes]:
    return rid.encode(), encode(ReviewRequest(
        rid, [float(v) for v in x], reason, "3", 0.5, ScoreFields(0.1, 0.6, None), priority, "v1", None,
        [TopClass("3", 0.5)], annotators, list(labelled_by)))


def _user(label_studio: Any) -> tuple[str, str]:
    """A new Label Studio user of the admin's organization: (e-mail, legacy API token). Signs up
    through the organization's invite link (the API gives a token only to its own user, and
    ``POST /api/users/`` sets no password), then reads the token in that session."""
    import http.cookiejar
    import re
    import urllib.parse
    import urllib.request

    status, invite = label_studio.api("GET", "/api/invite")
    assert status == 200 and invite.get("token"), (status, invite)
    email, password = f"u{uuid.uuid4().hex[:8]}@example.com", uuid.uuid4().hex
    signup = f"{label_studio.url}/user/signup/?token={urllib.parse.quote(invite['token'])}"
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    page = browser.open(signup, timeout=30).read().decode()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert csrf, "no CSRF token on the sign-up page"
    form = urllib.parse.urlencode({"csrfmiddlewaretoken": csrf.group(1), "email": email, "password": password})
    browser.open(urllib.request.Request(signup, data=form.encode(), headers={"Referer": signup}), timeout=30).read()
    token = json.loads(browser.open(label_studio.url + "/api/current-user/token", timeout=30).read())
    assert token.get("token"), token
    return email, str(token["token"])


def _next(label_studio: Any, project: int, token: str) -> Any:
    status, task = label_studio.api("GET", f"/api/projects/{project}/next/", token=token)
    return task if status == 200 else None


def _labels(settings: Settings, expect: int) -> list[dict[str, Any]]:
    return [json.loads(r["value"]) for r in read_all(settings, [settings.topics.labels_topic], expect=expect)]


def open_tasks(bridge: TriageProcess, expect: int) -> None:
    """The open-tasks gauge once a reconcile that started after now has set it: the reconcile
    counter moves at the end of each one, just before the gauge, so three moves pass one whole
    reconcile that began after the call."""
    calls = "triage_labelstudio_reconcile_requests_total"
    for _ in range(3):
        before = bridge.metric(calls)
        wait_until(lambda: bridge.metric(calls) > before, "a reconcile", every_s=0.2, alive=bridge.dead)
    assert bridge.metric("triage_labelstudio_open_tasks") == expect


def test_a_request_for_two_annotators_gets_two_labels_from_two_people_and_a_relabel_raises_the_overlap(
        setup: Setup, label_studio: Any, bridge_process: Callable[..., TriageProcess],
        digits: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = digits
    s, title, client = setup.settings, setup.title, setup.client
    bridge = bridge_process(s, *_bridge_args(label_studio, title))
    produce(s, s.topics.review_topic, [_request("pair", X[0], 0.9, 2), _request("pair", X[0], 0.9, 2)])  # redelivered
    project = _project(client, title)
    # pair's task first, then solo's: Label Studio serves tasks in the order they were created, and
    # two keys on two partitions may reach the bridge in either order (CI once saw solo first)
    wait_until(lambda: [t["data"]["sample_id"] for t in _tasks(client, project)] == ["pair"], "pair's task",
               every_s=0.5, alive=bridge.dead)
    produce(s, s.topics.review_topic, [_request("solo", X[1], 0.5, 1)])

    def overlaps() -> Any:
        tasks = {t["data"]["sample_id"]: t for t in _tasks(client, project)}
        return tasks if len(tasks) == 2 and tasks["pair"]["overlap"] == 2 else None

    tasks = wait_until(overlaps, "two tasks, pair with overlap 2", every_s=0.5, alive=bridge.dead)
    assert tasks["solo"]["overlap"] == 1 and len(_tasks(client, project)) == 2
    pair = tasks["pair"]["id"]

    (ann, ann_token), (bob, bob_token) = _user(label_studio), _user(label_studio)
    first = _next(label_studio, project, ann_token)
    assert first is not None and first["id"] == pair  # the order of creation
    status, _ = label_studio.api("POST", f"/api/tasks/{pair}/annotations/", {"result": _choice("3")}, token=ann_token)
    assert status == 201
    assert not client.task(pair)["is_labeled"], "one of two annotations: still open"
    # the bridge counts it open too: pair has 1 of its 2 annotations, solo none (the gauge counted
    # every task with one annotation as done)
    wait_until(lambda: bridge.metric("triage_labelstudio_labels_published_total") >= 1, "the first label",
               every_s=0.5, alive=bridge.dead)
    open_tasks(bridge, 2)
    # the stream never serves the first annotator the task again; it serves the second one
    after = _next(label_studio, project, ann_token)
    assert after is None or after["id"] != pair
    assert _next(label_studio, project, bob_token)["id"] == pair
    status, bobs = label_studio.api("POST", f"/api/tasks/{pair}/annotations/", {"result": _choice("8")},
                                    token=bob_token)
    assert status == 201
    assert client.task(pair)["is_labeled"]
    labels = wait_until(lambda: (lambda ls: ls if len(ls) >= 2 else None)(_labels(s, 2)), "two labels",
                        every_s=0.5, alive=bridge.dead)
    assert {(l["id"], l["annotator"], l["label"]) for l in labels} == {("pair", ann, "3"), ("pair", bob, "8")}
    assert len(labels) == 2
    open_tasks(bridge, 1)  # pair is done, solo is not

    # the retrain job asks for one more opinion: the existing task's overlap goes to 3, no new task
    produce(s, s.topics.review_topic, [_request("pair", X[0], 0.95, 3, (ann, bob), reason="tiebreak")])
    wait_until(lambda: client.task(pair)["overlap"] == 3, "overlap raised to 3", every_s=0.5, alive=bridge.dead)
    task = client.task(pair)
    assert not task["is_labeled"] and len(_tasks(client, project)) == 2
    open_tasks(bridge, 2)  # pair wants a third person now
    (carol, carol_token) = _user(label_studio)
    assert _next(label_studio, project, carol_token)["id"] == pair
    assert all(t is None or t["id"] != pair for t in (_next(label_studio, project, ann_token),
                                                       _next(label_studio, project, bob_token)))
    # redelivered, after carol's label: the overlap stays 3 (existing people + what was missing)
    label_studio.api("POST", f"/api/tasks/{pair}/annotations/", {"result": _choice("3")}, token=carol_token)
    produce(s, s.topics.review_topic, [_request("pair", X[0], 0.95, 3, (ann, bob), reason="tiebreak")])
    labels = wait_until(lambda: (lambda ls: ls if len(ls) >= 3 else None)(_labels(s, 3)), "three labels",
                        every_s=0.5, alive=bridge.dead)
    assert {l["annotator"] for l in labels} == {ann, bob, carol}
    wait_until(lambda: bridge.metric("triage_labelstudio_tasks_existing_total") >= 3, "the redelivery read",
               every_s=0.5, alive=bridge.dead)
    task = client.task(pair)
    assert task["overlap"] == 3 and task["is_labeled"]
    assert bridge.metric("triage_labelstudio_overlap_raised_total") == 2

    # bob deletes his annotation: his answer is withdrawn, and only his (the bridge republished
    # carol's label, and training still counted bob's "8")
    status, _ = label_studio.api("DELETE", f"/api/annotations/{bobs['id']}/", token=bob_token)
    assert status == 204, status
    labels = wait_until(lambda: (lambda ls: ls if len(ls) >= 4 else None)(_labels(s, 4)), "the retraction",
                        every_s=0.5, alive=bridge.dead)
    assert [(l["label"], l["annotator"]) for l in labels[3:]] == [(UNDO, bob)]
    answers: dict[str, str] = {}
    for l in labels:
        answer(answers, l["label"], l["annotator"])
    assert answers == {ann: "3", carol: "3"}
    assert bridge.log().count("Traceback") == 0


def test_a_bridge_killed_between_the_import_and_the_overlap_sets_it_after_a_restart(
        setup: Setup, label_studio: Any, bridge_process: Callable[..., TriageProcess],
        digits: tuple[np.ndarray, np.ndarray]) -> None:
    import signal

    from tests.helpers import DEADLINE_S

    X, _ = digits
    s, title, client = setup.settings, setup.title, setup.client
    args = _bridge_args(label_studio, title, "--bridge-group-id", f"bridge-{uuid.uuid4().hex[:6]}")
    first = bridge_process(s, *args, env={"TRIAGE_FAILPOINT": "bridge.after_import:kill"})
    produce(s, s.topics.review_topic, [_request("pair", X[0], 0.9, 2)])
    assert first.proc.wait(DEADLINE_S) == -signal.SIGKILL, first.log()[-3000:]
    project = _project(client, title)
    (task,) = _tasks(client, project)
    assert task["overlap"] == 1, "killed after the import, before the overlap"
    second = bridge_process(s, *args)
    wait_until(lambda: client.task(task["id"])["overlap"] == 2, "the overlap set by the restarted bridge",
               every_s=0.5, alive=second.dead)
    assert len(_tasks(client, project)) == 1 and second.metric("triage_labelstudio_overlap_raised_total") == 1
