"""Deploy-test odds and ends on top of tests/helpers.py (processes, waits and metric parsing
live there): the /readyz document."""

from __future__ import annotations

import json

from tests.helpers import http_get


def ready_state(port: int) -> tuple[int, dict[str, object]]:
    code, body = http_get(f"http://127.0.0.1:{port}/readyz")
    return code, json.loads(body)
