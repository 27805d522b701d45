"""Every transport-level failure of the Label Studio client is one retriable error, and the
bridge never repeats an import whose answer was lost (a local socket server plays the faults)."""

from __future__ import annotations

import socket
import threading
from typing import Any, Callable, Iterator

import pytest

from triage.annotation.labelstudio.client import LabelStudio, LabelStudioError, LabelStudioUnavailableError
from triage.runtime.broker import free_port

Reply = Callable[[socket.socket], None]


def _http(status: str, body: bytes, length: int | None = None) -> Reply:
    def reply(conn: socket.socket) -> None:
        size = len(body) if length is None else length
        conn.sendall(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n"
                     f"Connection: close\r\n\r\n".encode() + body)
    return reply


def _reset(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def _silent(conn: socket.socket) -> None:
    conn.recv(65536)
    threading.Event().wait(2)


@pytest.fixture
def serve() -> Iterator[Callable[[Reply], str]]:
    socks: list[socket.socket] = []

    def start(reply: Reply) -> str:
        srv = socket.create_server(("127.0.0.1", 0))
        socks.append(srv)

        def run() -> None:
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                with conn:
                    if reply is not _silent:
                        conn.recv(65536)
                    reply(conn)

        threading.Thread(target=run, daemon=True).start()
        return f"http://127.0.0.1:{srv.getsockname()[1]}"

    yield start
    for s in socks:
        s.close()


@pytest.mark.parametrize("reply, what", [
    (_http("200 OK", b'{"release": "1.2', length=500), "IncompleteRead"),
    (_http("200 OK", b"<html>proxy</html>"), "not JSON"),
    (_http("502 Bad Gateway", b"upstream"), "HTTP 502"),
    (_http("503 Service Unavailable", b'{"detail": "down"}'), "HTTP 503"),
    (_http("429 Too Many Requests", b"{}"), "HTTP 429"),
    (_reset, ""),
    (lambda conn: None, ""),  # closed without an answer: RemoteDisconnected
    (_silent, "timed out"),
], ids=["incomplete_read", "not_json", "502", "503", "429", "reset", "remote_disconnected", "timeout"])
def test_transport_failures_are_one_retriable_error(serve: Callable[[Reply], str], reply: Reply, what: str) -> None:
    client = LabelStudio(serve(reply), "0" * 40, timeout_s=0.5)
    with pytest.raises(LabelStudioUnavailableError) as raised:
        client.version()
    assert raised.value.retriable and what in str(raised.value)


def test_a_refused_connection_is_retriable_and_a_refusal_is_not(serve: Callable[[Reply], str]) -> None:
    with pytest.raises(LabelStudioUnavailableError):
        LabelStudio(f"http://127.0.0.1:{free_port()}", "0" * 40, timeout_s=0.5).version()
    with pytest.raises(LabelStudioError) as refused:
        LabelStudio(serve(_http("400 Bad Request", b'{"detail": "no"}')), "0" * 40).version()
    assert not refused.value.retriable and refused.value.status == 400
    assert LabelStudio(serve(_http("404 Not Found", b"{}")), "0" * 40).task(7) is None


class LosesAnswers:
    """A project whose first import is made but whose answer is cut off (IncompleteRead)."""

    def __init__(self) -> None:
        self.made: list[dict[str, Any]] = []
        self.imports = 0

    def create_tasks(self, project_id: int, tasks: list[dict]) -> list[int]:
        self.imports += 1
        start = len(self.made)
        self.made += [dict(t, id=start + i + 1) for i, t in enumerate(tasks)]
        if self.imports == 1:
            raise LabelStudioUnavailableError("POST", "/api/projects/1/import", 200, "IncompleteRead(10 bytes read)")
        return [start + i + 1 for i in range(len(tasks))]

    def list_tasks(self, project_id: int, *, changed_since: Any = None) -> tuple[list[dict], None]:
        return list(self.made), None


def test_an_import_whose_answer_was_lost_is_not_repeated() -> None:
    from consumers import labelstudio_bridge
    from triage.contracts import ReviewRequest, ScoreFields, TopClass
    from triage.settings import Settings

    client = LosesAnswers()
    bridge = labelstudio_bridge.Bridge(Settings(), ["0", "1"], client)  # type: ignore[arg-type]
    reviews = [ReviewRequest(f"s{i}", [0.0, 1.0], "uncertain", "1", 0.6, ScoreFields(0.1, 0.5, 0.2), 0.5, "v1",
                             None, [TopClass("1", 0.6)]) for i in range(5)]
    with pytest.raises(LabelStudioError) as lost:
        bridge._create_tasks(reviews)
    assert lost.value.retriable  # the world's fault: the guarded loop holds the batch and hands it in again
    bridge._create_tasks(reviews)
    assert client.imports == 1 and len(client.made) == 5
    assert bridge.tasks == {f"s{i}": i + 1 for i in range(5)}


class _DropsFirstOnce:
    """A producer whose first send loses its first record (retriable), as a broker may while the
    rest of the batch, already in flight, is written: the topic's order is what got acked."""

    def __init__(self) -> None:
        self.topic: list[bytes] = []
        self.sends = 0

    def send_all(self, records: list, timeout_s: float, stop: Any = None) -> list:
        from triage.errors import TransportError

        self.sends += 1
        errors: list = []
        for i, r in enumerate(records):
            if self.sends == 1 and i == 0:
                errors.append(TransportError("request timed out", retriable=True))
            else:
                self.topic.append(r.value)
                errors.append(None)
        return errors


def test_a_retractions_undo_retried_still_lands_before_what_it_republishes() -> None:
    """An anonymous annotation's retraction is an undo of every answer, then bob's again: sent as
    one batch, a retried undo landed after bob's label and withdrew it for good."""
    import json

    from consumers import labelstudio_bridge
    from triage.annotation.labelstudio.changes import LabelEvent
    from triage.contracts.label import UNDO, answer
    from triage.settings import Settings

    bridge = labelstudio_bridge.Bridge(Settings(), ["0", "1"], LosesAnswers())  # type: ignore[arg-type]
    bridge.producer = producer = _DropsFirstOnce()  # type: ignore[assignment]
    bridge.publish([LabelEvent("s", UNDO, 10, 1, None, deleted=10), LabelEvent("s", "1", 11, 1, "b@x", deleted=10)],
                   "reconcile")
    answers: dict[str, str] = {}
    for value in producer.topic:
        label = json.loads(value)
        answer(answers, label["label"], label["annotator"])
    assert answers == {"b@x": "1"}
