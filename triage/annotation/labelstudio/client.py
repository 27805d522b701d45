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

import json
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Iterator, Optional

from triage.errors import TriageError

_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
PAGE_SIZE = 100


class LabelStudioError(TriageError):
    """A failed Label Studio call: names the method, path, status and the server's detail.

    ``retriable`` is True for connection errors, timeouts, 5xx and 429; False for other 4xx.
    ``status`` is None when no HTTP response arrived.
    """

    def __init__(self, method: str, path: str, status: Optional[int], detail: str) -> None:
        where = f"Label Studio {method} {path}"
        if status is None:
            super().__init__(f"{where}: no response: {detail}")
        else:
            super().__init__(f"{where} -> HTTP {status}: {detail}")
        self.method = method
        self.path = path
        self.status = status
        self.detail = detail
        self.retriable = status is None or status == 429 or status >= 500


def is_personal_access_token(api_key: str) -> bool:
    """A PAT (JWT refresh token) has three base64url parts; a legacy token is 40 hex characters."""
    return bool(_JWT.match(api_key))


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

    # --- transport -------------------------------------------------------------------------

    def _raw(self, method: str, path: str, body: Any, auth: Optional[str]) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = auth
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise LabelStudioError(method, path.split("?")[0], None, str(reason)) from e

    def _refresh(self) -> str:
        status, raw = self._raw("POST", "/api/token/refresh/", {"refresh": self.api_key}, None)
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
        if query:
            path = f"{path}?{urllib.parse.urlencode(query)}"
        status, raw = self._raw(method, path, body, self._auth())
        if status == 401 and self.uses_pat:
            self._refresh()
            status, raw = self._raw(method, path, body, self._auth())
        if status not in ok:
            raise LabelStudioError(method, path.split("?")[0], status, _detail(raw))
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as e:
            raise LabelStudioError(method, path.split("?")[0], status, f"not JSON: {raw[:200]!r}") from e

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
        """Every task of the project with ``data``, ``predictions`` and ``annotations``, by ascending id.

        ``GET /api/tasks/?project=ID&fields=all&page=N&page_size=100`` (the Data Manager list:
        ``{"tasks": [...], "total": N, ...}``); ordered by id explicitly, so tasks imported while
        paging only append. Pages past the end answer 404, so we stop on ``total``.
        """
        page = 1
        seen = 0
        query_json = json.dumps({"ordering": ["tasks:id"]})
        while True:
            body = self._call("GET", "/api/tasks/", query={
                "project": int(project_id), "fields": "all", "page": page, "page_size": PAGE_SIZE,
                "query": query_json,
            })
            batch = body.get("tasks", [])
            yield from batch
            seen += len(batch)
            if not batch or len(batch) < PAGE_SIZE or seen >= int(body.get("total", 0)):
                return
            page += 1

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
