"""A small Label Studio REST client (stdlib ``urllib`` only), verified against Label Studio 1.23.2.

Auth: ``api_key`` is either a legacy token (sent as ``Authorization: Token <key>``; the
organization must have legacy tokens enabled) or a Personal Access Token, i.e. a JWT *refresh*
token (three base64url parts). A PAT is exchanged at ``POST /api/token/refresh/`` for a short-lived
access token sent as ``Authorization: Bearer <access>``; on a 401 the client refreshes once and
retries. See tests/integration/test_labelstudio_client.py, tests/labelstudio.py and the recorded
webhook bodies in tests/labelstudio_payloads.json for the endpoints, payload shapes and quirks
this relies on.
"""

from __future__ import annotations

import http.client
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Iterator, Optional

from triage.errors import LabelStudioError, LabelStudioUnavailableError

__all__ = ["LabelStudio", "LabelStudioError", "LabelStudioUnavailableError", "is_personal_access_token"]

_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
PAGE_SIZE = 100
DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # the Data Manager's Datetime filter values (UTC)
# Every way a call can fail without a usable answer: refused, reset or dropped connections,
# a body cut off (IncompleteRead), a bad status line, timeouts. http.client's are not OSErrors.
_TRANSPORT_FAILURES = (urllib.error.URLError, http.client.HTTPException, OSError)


def is_personal_access_token(api_key: str) -> bool:
    """A PAT (JWT refresh token) has three base64url parts; a legacy token is 40 hex characters."""
    return bool(_JWT.match(api_key))


def _http_date(value: Optional[str]) -> Optional[datetime]:
    try:
        return parsedate_to_datetime(value) if value else None
    except (TypeError, ValueError):
        return None


def _detail(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        body = json.loads(text)
    except ValueError:
        return text[:500] or "(empty body)"
    if isinstance(body, dict):
        for key in ("detail", "validation_errors", "error"):
            if key in body and body[key]:
                return json.dumps(body[key]) if not isinstance(body[key], str) else body[key]
    return json.dumps(body)[:500]


class LabelStudio:
    def __init__(self, url: str, api_key: str, *, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key.strip()
        self.timeout_s = timeout_s
        self.uses_pat = is_personal_access_token(self.api_key)
        self._access: Optional[str] = None
        self.requests = 0  # calls made (for measuring reconciles)

    # --- transport -------------------------------------------------------------------------

    def _raw(self, method: str, path: str, body: Any, auth: Optional[str]) -> tuple[int, bytes, Optional[str]]:
        """(status, body, the Date header) of one request."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = auth
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                    status, raw, date = r.status, r.read(), r.headers.get("Date")
            except urllib.error.HTTPError as e:
                status, raw, date = e.code, e.read(), None
        except _TRANSPORT_FAILURES as e:
            reason = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
            raise LabelStudioUnavailableError(method, path.split("?")[0], None, str(reason)) from e
        if status == 429 or status >= 500:
            raise LabelStudioUnavailableError(method, path.split("?")[0], status, _detail(raw))
        return status, raw, date

    def _refresh(self) -> str:
        status, raw, _ = self._raw("POST", "/api/token/refresh/", {"refresh": self.api_key}, None)
        if status != 200:
            raise LabelStudioError("POST", "/api/token/refresh/", status,
                                   f"cannot exchange the personal access token: {_detail(raw)}")
        self._access = str(json.loads(raw)["access"])
        return self._access

    def _auth(self) -> str:
        if not self.uses_pat:
            return f"Token {self.api_key}"
        return f"Bearer {self._access or self._refresh()}"

    def _call(self, method: str, path: str, body: Any = None, *, query: Optional[dict[str, Any]] = None,
              ok: tuple[int, ...] = (200, 201, 204)) -> Any:
        return self._call_dated(method, path, body, query=query, ok=ok)[0]

    def _call_dated(self, method: str, path: str, body: Any = None, *, query: Optional[dict[str, Any]] = None,
                    ok: tuple[int, ...] = (200, 201, 204)) -> tuple[Any, Optional[datetime]]:
        """The decoded answer and Label Studio's clock when it answered (its Date header)."""
        self.requests += 1
        if query:
            path = f"{path}?{urllib.parse.urlencode(query)}"
        status, raw, date = self._raw(method, path, body, self._auth())
        if status == 401 and self.uses_pat:
            self._refresh()
            status, raw, date = self._raw(method, path, body, self._auth())
        if status not in ok:
            raise LabelStudioError(method, path.split("?")[0], status, _detail(raw))
        when = _http_date(date)
        if not raw:
            return None, when
        try:
            return json.loads(raw), when
        except ValueError as e:  # a success with a garbled body: the call may have worked
            raise LabelStudioUnavailableError(method, path.split("?")[0], status, f"not JSON: {raw[:200]!r}") from e

    # --- API -------------------------------------------------------------------------------

    def version(self) -> dict:
        """``GET /api/version/`` (``{"release": "1.23.2", ...}``); also the readiness probe."""
        return dict(self._call("GET", "/api/version/"))

    def find_project(self, title: str) -> Optional[int]:
        """The id of the (lowest-id) project titled exactly ``title``, or None."""
        page = 1
        found: list[int] = []
        while True:
            body = self._call("GET", "/api/projects/", query={"title": title, "page": page, "page_size": PAGE_SIZE})
            results = body["results"] if isinstance(body, dict) else body
            found += [int(p["id"]) for p in results if p.get("title") == title]
            if not isinstance(body, dict) or not body.get("next"):
                break
            page += 1
        return min(found) if found else None

    def create_project(self, title: str, label_config: str) -> int:
        body = self._call("POST", "/api/projects/", {"title": title, "label_config": label_config})
        return int(body["id"])

    def project(self, project_id: int) -> dict:
        return dict(self._call("GET", f"/api/projects/{int(project_id)}/"))

    def tasks(self, project_id: int) -> Iterator[dict]:
        """Every task of the project with ``data``, ``predictions`` and ``annotations``, by ascending id."""
        return iter(self.list_tasks(project_id)[0])

    def list_tasks(self, project_id: int, *, changed_since: Optional[datetime] = None
                   ) -> tuple[list[dict], Optional[datetime]]:
        """The project's tasks (with ``data``, ``predictions``, ``annotations``) by ascending id, only
        those updated after ``changed_since`` when given; and Label Studio's clock at the first page.

        ``GET /api/tasks/?project=ID&fields=all&page=1&page_size=100&query=...`` (the Data Manager
        list, ``{"tasks": [...], "total": N}``) with a keyset: every page is the first page of the
        tasks with an id above the last one read, so a task inserted or deleted while paging never
        shifts another out of the listing (offset pages did). Saving or deleting an annotation
        sets its task's ``updated_at`` (tasks/models.py, ``Annotation.update_task``), so
        ``changed_since`` catches every annotation change; a deleted task is not listed at all.
        """
        out: list[dict] = []
        started: Optional[datetime] = None
        after = 0
        while True:
            items = [{"filter": "filter:tasks:id", "operator": "greater", "type": "Number", "value": after}]
            if changed_since is not None:
                items.append({"filter": "filter:tasks:updated_at", "operator": "greater", "type": "Datetime",
                              "value": changed_since.astimezone(timezone.utc).strftime(DATETIME_FORMAT)})
            query = {"ordering": ["tasks:id"], "filters": {"conjunction": "and", "items": items}}
            body, when = self._call_dated("GET", "/api/tasks/", query={
                "project": int(project_id), "fields": "all", "page": 1, "page_size": PAGE_SIZE,
                "query": json.dumps(query)})
            started = started or when
            batch = [t for t in body.get("tasks", []) if int(t["id"]) > after]
            out += batch
            if len(batch) < PAGE_SIZE:
                return out, started
            after = max(int(t["id"]) for t in batch)

    def task(self, task_id: int) -> Optional[dict]:
        """``GET /api/tasks/ID/`` with its annotations, or None when Label Studio answers 404."""
        try:
            return dict(self._call("GET", f"/api/tasks/{int(task_id)}/"))
        except LabelStudioError as e:
            if e.status == 404:
                return None
            raise

    def create_tasks(self, project_id: int, tasks: list[dict]) -> list[int]:
        """Import tasks (with their predictions) in one call; returns the new ids in input order.

        ``POST /api/projects/ID/import?return_task_ids=true`` with the list (synchronous in the
        community edition; answers ``{"task_count": n, "task_ids": [...], ...}``).
        """
        if not tasks:
            return []
        body = self._call("POST", f"/api/projects/{int(project_id)}/import",
                          list(tasks), query={"return_task_ids": "true"})
        ids = [int(i) for i in body.get("task_ids", [])]
        if len(ids) != len(tasks):
            raise LabelStudioError("POST", f"/api/projects/{int(project_id)}/import", 201,
                                   f"expected {len(tasks)} task ids, got {len(ids)}: {body}")
        return ids

    def set_overlap(self, task_id: int, overlap: int, *, is_labeled: bool) -> None:
        """``PATCH /api/tasks/ID/`` ``{"overlap": n, "is_labeled": b}``: how many people the label
        stream serves the task to. Label Studio does not recompute ``is_labeled`` on this call, and
        its stream serves only tasks not labelled, so the caller says whether enough people did."""
        self._call("PATCH", f"/api/tasks/{int(task_id)}/", {"overlap": int(overlap), "is_labeled": bool(is_labeled)})

    def create_annotation(self, task_id: int, result: list[dict], *, was_cancelled: bool = False) -> int:
        body = self._call("POST", f"/api/tasks/{int(task_id)}/annotations/",
                          {"result": result, "was_cancelled": bool(was_cancelled)})
        return int(body["id"])

    def update_annotation(self, annotation_id: int, result: list[dict]) -> None:
        self._call("PATCH", f"/api/annotations/{int(annotation_id)}/", {"result": result})

    def delete_annotation(self, annotation_id: int) -> None:
        self._call("DELETE", f"/api/annotations/{int(annotation_id)}/")

    def add_webhook(self, project_id: int, url: str, headers: dict[str, str], actions: list[str]) -> int:
        body = self._call("POST", "/api/webhooks/", {
            "project": int(project_id), "url": url, "headers": dict(headers), "actions": list(actions),
            "send_payload": True, "send_for_all_actions": False, "is_active": True,
        })
        return int(body["id"])

    def users(self) -> dict[int, str]:
        """User id -> e-mail (webhooks and task listings name annotators by id)."""
        body = self._call("GET", "/api/users/")
        return {int(u["id"]): str(u.get("email") or u.get("username") or u["id"]) for u in body
                if isinstance(u, dict) and "id" in u}

    def delete_webhook(self, webhook_id: int) -> None:
        self._call("DELETE", f"/api/webhooks/{webhook_id}/")

    def webhooks(self, project_id: int) -> list[dict]:
        body = self._call("GET", "/api/webhooks/", query={"project": int(project_id)})
        return [w for w in body if w.get("project") == int(project_id)]

    def set_task_order(self, project_id: int, field: str) -> None:
        """Serve the labelling stream by descending ``data.<field>``.

        Creates (or updates) a Data Manager view (tab) titled ``triage: by <field>`` with ordering
        ``["-tasks:data.<field>"]``. The label stream (``GET /api/projects/ID/next/?view=VIEW``,
        what "Label All Tasks" on that tab calls) then serves unlabelled tasks in that order.
        """
        title = f"triage: by {field}"
        data = {"title": title, "ordering": [f"-tasks:data.{field}"],
                "filters": {"conjunction": "and", "items": []}}
        views = self._call("GET", "/api/dm/views/", query={"project": int(project_id)})
        for v in views:
            if v.get("data", {}).get("title") == title:
                self._call("PATCH", f"/api/dm/views/{int(v['id'])}/", {"project": int(project_id), "data": data})
                return
        self._call("POST", "/api/dm/views/", {"project": int(project_id), "data": data})

    def order_view(self, project_id: int, field: str) -> Optional[int]:
        """The id of the view ``set_task_order`` made, or None."""
        title = f"triage: by {field}"
        for v in self._call("GET", "/api/dm/views/", query={"project": int(project_id)}):
            if v.get("data", {}).get("title") == title:
                return int(v["id"])
        return None

    def next_task(self, project_id: int, view_id: Optional[int] = None) -> Optional[dict]:
        """``GET /api/projects/ID/next/`` (the label stream; locks the task for this user)."""
        try:
            return dict(self._call("GET", f"/api/projects/{int(project_id)}/next/",
                                   query={"view": int(view_id)} if view_id else None))
        except LabelStudioError as e:
            if e.status == 404:
                return None
            raise
