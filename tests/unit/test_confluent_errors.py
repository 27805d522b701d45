from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from triage.transport.confluent import _classify, _from_exception


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
