"""Test-only failpoints: named places where a test can make the process die on cue.

``TRIAGE_FAILPOINT=NAME:kill[@N]`` (several separated by commas) makes the N-th ``hit(NAME)``
(default the first) SIGKILL the process there and then, so a crash test kills it in an exact
window (e.g. after Label Studio made the tasks, before the bridge recorded them) instead of
racing a timer. Unset, as always outside tests, ``hit`` is a dict lookup that finds nothing.
"""

from __future__ import annotations

import os
import signal

ENV = "TRIAGE_FAILPOINT"


def parse(spec: str) -> dict[str, int]:
    """``NAME:kill[@N],...`` -> {NAME: N}; a malformed spec raises ValueError saying how to write it."""
    armed: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, action = item.partition(":")
        verb, _, count = action.partition("@")
        if not name or verb != "kill" or not (count or "1").isdigit() or int(count or "1") < 1:
            raise ValueError(f"{ENV}: {item!r} is not NAME:kill or NAME:kill@N (N >= 1)")
        armed[name] = int(count or "1")
    return armed


_armed = parse(os.environ.get(ENV, ""))


def hit(name: str) -> None:
    """Pass failpoint ``name``: SIGKILL this process if it is armed and this is its N-th hit."""
    left = _armed.get(name)
    if left is None:
        return
    if left > 1:
        _armed[name] = left - 1
        return
    os.kill(os.getpid(), signal.SIGKILL)
