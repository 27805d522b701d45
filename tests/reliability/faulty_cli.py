"""``python -m tests.reliability.faulty_cli ARGV``: the ``triage`` command line as written, with
one fault of the world made to happen inside it, named by ``TRIAGE_TEST_FAULT``:

- ``refuse:TOPIC[,TOPIC]``: every producer's client answers writes to those topics with its own
  authorization error (the embedded broker has no ACLs; tests/reliability/world.py);
- ``audit`` / ``watcher`` / ``backlog``: that loop's handler fails with EIO on every record (a
  volume that stopped answering), for the loops whose handlers otherwise catch the world's
  faults themselves.

With ``TRIAGE_TEST_FAULT_WHILE=PATH`` the fault lasts while PATH exists (the test deletes it
to clear the fault); without, for good."""

from __future__ import annotations

import errno
import os
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from tests.reliability.world import refusing_producer
from triage.settings import Settings

PROGRAM = (sys.executable, "-m", "tests.reliability.faulty_cli")  # a TriageProcess's program


def _lasting() -> Callable[[], bool]:
    path = os.environ.get("TRIAGE_TEST_FAULT_WHILE")
    return (lambda: Path(path).exists()) if path else (lambda: True)


def _failing(cls: type, method: str, lasting: Callable[[], bool]) -> None:
    real = getattr(cls, method)

    def failing(self: Any, *args: Any, **kwargs: Any) -> Any:
        if lasting():
            raise OSError(errno.EIO, f"Input/output error (injected into {cls.__name__}.{method} by faulty_cli)")
        return real(self, *args, **kwargs)

    setattr(cls, method, failing)


def _refusing(topics: set[str]) -> None:
    import triage.transport

    refusing = threading.Event()
    refusing.set()

    def make_producer(settings: Settings) -> Any:
        return refusing_producer(settings, topics, refusing)

    triage.transport.make_producer = make_producer  # type: ignore[assignment]  # consumers import it lazily


def install(fault: str) -> None:
    lasting = _lasting()
    if fault.startswith("refuse:"):
        _refusing(set(fault.removeprefix("refuse:").split(",")))
    elif fault == "audit":
        from consumers.audit import AuditConsumer
        _failing(AuditConsumer, "handle", lasting)
    elif fault == "watcher":
        from consumers.model_watcher import ModelWatcher
        _failing(ModelWatcher, "handle", lasting)
    elif fault == "backlog":
        from consumers.backlog import BacklogWatcher
        _failing(BacklogWatcher, "_count", lasting)
    else:
        raise SystemExit(f"faulty_cli: unknown TRIAGE_TEST_FAULT {fault!r}")


def main() -> int:
    install(os.environ["TRIAGE_TEST_FAULT"])
    from triage.cli import main as triage_main

    return triage_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
