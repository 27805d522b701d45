"""A small transport interface over the Kafka clients; the pure logic never sees a client.

``make_consumer`` / ``make_producer`` / ``ensure_topics`` pick the backend from
``settings.connection.kafka_client`` (auto = confluent-kafka when it imports, else
kafka-python). What both backends share lives in ``base``; ``send_until_acked`` is the one
way to get records acknowledged.
"""

from __future__ import annotations

import functools
import importlib
import logging
from types import ModuleType
from typing import Callable, Optional

from triage.errors import BrokerUnavailableError, ConfigError, TransportError
from triage.settings import Settings
from triage.transport.base import Consumer, Offsets, Producer, Subscription, send_until_acked
from triage.transport.retention import TopicHistory, topic_configs

__all__ = [
    "Consumer", "Offsets", "Producer", "backend_name", "check_broker", "describe_history", "ensure_topics",
    "make_consumer", "make_producer", "send_until_acked",
]

log = logging.getLogger(__name__)

_MODULES = {"confluent": "triage.transport.confluent", "kafka-python": "triage.transport.kafka_python"}
_PACKAGES = {"confluent": "confluent-kafka", "kafka-python": "kafka-python"}


@functools.lru_cache(maxsize=None)
def _load(choice: str) -> tuple[str, ModuleType]:
    """(client name, backend module) for a kafka_client setting; cached, so auto logs its pick once."""
    if choice in _MODULES:
        try:
            return choice, importlib.import_module(_MODULES[choice])
        except ImportError as exc:  # an explicit choice never falls back silently
            raise ConfigError(
                f"kafka_client is {choice} (--kafka-client / TRIAGE_KAFKA_CLIENT) but that backend cannot be "
                f"imported ({type(exc).__name__}: {exc}). Fix: pip install {_PACKAGES[choice]}, or choose "
                "another client: --kafka-client auto|kafka-python|confluent"
            ) from exc
    level = logging.DEBUG  # the usual pick; start-up lines and errors name the client anyway
    try:
        name, module = "confluent", importlib.import_module(_MODULES["confluent"])
        why = "confluent-kafka is installed"
    except ImportError as exc:
        name, module = _load("kafka-python")
        why = f"confluent-kafka unavailable: {type(exc).__name__}: {exc}"
        level = logging.INFO  # a fallback is worth saying
    log.log(level, "kafka client: %s (kafka_client=auto; %s)", name, why)
    return name, module


def backend_name(settings: Settings) -> str:
    return _load(settings.connection.kafka_client)[0]


def _backend(settings: Settings) -> ModuleType:
    return _load(settings.connection.kafka_client)[1]


def make_consumer(
    settings: Settings,
    topics: list[str],
    *,
    group_id: Optional[str],
    from_beginning: bool = True,
    on_revoke: Optional[Callable[[], None]] = None,
) -> Consumer:
    # Static membership only in the scorers' group: the other groups' members (a retrain
    # CronJob, the bridge) come and go, and a static one would hold its partitions for a
    # whole session timeout after it exits.
    instance_id = settings.connection.group_instance_id if group_id == settings.connection.group_id else None
    sub = Subscription(tuple(topics), group_id, from_beginning, on_revoke, instance_id)
    consumer: Consumer = _backend(settings).make_consumer(settings, sub)
    return consumer


def make_producer(settings: Settings) -> Producer:
    producer: Producer = _backend(settings).make_producer(settings)
    return producer


def ensure_topics(settings: Settings, topics: list[str], partitions: Optional[int] = None) -> None:
    """Create the missing ``topics``, each with the configs its role needs (``retention.topic_configs``:
    unlimited history for review and labels). Topics that exist are left as they are."""
    configs = topic_configs(settings.topics)
    _backend(settings).ensure_topics(settings, topics, partitions or settings.connection.topic_partitions,
                                     {t: configs.get(t, {}) for t in topics})


def describe_history(settings: Settings, topic: str) -> TopicHistory:
    """``topic``'s retention configs and the first offset each partition still holds (see
    ``retention.check_history``). Raises TransportError when the broker cannot say."""
    history: TopicHistory = _backend(settings).describe_history(settings, topic, settings.connection.connect_timeout_s)
    return history


NO_BROKER_FIX = "start one (`triage broker`) or set --bootstrap-servers / TRIAGE_BOOTSTRAP_SERVERS"


def check_broker(settings: Settings, *, note: str = "") -> None:
    """The start-up preflight of every command that needs Kafka: a broker must answer a
    metadata request within ``connect_timeout_s``, before the command does anything it cannot
    undo. Raises BrokerUnavailableError (nothing answered: one line naming the address, what
    was tried and how to fix it) or the connect TransportError (a broker answered but refused
    the security settings). ``note`` is appended to either, e.g. "registry unchanged"."""
    conn = settings.connection
    name, backend = _load(conn.kafka_client)
    try:
        detail = backend.probe(settings, conn.connect_timeout_s)
    except TransportError as exc:
        if not note:
            raise
        raise TransportError(f"{exc.message.removeprefix('kafka: ')}; {note}", retriable=exc.retriable) from None
    if detail is None:
        log.debug("broker at %s answered (%s client)", conn.bootstrap_servers, name)
        return
    fix = NO_BROKER_FIX
    if conn.security_protocol != "PLAINTEXT":
        fix += "; if one is running, check --security-protocol and the sasl_*/ssl_* settings"
    raise BrokerUnavailableError(
        conn.bootstrap_servers, conn.connect_timeout_s,
        f"metadata request, {name} client, {conn.security_protocol}", fix,
        detail=" ".join(detail.split()), note=note,
    )
