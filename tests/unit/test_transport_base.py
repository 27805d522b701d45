"""send_until_acked over a fake producer, the shared sizing rules, and backend selection
(unit tests: no broker, no real sleeping)."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Callable, Iterator, Optional

import pytest

from triage.errors import ConfigError, TransportError
from triage.records import OutRecord
from triage.settings import Settings
from triage.transport import _load, backend_name
from triage.transport.base import (
    BACKOFF_MAX_S, FETCH_FLOOR, MAX_REROUTES, backoff_s, client_sizes, connect_error, send_until_acked,
)

Script = Callable[[OutRecord, int], Optional[TransportError]]


class FakeProducer:
    """Answers each record with ``script(record, how often it was sent before)``."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.sends: dict[Optional[bytes], int] = {}
        self.calls: list[list[OutRecord]] = []
        self.timeouts: list[float] = []

    def send_all(self, records: list[OutRecord], timeout_s: float, stop: object = None) -> list[Optional[TransportError]]:
        self.calls.append(list(records))
        self.timeouts.append(timeout_s)
        out = []
        for r in records:
            seen = self.sends.get(r.key, 0)
            self.sends[r.key] = seen + 1
            out.append(self.script(r, seen))
        return out

    def close(self) -> None:
        return None


class FakeClock:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def recs(*keys: str, topic: str = "out") -> list[OutRecord]:
    return [OutRecord(topic, k.encode(), b"v-" + k.encode()) for k in keys]


BUSY = TransportError("broker busy", retriable=True)
TOO_LARGE = TransportError("MSG_SIZE_TOO_LARGE", retriable=False, record_fault=True)


def test_retriable_failure_is_resent_until_acknowledged() -> None:
    clock = FakeClock()
    retries: list[tuple[int, list[TransportError]]] = []
    producer = FakeProducer(lambda r, n: BUSY if r.key == b"b" and n < 2 else None)
    out = send_until_acked(producer, recs("a", "b", "c"), sleep=clock.sleep, clock=clock,
                           on_retry=lambda attempt, errors: retries.append((attempt, errors)))
    assert [r.key for r in out] == [b"a", b"b", b"c"]  # input order, not delivery order
    assert [[r.key for r in call] for call in producer.calls] == [[b"a", b"b", b"c"], [b"b"], [b"b"]]
    assert retries == [(1, [BUSY]), (2, [BUSY])]
    assert clock.sleeps == [0.1, 0.2]


def test_non_retriable_failure_is_rerouted_in_place() -> None:
    clock = FakeClock()
    producer = FakeProducer(lambda r, n: TOO_LARGE if r.key == b"big" else None)
    seen: list[tuple[OutRecord, TransportError]] = []

    def reroute(rec: OutRecord, err: TransportError) -> OutRecord:
        seen.append((rec, err))
        return OutRecord("dlq", b"dead-" + (rec.key or b""), rec.value)

    out = send_until_acked(producer, recs("a", "big", "c"), reroute=reroute, sleep=clock.sleep, clock=clock)
    assert [(r.topic, r.key) for r in out] == [("out", b"a"), ("dlq", b"dead-big"), ("out", b"c")]
    assert seen[0][0].key == b"big" and seen[0][1] is TOO_LARGE
    assert clock.sleeps == []  # a replacement is sent at once, no backoff


def test_a_failing_replacement_may_be_rerouted_again_but_not_forever() -> None:
    producer = FakeProducer(lambda r, n: TOO_LARGE)
    hops: list[OutRecord] = []

    def reroute(rec: OutRecord, err: TransportError) -> OutRecord:
        hops.append(rec)
        return OutRecord("dlq", rec.key, None)

    with pytest.raises(TransportError) as info:
        send_until_acked(producer, recs("x"), reroute=reroute, sleep=lambda s: None)
    assert info.value is TOO_LARGE and len(hops) == MAX_REROUTES


@pytest.mark.parametrize("reroute", [None, lambda rec, err: None])
def test_non_retriable_failure_without_reroute_raises(reroute: object) -> None:
    producer = FakeProducer(lambda r, n: TOO_LARGE if r.key == b"big" else None)
    with pytest.raises(TransportError) as info:
        send_until_acked(producer, recs("a", "big"), reroute=reroute, sleep=lambda s: None)  # type: ignore[arg-type]
    assert info.value is TOO_LARGE and info.value.retriable is False


def test_deadline_bounds_the_whole_call() -> None:
    clock = FakeClock()
    producer = FakeProducer(lambda r, n: BUSY)
    with pytest.raises(TransportError) as info:
        send_until_acked(producer, recs("a", "b"), timeout_s=60.0, deadline_s=2.0, sleep=clock.sleep, clock=clock)
    err = info.value
    assert err.retriable is True
    assert "2 record(s) to out not acknowledged" in err.message and "broker busy" in err.message
    assert clock.now == pytest.approx(2.0)  # not a moment past the deadline
    assert producer.timeouts[0] == 2.0  # one send_all never outlives the deadline either
    assert all(t <= 2.0 for t in producer.timeouts)


def test_stop_aborts_between_attempts() -> None:
    stop = threading.Event()
    producer = FakeProducer(lambda r, n: BUSY if r.topic == "models" else None)
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        stop.set()  # e.g. SIGTERM arrives during the backoff

    records = recs("a") + recs("m", topic="models")
    with pytest.raises(TransportError) as info:
        send_until_acked(producer, records, stop=stop, sleep=sleep)
    assert info.value.retriable is True and "1 record(s) to models" in info.value.message
    assert "stopped" in info.value.message
    assert len(producer.calls) == 1 and slept == [0.1]


def test_stop_interrupts_the_backoff_wait_by_default() -> None:
    stop = threading.Event()
    stop.set()
    producer = FakeProducer(lambda r, n: BUSY)
    with pytest.raises(TransportError, match="stopped"):
        send_until_acked(producer, recs("a"), stop=stop)  # real stop.wait: returns at once
    assert len(producer.calls) == 1


def test_backoff_doubles_and_is_capped() -> None:
    clock = FakeClock()
    producer = FakeProducer(lambda r, n: BUSY if n < 10 else None)
    out = send_until_acked(producer, recs("a"), sleep=clock.sleep, clock=clock)
    assert [r.key for r in out] == [b"a"]
    assert clock.sleeps == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0, 5.0]
    assert backoff_s(10_000) == BACKOFF_MAX_S


def test_nothing_to_send_sends_nothing() -> None:
    producer = FakeProducer(lambda r, n: None)
    assert send_until_acked(producer, []) == [] and producer.calls == []


def test_sizes_have_one_floor_and_follow_max_message_bytes() -> None:
    small = client_sizes(1_000_000, 1000)
    assert small.fetch_bytes == FETCH_FLOOR == 8 * 1024 * 1024
    assert small.partition_fetch_bytes == 1024 * 1024
    assert small.request_bytes == 1_000_000 + 64 * 1024
    assert client_sizes(64, 1).request_bytes == 1024 * 1024
    assert small.receive_bytes >= small.fetch_bytes + 512  # librdkafka refuses anything less
    assert small.queue_kbytes * 1024 >= small.fetch_bytes and small.queue_messages == 10_000
    big = client_sizes(20_000_000, 50_000)
    assert big.fetch_bytes == 40_000_000 and big.partition_fetch_bytes == 20_000_000 + 1024
    assert big.request_bytes == 20_000_000 + 64 * 1024 and big.queue_messages == 200_000
    assert big.fetch_bytes >= big.partition_fetch_bytes


def test_connect_error_names_the_servers_and_the_settings_to_check() -> None:
    err = connect_error(Settings(bootstrap_servers="b1:9093,b2:9093"), "NoBrokersAvailable: x")
    assert err.retriable is True
    assert err.message.startswith("kafka: cannot connect to b1:9093,b2:9093 (NoBrokersAvailable: x)")
    assert "security_protocol, sasl_*, ssl_*" in err.message


@pytest.fixture
def no_confluent(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """confluent_kafka cannot be imported (as when it is not installed)."""
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)  # type: ignore[arg-type]
    monkeypatch.delitem(sys.modules, "triage.transport.confluent", raising=False)
    _load.cache_clear()
    yield
    _load.cache_clear()


@pytest.mark.usefixtures("no_confluent")
def test_explicit_confluent_that_cannot_be_imported_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        backend_name(Settings(kafka_client="confluent"))
    msg = info.value.message
    assert "confluent" in msg and "cannot be imported" in msg and "confluent_kafka" in msg
    assert "pip install confluent-kafka" in msg and "--kafka-client" in msg


@pytest.mark.usefixtures("no_confluent")
def test_auto_falls_back_to_kafka_python_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="triage.transport"):
        assert backend_name(Settings(kafka_client="auto")) == "kafka-python"
        assert backend_name(Settings(kafka_client="auto")) == "kafka-python"
    picked = [r.getMessage() for r in caplog.records if "kafka client:" in r.getMessage()]
    assert len(picked) == 1 and "kafka-python" in picked[0] and "confluent-kafka unavailable" in picked[0]
