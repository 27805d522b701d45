"""``triage label-studio``: review requests become Label Studio tasks; annotations become labels.

Three threads, one process:
- the review loop (the guarded loop, consumer group): each new review request becomes exactly
  one task, keyed by sample id (the index of existing tasks is read from Label Studio at
  start-up, so a redelivered request finds its task); offsets are committed after the task
  exists. A request that asks for several annotators sets its task's overlap (Label Studio
  serves a task to that many people, never twice to one); one for a sample whose task exists (a
  relabel, a tiebreak) raises that task's overlap instead of making a second task. Label Studio
  being down blocks the loop (retried), it never dead-letters a request.
- the webhook listener: checks the shared secret, decodes the body through its contract
  (``triage.annotation.labelstudio.webhook``; a malformed one gets a 4xx and a counted reason),
  queues the event and answers at once (Label Studio waits 1 s and never retries).
- the publisher: applies queued webhook events, and every ``--reconcile-s`` re-reads the tasks
  changed since the last reconcile (every task each ``--full-reconcile-s``, or at once when the
  project's task count fell), so a lost webhook is caught. A task with published labels that a
  full listing misses, or that a TASKS_DELETED webhook names, is fetched directly, and only a
  404 retracts its labels. Each change is published once: the ledger of what was
  published is rebuilt at start-up from the bridge's own records on the labels topic (their
  ``origin``: ``triage.annotation.labelstudio.changes``), read to the end offsets every
  partition had at start.
"""

from __future__ import annotations

import hmac
import logging
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from datetime import datetime, timedelta
from typing import Any, Callable, Optional, Sequence

from consumers.loop import GuardedLoop, blocked_reasons, not_blocked
from triage.contracts import ReviewRequest, dead_letter_from_batch, decode_label, decode_review, encode_label
from triage.errors import InputError, TransportError
from triage.annotation.labelstudio.changes import Invalid, LabelEvent, Ledger, annotator_of, confirm, reconcile
from triage.annotation.labelstudio.client import LabelStudio, LabelStudioError
from triage.annotation.labelstudio.tasks import (TO_IMAGE, has_image, label_config, open_tasks, target_overlap,
                                                 task_for)
from triage.annotation.labelstudio.webhook import (
    ANNOTATION_ACTIONS, DELETION_ACTIONS, TASK_DELETION_ACTIONS, Webhook, WebhookRefused, decode_webhook,
)
from triage.metrics import LabelStudioMetrics
from triage.records import OutRecord, RecordBatch
from triage.settings import Settings
from triage.runtime import failpoints
from triage.runtime.threads import Supervised
from triage.transport import Consumer, Producer, make_consumer, make_producer, send_until_acked
from triage.transport.base import batches_to_end
from triage.transport.retention import check_history

log = logging.getLogger("triage.labelstudio")
SECRET_HEADER = "X-Triage-Webhook-Secret"
WEBHOOK_ACTIONS = ["ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED",
                   "TASKS_DELETED"]
MAX_BODY = 5_000_000
REPLAY_LIMIT_S = 300.0
RETRY_S = (0.5, 1.0, 2.0, 5.0)
CURSOR_OVERLAP = timedelta(seconds=5)  # re-list a little: Date is whole seconds, commits land late


def retrying(call: Callable[[], Any], *, what: str, metrics: LabelStudioMetrics, stop: threading.Event) -> Any:
    """Call Label Studio until it answers; a retriable failure waits and tries again (counted),
    a refusal raises. Stopping while Label Studio is down abandons the work uncommitted."""
    attempt = 0
    while True:
        try:
            return call()
        except LabelStudioError as exc:
            metrics.errors.labels(operation=what).inc()
            if not exc.retriable:
                raise
            if attempt == 0 or attempt % 20 == 0:
                log.warning("label studio: %s failed (%s); retrying", what, exc.message)
            if stop.wait(RETRY_S[min(attempt, len(RETRY_S) - 1)]):
                raise TransportError(f"stopped while Label Studio was unreachable ({what})", retriable=True) from exc
            attempt += 1


class Bridge:
    def __init__(self, settings: Settings, classes: Sequence[str], client: LabelStudio, *,
                 feature_count: Optional[int] = None, metrics: Optional[LabelStudioMetrics] = None) -> None:
        self.settings = settings
        self.feature_count = feature_count
        self.ls_settings = settings.label_studio
        self.classes = list(classes)
        self.client = client
        self.metrics = metrics or LabelStudioMetrics()
        self.stop = threading.Event()
        self.ledger = Ledger()
        self.tasks: dict[str, int] = {}  # sample id -> task id
        self.overlaps: dict[str, int] = {}  # sample id -> its task's overlap, as last listed or set
        self.project_id = 0
        self.events: "queue.Queue[Webhook]" = queue.Queue()
        self.reconciled_at = time.monotonic()
        self.full_at: Optional[float] = None  # monotonic time of the last full reconcile
        self.cursor: Optional[datetime] = None  # Label Studio's clock: tasks changed after it are re-read
        self.task_count: Optional[int] = None  # the project's task count at the last incremental reconcile
        self._lock = threading.Lock()  # the ledger and task index, shared by the threads
        secret = self.ls_settings.label_studio_webhook_secret
        self.secret = secret.get_secret_value() if secret is not None else _random_secret()
        self.consumer: Optional[Consumer] = None
        self.producer: Optional[Producer] = None
        self.server: Optional[ThreadingHTTPServer] = None
        self.publisher: Optional[Supervised] = None
        self.image = False  # tasks carry a picture: decided from the project's config at start
        self.users: dict[int, str] = {}  # Label Studio user id -> e-mail, for annotator names
        self.fatal: Optional[BaseException] = None
        self._import_unsure = False  # an import failed and may have happened: re-read the project first
        self.review_loop: Optional[GuardedLoop[list[OutRecord]]] = None  # once running, for /readyz

    # --- start-up ------------------------------------------------------------------------
    def start(self) -> "Bridge":
        self.project_id = self._project()
        self.producer = make_producer(self.settings)
        self._replay_ledger()
        self._index_tasks()
        if self.stop.is_set():
            raise TransportError("stopped while starting", retriable=True)
        self.server = self._serve_webhooks()
        self._register_webhook()
        self.consumer = make_consumer(self.settings, [self.settings.topics.review_topic],
                                      group_id=self.ls_settings.label_studio_group_id)
        restarts = self.metrics.loop.helper_restarts.labels(thread="label-studio-publisher")
        self.publisher = Supervised("label-studio-publisher", self._publish_forever, on_fatal=self.fail,
                                    on_restart=lambda exc: restarts.inc()).start()
        return self

    def fail(self, exc: BaseException) -> None:
        """Stop for good (the publisher kept crashing, or Label Studio refused the bridge itself):
        the process exits non-zero and is restarted."""
        self.fatal = exc
        self.stop.set()

    def _project(self) -> int:
        s = self.ls_settings
        project_id = s.label_studio_project_id or retrying(
            lambda: self.client.find_project(s.label_studio_project_title), what="project", metrics=self.metrics,
            stop=self.stop)
        if not project_id:
            config = label_config(self.classes, image=has_image(self.feature_count or 0))
            project_id = retrying(lambda: self.client.create_project(s.label_studio_project_title, config),
                                  what="project", metrics=self.metrics, stop=self.stop)
            log.info("created Label Studio project %s %r with %d classes", project_id, s.label_studio_project_title,
                     len(self.classes))
        project = retrying(lambda: self.client.project(int(project_id)), what="project", metrics=self.metrics,
                           stop=self.stop)
        # Tasks must match the project's config: an image only where the config shows one.
        self.image = f'name="{TO_IMAGE}"' in str(project.get("label_config", ""))
        retrying(lambda: self.client.set_task_order(int(project_id), "priority"), what="project",
                 metrics=self.metrics, stop=self.stop)
        return int(project_id)

    def _replay_ledger(self) -> None:
        """Rebuild what was published from the bridge's own records on the labels topic: read
        every partition to the end offset it had when the replay began, whether or not it has
        delivered anything yet. A replay that cannot finish stops the bridge: carrying on with a
        partial ledger would publish twice."""
        check_history(self.settings, [self.settings.topics.labels_topic], self.metrics.loop, process="the bridge")
        reader = make_consumer(self.settings, [self.settings.topics.labels_topic], group_id=None)
        limit = self.settings.serving.max_message_bytes
        try:  # an unfinished read raises: carrying on with a partial ledger would publish twice
            for batch in batches_to_end(reader, self.settings.topics.labels_topic, limit_s=REPLAY_LIMIT_S,
                                        stop=self.stop):
                for value in batch.values:
                    try:
                        label = decode_label(value, limit)
                    except InputError:
                        continue  # not ours to judge: the retrain job dead-letters bad labels
                    self.ledger.replay(label)
        finally:
            reader.close()
        log.info("ledger: %d live annotations from earlier runs", len(self.ledger.live))
        repairs = self.ledger.repairs()
        if repairs:
            log.warning("ledger: %d deleted annotations still voted (retracted by an earlier version of the bridge); "
                        "withdrawing their answers", len({e.deleted for e in repairs}))
            self.publish(repairs, "repair")

    def _index_tasks(self) -> None:
        tasks, _ = retrying(lambda: self.client.list_tasks(self.project_id), what="tasks", metrics=self.metrics,
                            stop=self.stop)
        self._index(tasks)
        log.info("project %d holds %d tasks", self.project_id, len(self.tasks))

    def _index(self, tasks: list[dict[str, Any]]) -> None:
        with self._lock:
            for task in tasks:
                sample = (task.get("data") or {}).get("sample_id")
                if isinstance(sample, str):
                    self.tasks.setdefault(sample, int(task["id"]))
                    self._note_overlap(sample, task)

    def _note_overlap(self, sample: str, task: dict[str, Any]) -> None:
        """The overlap a listing shows for the sample's indexed task (the lock held)."""
        if self.tasks.get(sample) == int(task.get("id") or 0):
            self.overlaps[sample] = int(task.get("overlap") or 1)

    # --- review requests -> tasks ----------------------------------------------------------
    def handle_reviews(self, batch: RecordBatch) -> list[OutRecord]:
        dlq = self.settings.topics.dlq_topic
        dead: list[OutRecord] = []
        fresh: dict[str, Any] = {}
        wider: dict[str, ReviewRequest] = {}  # requests for more than one person, or one more
        for i, value in enumerate(batch.values):
            try:
                review = decode_review(value, self.settings.serving.max_message_bytes)
            except InputError as exc:
                self.metrics.invalid.labels(reason="bad_review").inc()
                dead.append(dead_letter_from_batch(batch, i, exc, exc.stage, dlq, ""))
                continue
            with self._lock:
                known = review.id in self.tasks
            if review.annotators > 1 or review.labelled_by:
                wider[review.id] = review  # the batch's latest request for a sample is the one that counts
            if known or review.id in fresh:
                self.metrics.tasks_existing.inc()
                continue
            fresh[review.id] = review
        created: set[str] = set()
        if fresh:
            # Highest priority first: with the project's order by priority, annotators get the
            # most informative sample next; the import order keeps ties in that order too.
            created = self._create_tasks(sorted(fresh.values(), key=lambda r: -r.priority))
        for review in wider.values():
            self._widen(review, new=review.id in created)
        return dead

    def _widen(self, review: ReviewRequest, *, new: bool) -> None:
        """Raise the overlap of the request's task to what it asks for (never lower it). A task
        this very call created has no annotations yet; any other is read first, so a redelivered
        request raises nothing twice. Label Studio failing raises: the loop holds the batch and the
        retry finds the task and sets the overlap then."""
        with self._lock:
            task_id = self.tasks.get(review.id)
        if task_id is None:
            return  # not created (a refused import is handled by the loop)
        if new:
            target, overlap, people = target_overlap(review.annotators, review.labelled_by, ()), 1, set()
        else:
            task = self.client.task(task_id)
            if task is None:
                log.warning("task %d of sample %s is gone: its overlap is not raised", task_id, review.id)
                return
            done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
            self._learn_users([a.get("completed_by") for a in done])
            people = {annotator_of(a, self.users) for a in done} - {None}
            target, overlap = target_overlap(review.annotators, review.labelled_by, people), int(task.get("overlap") or 1)
            with self._lock:
                self._note_overlap(review.id, task)
        if target <= overlap:
            return
        try:
            self.client.set_overlap(task_id, target, is_labeled=len(people) >= target)
        except LabelStudioError as exc:
            if exc.status != 404:
                raise
            log.warning("task %d of sample %s was deleted before its overlap was raised", task_id, review.id)
            return
        with self._lock:
            self.overlaps[review.id] = target
        self.metrics.overlap_raised.inc()

    def _create_tasks(self, reviews: list[Any]) -> set[str]:
        """Import the tasks of ``reviews`` that do not exist yet. Label Studio down or failing
        is the world's fault: the error goes to the guarded loop, which holds the batch
        uncommitted, retries it with backoff and, past --blocked-exit-s, exits non-zero. A
        failed import may have happened, so the project is read again before the retry: a
        retry never creates a second task. A refusal that is about the bridge, not a record
        (key, project, a short answer), stops it: nothing is committed and the process exits
        non-zero."""
        if self._import_unsure:
            tasks, _ = self.client.list_tasks(self.project_id)  # Label Studio still down: raises, held again
            self._index(tasks)
            self._import_unsure = False
        with self._lock:
            missing = [r for r in reviews if r.id not in self.tasks]
        if not missing:
            return set()
        payload = [task_for(r, image=self.image) for r in missing]
        try:
            ids = self.client.create_tasks(self.project_id, payload)
        except LabelStudioError as exc:
            self.metrics.errors.labels(operation="create_tasks").inc()
            if exc.status in (401, 403, 404) or exc.status == 201:
                self.fail(exc)
                raise TransportError(f"Label Studio refused the bridge: {exc.message}", retriable=False) from exc
            self._import_unsure = exc.retriable
            raise  # retriable: the loop holds the batch; else about a record: it is isolated, dead-lettered
        failpoints.hit("bridge.after_import")  # Label Studio made the tasks; the bridge has not noted them
        with self._lock:
            for review, task_id in zip(missing, ids):
                self.tasks[review.id] = int(task_id)
        self.metrics.tasks_created.inc(len(ids))
        return {r.id for r in missing}

    def loop(self) -> GuardedLoop[list[OutRecord]]:
        assert self.consumer is not None and self.producer is not None
        self.review_loop = GuardedLoop(
            "label-studio", self.consumer, self.handle_reviews, producer=self.producer,
            dlq_topic=self.settings.topics.dlq_topic, stop=self.stop, metrics=self.metrics.loop, max_records=200,
            before_poll=self._tick, blocked_exit_s=self.settings.operations.blocked_exit_s)
        return self.review_loop

    def _tick(self) -> None:
        self.metrics.reconcile_lag.set(time.monotonic() - self.reconciled_at)

    # --- annotations -> labels --------------------------------------------------------------
    def publish(self, changes: Sequence[Any], source: str) -> int:
        """Publish the label events among ``changes`` (count the invalid ones); returns how many."""
        events = [c for c in changes if isinstance(c, LabelEvent)]
        for bad in (c for c in changes if isinstance(c, Invalid)):
            self.metrics.invalid.labels(reason=bad.reason).inc()
            log.warning("label studio: %s", bad.detail)
        if not events:
            return 0
        assert self.producer is not None
        records = [OutRecord(self.settings.topics.labels_topic, e.sample_id.encode(),
                             encode_label(e.sample_id, e.label, annotator=e.annotator, features=e.features,
                                          ts=int(time.time() * 1000), origin=e.origin)) for e in events]
        if len({e.sample_id for e in events}) == len(events):
            send_until_acked(self.producer, records, stop=self.stop)
        else:  # a sample's labels in order (an undo before what it republishes): a retried one must not pass another
            for record in records:
                send_until_acked(self.producer, [record], stop=self.stop)
        failpoints.hit("bridge.after_publish")  # the labels are on the topic, not yet in the ledger
        with self._lock:
            for e in events:
                self.ledger.apply(e)
                self.metrics.labels.labels(source=source, kind=e.kind).inc()
        return len(events)

    def on_webhook(self, body: Webhook) -> None:
        """Queue a decoded webhook for the publisher (the listener answers at once)."""
        self.events.put(body)

    def apply_webhook(self, body: Webhook) -> int:
        """One webhook, from its own content (no call back to Label Studio): a created or updated
        annotation is compared with the ledger; deleted ones are retracted."""
        if body.action in ANNOTATION_ACTIONS:
            ann = body.annotation_dict()
            self._learn_users([ann.get("completed_by")])
            changes = self.ledger.observe_annotation(body.task_dict(), ann, self.classes, self.users)
        elif body.action in DELETION_ACTIONS:
            changes = self.ledger.observe_deleted([a.id for a in body.annotations or []])
        elif body.action in TASK_DELETION_ACTIONS:
            return self._confirm_deleted({t.id for t in body.tasks or []})
        else:
            return 0
        return self.publish(changes, "webhook")

    def _confirm_deleted(self, task_ids: set[int]) -> int:
        """Tasks a webhook says were deleted (their annotations went with them, unannounced):
        each with published labels is fetched directly, and only a 404 retracts them."""
        with self._lock:
            suspects = self.ledger.live_tasks(task_ids)
        published = 0

        def publish(changes: list[Any]) -> None:
            nonlocal published
            published += self.publish(changes, "webhook")

        confirm(self.ledger, suspects, self.classes, publish=publish, fetch=self._fetch_task, users=self.users)
        return published

    def _learn_users(self, ids: Any) -> None:
        """Read Label Studio's users again when an annotation names one not seen yet."""
        if any(isinstance(i, int) and i not in self.users for i in ids):
            try:
                self.users = self.client.users()
            except LabelStudioError as exc:  # names fall back to created_username / the id
                self.metrics.errors.labels(operation="users").inc()
                log.warning("label studio: reading users failed (%s)", exc.message)

    def reconcile(self, *, full: Optional[bool] = None) -> int:
        """Re-read the tasks changed since the last reconcile (every task when ``full``, by
        default the first time and every ``--full-reconcile-s``) and publish what changed since
        the ledger saw them. Webhooks queued before the listing are dropped: it is newer."""
        now = time.monotonic()
        if full is None:
            full = (self.full_at is None or now - self.full_at >= self.ls_settings.label_studio_full_reconcile_s
                    or self._tasks_went_missing())
        kind = "full" if full else "incremental"
        while not self.events.empty():
            self.events.get_nowait()
        calls = self.client.requests
        since = None if full else self.cursor
        tasks, started = retrying(lambda: self.client.list_tasks(self.project_id, changed_since=since),
                                  what="tasks", metrics=self.metrics, stop=self.stop)
        self._learn_users(a.get("completed_by") for t in tasks for a in t.get("annotations") or [])
        published = 0

        def publish(changes: list[Any]) -> None:
            nonlocal published
            published += self.publish(changes, "reconcile")

        reconcile(self.ledger, tasks, self.classes, publish=publish, fetch=self._fetch_task if full else None,
                  users=self.users)
        if started is not None:
            self.cursor = started - CURSOR_OVERLAP
        if full:
            self.full_at = now
        self.reconciled_at = time.monotonic()
        self.metrics.reconcile_calls.labels(kind=kind).inc(self.client.requests - calls)
        with self._lock:
            for task in tasks:
                sample = (task.get("data") or {}).get("sample_id")
                if isinstance(sample, str):
                    self._note_overlap(sample, task)
            self.metrics.open_tasks.set(open_tasks(self.tasks, self.overlaps, self.ledger.annotations_per_sample()))
        return published

    def _tasks_went_missing(self) -> bool:
        """The project holds fewer tasks than at the last reconcile: some were deleted, and a
        changed-since listing never shows a deleted task, so sweep in full now rather than at
        --full-reconcile-s (the TASKS_DELETED webhook is the prompt path; this catches a lost
        one, unless imports in the same interval made up the count)."""
        try:
            count = int(self.client.project(self.project_id).get("task_number") or 0)
        except LabelStudioError:
            return False  # the listing retries and says so
        before, self.task_count = self.task_count, count
        if before is not None and count < before:
            log.info("project %d went from %d to %d tasks: a full reconcile now", self.project_id, before, count)
            return True
        return False

    def _fetch_task(self, task_id: int) -> Optional[dict[str, Any]]:
        """A task a full listing missed, asked for directly: None only when Label Studio says 404."""
        task = retrying(lambda: self.client.task(task_id), what="tasks", metrics=self.metrics, stop=self.stop)
        self.metrics.tasks_confirmed.labels(outcome="deleted" if task is None else "present").inc()
        if task is not None:
            log.warning("task %d looked deleted (missing from a full listing, or named by a webhook) but exists: "
                        "its labels stand", task_id)
        return task

    def _publish_forever(self, helper_stop: threading.Event) -> None:
        every = self.ls_settings.label_studio_reconcile_s
        if not self.stop.is_set():
            self.reconcile()
        while not (self.stop.is_set() or helper_stop.is_set()):
            wait = max(0.0, every - (time.monotonic() - self.reconciled_at))
            try:
                body = self.events.get(timeout=min(wait, 1.0))
            except queue.Empty:
                if time.monotonic() - self.reconciled_at >= every:
                    self.reconcile()
                continue
            self.apply_webhook(body)

    # --- webhook listener -------------------------------------------------------------------
    def _serve_webhooks(self) -> ThreadingHTTPServer:
        bridge = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 30.0  # a sender that stalls mid-body loses its connection, not a thread for good

            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                if self.path.rstrip("/") != "/webhook":
                    return self._answer(404, "not found")
                given = self.headers.get(SECRET_HEADER, "")
                if not hmac.compare_digest(given.encode(errors="replace"), bridge.secret.encode()):
                    bridge.metrics.invalid.labels(reason="unauthorized_webhook").inc()
                    bridge.metrics.webhooks_refused.labels(reason="unauthorized").inc()
                    log.warning("webhook from %s without the shared secret: refused", self.client_address[0])
                    return self._answer(401, "missing or wrong " + SECRET_HEADER)
                try:
                    body = decode_webhook(self._body(), MAX_BODY)
                except WebhookRefused as exc:
                    bridge.metrics.invalid.labels(reason="bad_webhook").inc()
                    bridge.metrics.webhooks_refused.labels(reason=exc.reason).inc()
                    log.warning("malformed webhook body (%s: %s): refused; the next reconcile catches up",
                                exc.reason, exc.detail[:200])
                    self.close_connection = True  # an unread body must not be taken for the next request
                    return self._answer(exc.status, f"{exc.reason}: {exc.detail[:200]}")
                bridge.on_webhook(body)
                self._answer(200, "ok")

            def _body(self) -> bytes:
                """The body, refused unread when its declared length is missing or over the limit."""
                try:
                    length = int(self.headers.get("Content-Length") or "")
                except ValueError:
                    raise WebhookRefused("bad_shape", "no valid Content-Length", 411) from None
                if length > MAX_BODY:
                    raise WebhookRefused("too_large", f"body of {length} bytes > limit {MAX_BODY}", 413)
                if length <= 0:
                    raise WebhookRefused("not_json", "empty body")
                try:
                    return self.rfile.read(length)
                except OSError as exc:  # cut off, or slower than the timeout
                    raise WebhookRefused("not_json", f"body not received: {exc}") from None

            def _answer(self, code: int, text: str) -> None:
                body = text.encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:  # requests are counted, not logged
                pass

        s = self.ls_settings
        server = ThreadingHTTPServer((s.label_studio_webhook_host, s.label_studio_webhook_port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="label-studio-webhooks", daemon=True).start()
        return server

    @property
    def webhook_url(self) -> str:
        assert self.server is not None
        return self.ls_settings.label_studio_webhook_url or f"http://127.0.0.1:{self.server.server_address[1]}/webhook"

    def _register_webhook(self) -> None:
        url = self.webhook_url
        hooks = retrying(lambda: self.client.webhooks(self.project_id), what="project", metrics=self.metrics,
                         stop=self.stop)
        for hook in hooks:  # the secret may have changed since the last start: replace ours
            if hook.get("url") == url:
                retrying(lambda h=hook: self.client.delete_webhook(int(h["id"])), what="project",
                         metrics=self.metrics, stop=self.stop)
        retrying(lambda: self.client.add_webhook(self.project_id, url, {SECRET_HEADER: self.secret}, WEBHOOK_ACTIONS),
                 what="project", metrics=self.metrics, stop=self.stop)
        log.info("webhooks of project %d go to %s", self.project_id, url)

    # --- readiness and shutdown ---------------------------------------------------------------
    def readiness(self) -> dict[str, bool]:
        """/readyz: Label Studio answers, the broker is reachable, the review loop holds no batch."""
        try:
            self.client.version()
            label_studio = True
        except LabelStudioError:
            label_studio = False
        checks = {"label_studio": label_studio, "broker": self.consumer is not None and self.consumer.connected(),
                  "not_blocked": not_blocked(self.review_loop)}
        self.metrics.ready.set(1 if all(checks.values()) else 0)
        return checks

    def readiness_reasons(self) -> dict[str, str]:
        return blocked_reasons(self.review_loop)

    def close(self) -> None:
        self.stop.set()
        if self.server is not None:
            self.server.shutdown()
        if self.publisher is not None:
            self.publisher.stop()
        for client in (self.consumer, self.producer):
            if client is not None:
                client.close()


def _random_secret() -> str:
    import secrets

    return secrets.token_hex(24)
