"""Deploy-test odds and ends on top of tests/helpers.py (processes, waits and metric parsing
live there): the /readyz document, and the positional ``wait_until(check, what, alive,
timeout=)`` that tests/deploy/test_core_install.py calls."""

from __future__ import annotations

import json
from typing import Callable, Optional, TypeVar

from tests import helpers
from tests.helpers import DEADLINE_S, http_get

T = TypeVar("T")


def ready_state(port: int) -> tuple[int, dict[str, object]]:
    code, body = http_get(f"http://127.0.0.1:{port}/readyz")
    return code, json.loads(body)


def wait_until(check: Callable[[], T], what: str, alive: Callable[[], Optional[str]],
               timeout: float = DEADLINE_S) -> T:
    """``tests.helpers.wait_until`` with ``alive`` and ``timeout`` given positionally."""
    return helpers.wait_until(check, what, alive=alive, timeout_s=timeout)
