"""A child process for tests/reliability/test_commit_after_ack.py: the annotator console with
its settings from ``TRIAGE_*``, group ``argv[1]``, whose dead letters the broker never
acknowledges (every send to the DLQ topic fails, retriably). It prints ``WINDOW`` each time a
send of dead letters was refused, i.e. while its batch's dead letters are still unacknowledged,
and keeps fetching until it is killed."""

from __future__ import annotations

import io
import sys

from consumers.annotator import Console
from triage.errors import TransportError
from triage.records import OutRecord
from triage.settings import Settings
from triage.transport import Producer


class DeadLettersNeverAcked:
    def __init__(self, inner: Producer, dlq_topic: str) -> None:
        self.inner, self.dlq_topic = inner, dlq_topic

    def send_all(self, records: list[OutRecord], timeout_s: float, stop: object = None) -> list[TransportError | None]:
        others = [r for r in records if r.topic != self.dlq_topic]
        sent = iter(self.inner.send_all(others, timeout_s) if others else [])
        out = [TransportError("not acknowledged (test)", retriable=True) if r.topic == self.dlq_topic else next(sent)
               for r in records]
        if len(others) < len(records):
            print("WINDOW", flush=True)
        return out

    def close(self, timeout_s: float = 10.0) -> None:
        self.inner.close(timeout_s)


def main() -> None:
    s = Settings()
    console = Console(s, [str(c) for c in range(10)], "killed", group_id=sys.argv[1], stdin=io.StringIO(),
                      stdout=io.StringIO())
    console.loop.producer = DeadLettersNeverAcked(console.producer, s.topics.dlq_topic)
    while True:
        console.fetch()


if __name__ == "__main__":
    main()
