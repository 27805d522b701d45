"""Factory fixtures: the embedded broker, unique topics, settings, producers, readers, and
triage subprocesses (tests/helpers.py: TriageProcess, waits, metric parsing). Integration tests
talk to the real broker only; nothing here mocks Kafka."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

import numpy as np
import pytest
from sklearn.datasets import load_digits

from tests.helpers import (  # noqa: F401 - DEADLINE_S, REPO and ScorerProcess are imported from here too
    DEADLINE_S, REPO, ScorerProcess, TriageProcess, settings_env,
)
from triage.runtime.broker import EmbeddedBroker
from triage.lifecycle.bundles import train_initial
from triage.examples import example_paths
from triage.records import OutRecord
from triage.lifecycle.registry import Registry
from triage.settings import Settings
from triage.transport import ensure_topics, make_consumer, make_producer

if TYPE_CHECKING:
    from tests.s3server import WeedS3



@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_file=log) as b:
        yield b


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator["WeedS3"]:
    """A real S3 server (SeaweedFS ``weed mini``) for the session; its AWS_* variables are set
    in this process (so subprocesses inherit them) until the session ends."""
    from tests.s3server import WeedS3

    with WeedS3(tmp_path_factory.mktemp("s3")).running() as server:
        yield server


KAFKA_CLIENTS = ("confluent", "kafka-python")  # the first is what `--kafka-client auto` picks


@pytest.fixture
def kafka_client(request: pytest.FixtureRequest) -> str:
    """The Kafka client under test: parametrized by tests/conftest.py (``--kafka-clients``)."""
    return str(getattr(request, "param", KAFKA_CLIENTS[0]))


@pytest.fixture
def settings_factory(broker: EmbeddedBroker, kafka_client: str, tmp_path: Path) -> Callable[..., Settings]:
    """Settings with a unique set of topics and group on the session broker."""

    def make(**overrides: Any) -> Settings:
        tag = uuid.uuid4().hex[:8]
        base: dict[str, Any] = dict(
            bootstrap_servers=broker.bootstrap_servers,
            kafka_client=kafka_client,
            session_timeout_ms=6000,
            group_id=f"g-{tag}",
            # every group a test's processes join is its own: a member another test left behind
            # (killed, its session not yet expired) would otherwise stall this test's rebalance
            retrain_group_id=f"retrain-{tag}",
            label_studio_group_id=f"label-studio-{tag}",
            monitor_group_id=f"monitor-{tag}",
            samples_topic=f"samples-{tag}",
            predictions_topic=f"predictions-{tag}",
            review_topic=f"review-{tag}",
            labels_topic=f"labels-{tag}",
            models_topic=f"models-{tag}",
            dlq_topic=f"dlq-{tag}",
            retrain_requests_topic=f"retrain-requests-{tag}",
            metrics_port=0,
            metrics_host="127.0.0.1",
        )
        base.update(overrides)
        s = Settings(**base)
        ensure_topics(s, s.topics.all())
        return s

    return make


def registry_v1(root: Path, X: np.ndarray, y: np.ndarray, **settings: Any) -> Registry:
    """A registry whose CURRENT is v1, trained by ``train_initial`` on (X, y)."""
    reg = Registry(root)
    s = Settings(**settings)
    train_initial(X, y, reg, retrain=s.retrain, policy=s.policy, outlier_quantile=s.serving.outlier_quantile,
                  progress=lambda m: None)
    return reg


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits in a fixed shuffled order."""
    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(X))
    return X[order], y[order]


@pytest.fixture(scope="session")
def registry_template(tmp_path_factory: pytest.TempPathFactory, digits: tuple[np.ndarray, np.ndarray]) -> Path:
    """v1 from a small, weak start: 300 digits, 80% of them held out; trained once per session."""
    X, y = digits
    return registry_v1(tmp_path_factory.mktemp("template") / "registry", X[:300], y[:300], holdout_fraction=0.8).root


@pytest.fixture
def registry(tmp_path: Path, registry_template: Path) -> Registry:
    """A private copy of ``registry_template``: each test may promote, reject and append labels."""
    return Registry(shutil.copytree(registry_template, tmp_path / "registry", symlinks=True))


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """kind -> ZooModel, or the reason the exporter could not build it; built once per session."""
    from tests.compat.zoo import available_kinds, build_zoo

    skipped: dict[str, str] = {}
    models = build_zoo(tmp_path_factory.mktemp("zoo"), available_kinds(), skipped=skipped)
    return {**skipped, **{m.kind: m for m in models}}


@pytest.fixture
def example_model() -> tuple[Path, Path]:
    return example_paths()


def produce(settings: Settings, topic: str, records: list[tuple[Optional[bytes], Optional[bytes]]]) -> None:
    producer = make_producer(settings)
    try:
        errors = producer.send_all([OutRecord(topic, k, v) for k, v in records], 60)
        assert not any(errors), [e for e in errors if e]
    finally:
        producer.close()


def read_all(settings: Settings, topics: list[str], expect: int, timeout_s: float = DEADLINE_S,
             stop_when: Optional[Callable[[list[dict[str, Any]]], bool]] = None) -> list[dict[str, Any]]:
    """Read ``topics`` from the beginning until ``expect`` records (or ``stop_when``) or timeout."""
    reader = make_consumer(settings, topics, group_id=None)
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            batch = reader.poll_batch(5000, 300)
            for t, p, o, k, v in zip(batch.topics, batch.partitions, batch.offsets, batch.keys, batch.values):
                out.append({"topic": t, "partition": p, "offset": o, "key": k, "value": v})
            if len(out) >= expect and (stop_when is None or stop_when(out)):
                break
        # A short grace read shows whether anything unexpected follows.
        if len(out) >= expect:
            batch = reader.poll_batch(5000, 500)
            for t, p, o, k, v in zip(batch.topics, batch.partitions, batch.offsets, batch.keys, batch.values):
                out.append({"topic": t, "partition": p, "offset": o, "key": k, "value": v})
    finally:
        reader.close()
    return out


def read_headers(settings: Settings, topic: str, expect: int) -> list[dict[str, Any]]:
    """Read records with headers via kafka-python directly (the transport hides input headers)."""
    from kafka import KafkaConsumer

    c = KafkaConsumer(topic, bootstrap_servers=settings.connection.bootstrap_servers, auto_offset_reset="earliest",
                      enable_auto_commit=False, group_id=None, consumer_timeout_ms=3000)
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + DEADLINE_S
    try:
        while len(out) < expect and time.monotonic() < deadline:
            for tp, recs in c.poll(timeout_ms=500).items():
                for r in recs:
                    out.append({"key": r.key, "value": r.value, "headers": {k: v.decode() for k, v in r.headers}})
    finally:
        c.close()
    return out


def decoded(records: list[dict[str, Any]], topic: str) -> list[dict[str, Any]]:
    return [json.loads(r["value"]) for r in records if r["topic"] == topic]


@pytest.fixture
def triage_process(tmp_path: Path) -> Iterator[Callable[..., TriageProcess]]:
    """Start ``triage COMMAND EXTRA...`` processes (logs in tmp_path; ``env``: more environment);
    whatever still runs is killed at the end."""
    started: list[TriageProcess] = []

    def start(command: str, settings: Settings, *extra: str, env: Optional[dict[str, str]] = None) -> TriageProcess:
        p = TriageProcess(settings, [command, *extra], tmp_path, f"{command}-{len(started)}", extra_env=env)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


@pytest.fixture
def scorer_process(triage_process: Callable[..., TriageProcess]) -> Callable[..., TriageProcess]:
    """Start ``triage serve EXTRA...``: ``scorer_process(settings, *extra)``."""
    return lambda settings, *extra: triage_process("serve", settings, *extra)
