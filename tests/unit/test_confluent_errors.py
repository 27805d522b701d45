from __future__ import annotations

from typing import Optional

import pytest
from confluent_kafka import KafkaError, KafkaException, Message

from triage.errors import TransportError
from triage.settings import Settings
from triage.transport.confluent import ConfluentConsumer, _classify, _from_exception, _Health, client_config


def test_transient_broker_errors_are_retriable() -> None:
    for code in (KafkaError._MSG_TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
                 KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.REQUEST_TIMED_OUT):
        assert _classify(KafkaError(code)).retriable is True, code


def test_record_and_group_errors_are_not_retriable() -> None:
    for code in (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD,
                 KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.ILLEGAL_GENERATION,
                 KafkaError.UNKNOWN_MEMBER_ID, KafkaError.REBALANCE_IN_PROGRESS):
        assert _classify(KafkaError(code)).retriable is False, code


def test_fatal_errors_are_never_retriable() -> None:
    err = KafkaError(KafkaError._TRANSPORT, "boom", fatal=True)
    assert _classify(err).retriable is False


def test_exception_wrapping_keeps_the_code_name() -> None:
    exc = KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    err = _from_exception(exc)
    assert err.retriable is False and "MSG_SIZE_TOO_LARGE" in err.message


def _Msg(offset: int, error: Optional[KafkaError] = None) -> Message:
    """A real client message (poll_batch reads its columns with Message's own methods)."""
    return Message(topic="t", partition=0, offset=offset, key=b"k", value=b"v%d" % offset,
                   timestamp=(1, 1000 + offset), error=error)


class _FakeClient:
    """Stands in for confluent_kafka.Consumer.consume only (unit test, no broker)."""

    def __init__(self, batches: list[list[Message]]) -> None:
        self.batches = batches

    def consume(self, n: int, timeout: float) -> list[Message]:
        return self.batches.pop(0) if self.batches else []


def test_error_events_never_become_records_and_errors_are_not_lost() -> None:
    eof = KafkaError(KafkaError._PARTITION_EOF)
    down = KafkaError(KafkaError._ALL_BROKERS_DOWN)
    client = _FakeClient([[_Msg(0), _Msg(-1, eof), _Msg(1), _Msg(-1, down)]])
    consumer = ConfluentConsumer(client, _Health(), grouped=True)  # type: ignore[arg-type]
    batch = consumer.poll_batch(10, 10)
    assert batch.offsets == [0, 1] and batch.values == [b"v0", b"v1"]  # EOF and error events skipped
    with pytest.raises(TransportError) as info:  # the error is raised on the next poll, not dropped
        consumer.poll_batch(10, 10)
    assert info.value.retriable is True
    assert len(consumer.poll_batch(10, 10)) == 0


def test_a_batch_without_errors_keeps_every_column_and_the_next_offsets() -> None:
    msgs = [Message(topic=t, partition=p, offset=o, key=None if o == 7 else b"k%d" % o, value=b"v%d" % o,
                    timestamp=(1, 5000 + o)) for t, p, o in [("a", 0, 5), ("b", 1, 7), ("a", 0, 6), ("a", 2, 1)]]
    consumer = ConfluentConsumer(_FakeClient([msgs]), _Health(), grouped=True)  # type: ignore[arg-type]
    batch = consumer.poll_batch(10, 10)
    assert (batch.topics, batch.partitions, batch.offsets) == (["a", "b", "a", "a"], [0, 1, 0, 2], [5, 7, 6, 1])
    assert batch.timestamps_ms == [5005, 5007, 5006, 5001]
    assert batch.keys == [b"k5", None, b"k6", b"k1"] and batch.values == [b"v5", b"v7", b"v6", b"v1"]
    assert batch.next_offsets() == {("a", 0): 7, ("b", 1): 8, ("a", 2): 2}


def test_security_settings_map_to_librdkafka_names() -> None:
    s = Settings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="u",
                 sasl_password="p", ssl_cafile="/ca.pem", ssl_certfile="/c.pem", ssl_keyfile="/k.pem",
                 ssl_key_password="kp")
    cfg = client_config(s)
    assert cfg["security.protocol"] == "sasl_ssl" and cfg["sasl.mechanism"] == "SCRAM-SHA-512"
    assert cfg["sasl.username"] == "u" and cfg["sasl.password"] == "p"
    assert (cfg["ssl.ca.location"], cfg["ssl.certificate.location"], cfg["ssl.key.location"]) == ("/ca.pem", "/c.pem", "/k.pem")
    assert cfg["ssl.key.password"] == "kp"


def test_consumer_sizes_come_from_the_shared_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both clients size fetches from base.client_sizes (one floor, not two that drift)."""
    from triage.transport import confluent
    from triage.transport.base import Subscription, client_sizes

    seen: dict[str, object] = {}

    class Recorder:
        def __init__(self, cfg: dict[str, object]) -> None:
            seen.update(cfg)

        def subscribe(self, *args: object, **kwargs: object) -> None:
            return None

    monkeypatch.setattr(confluent, "Consumer", Recorder)
    s = Settings(max_message_bytes=2_000_000, batch_size=500)
    confluent.make_consumer(s, Subscription(("t",), group_id="g"))
    sizes = client_sizes(2_000_000, 500)
    assert seen["fetch.max.bytes"] == sizes.fetch_bytes == 8 * 1024 * 1024
    assert seen["max.partition.fetch.bytes"] == 2_000_000 + 1024
    assert seen["receive.message.max.bytes"] == sizes.receive_bytes
    assert seen["queued.max.messages.kbytes"] == sizes.queue_kbytes
    assert seen["queued.min.messages"] == 10_000
