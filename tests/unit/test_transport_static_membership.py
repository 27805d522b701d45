"""group_instance_id reaches the consumer of the scorers' group only: the retrain job, the
bridge, annotators and group-less readers stay dynamic (a static member that exits holds its
partitions for a whole session timeout)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Optional

import pytest

import triage.transport as transport
from triage.settings import Settings
from triage.transport.base import Subscription


@pytest.fixture
def subscriptions(monkeypatch: pytest.MonkeyPatch) -> list[Subscription]:
    seen: list[Subscription] = []
    fake = SimpleNamespace(make_consumer=lambda settings, sub: seen.append(sub) or object())
    monkeypatch.setattr(transport, "_backend", lambda settings: fake)
    return seen


@pytest.mark.parametrize(("group", "expected"), [
    ("triage-scorer", "triage-scorer-1"), ("triage-retrain", None), ("triage-label-studio", None), (None, None),
])
def test_only_the_scorers_group_is_static(subscriptions: list[Subscription], group: Optional[str],
                                          expected: Optional[str]) -> None:
    s = Settings(group_id="triage-scorer", group_instance_id="triage-scorer-1")
    transport.make_consumer(s, ["t"], group_id=group)
    assert subscriptions[-1].instance_id == expected


def test_unset_means_dynamic(subscriptions: list[Subscription]) -> None:
    transport.make_consumer(Settings(), ["t"], group_id=Settings().connection.group_id)
    assert subscriptions[-1].instance_id is None


def test_the_environment_sets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIAGE_GROUP_INSTANCE_ID", "triage-scorer-0")
    assert Settings().connection.group_instance_id == "triage-scorer-0"


@pytest.mark.parametrize("bad", ["", "x" * 250])
def test_an_id_kafka_would_refuse_is_a_configuration_error(bad: str) -> None:
    with pytest.raises(ValueError, match="group_instance_id"):
        Settings(group_instance_id=bad)


class _Captured(Exception):
    pass


def test_both_clients_are_given_the_id(monkeypatch: pytest.MonkeyPatch) -> None:
    from triage.transport import confluent, kafka_python

    def capture(*args: Any, **kwargs: Any) -> None:
        raise _Captured(args, kwargs)

    s = Settings(group_id="g", group_instance_id="triage-scorer-2")
    sub = Subscription(("t",), "g", instance_id="triage-scorer-2")
    monkeypatch.setattr(confluent, "Consumer", capture)
    with pytest.raises(_Captured) as got:
        confluent.make_consumer(s, sub)
    assert got.value.args[0][0]["group.instance.id"] == "triage-scorer-2"
    monkeypatch.setattr(kafka_python, "_connect", capture)
    with pytest.raises(_Captured) as got:
        kafka_python.make_consumer(s, sub)
    assert got.value.args[1]["group_instance_id"] == "triage-scorer-2"
