"""The operations endpoint: /metrics, /healthz (alive) and /readyz (able to serve)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

ReadyCheck = Callable[[], dict[str, bool]]
ReadyReasons = Callable[[], dict[str, str]]


class OpsServer:
    """Serve in a daemon thread. ``ready`` returns named checks; all must be True. ``reasons``
    says why failing checks fail (e.g. what a blocked loop waits for); /readyz shows them."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, ready: ReadyCheck,
                 reasons: Optional[ReadyReasons] = None) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(outer.registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._send(200, b"ok\n", "text/plain")
                elif path == "/readyz":
                    checks = outer.ready()
                    ok = all(checks.values())
                    doc: dict[str, object] = {"ready": ok, "checks": checks}
                    if outer.reasons is not None and not ok:
                        doc["reasons"] = outer.reasons()
                    body = json.dumps(doc).encode() + b"\n"
                    self._send(200 if ok else 503, body, "application/json")
                else:
                    self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:  # keep scrapes out of the logs
                return

        self.registry = registry
        self.ready = ready
        self.reasons = reasons
        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="ops-http", daemon=True)

    def start(self) -> "OpsServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
