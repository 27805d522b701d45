"""What the tests of the world's faults share: a real small (or read-only) file system under the
registry's ``data/``, a producer whose topics refuse writes, committed offsets of a group, and
labels that join."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import pytest

from tests.fixtures import produce
from triage.contracts import encode_label
from triage.examples import example_paths
from triage.settings import Settings
from triage.transport import Producer, make_producer

TMPFS_SIZE = "256k"


class SmallFs:
    """A size-limited tmpfs mounted at ``path`` (its old contents copied in): ``fill`` it,
    ``free`` it, make it ``read_only`` or ``writable`` again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"

    def fill(self) -> int:
        """Write a filler file until the file system is full; the bytes written."""
        written = 0
        with open(self.filler, "wb", buffering=0) as fh:
            try:
                while True:
                    written += fh.write(b"\0" * 4096)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
        return written

    def free(self) -> None:
        self.filler.unlink()

    def read_only(self) -> None:
        _mount("-o", "remount,ro", str(self.path))

    def writable(self) -> None:
        _mount("-o", "remount,rw", str(self.path))


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


@contextmanager
def small_fs(path: Path, size: str = TMPFS_SIZE) -> Iterator[SmallFs]:
    """``path`` (an existing directory) on a fresh tmpfs of ``size``; skips, naming the missing
    privilege, where mounting is not allowed."""
    keep = path.with_name(path.name + ".before")
    shutil.move(str(path), str(keep))
    path.mkdir()
    try:
        _mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        path.rmdir()
        shutil.move(str(keep), str(path))
        pytest.skip(f"mounting a tmpfs needs root or CAP_SYS_ADMIN (uid {os.getuid()}): {detail.strip()}")
    try:
        for item in keep.iterdir():
            shutil.copy2(item, path / item.name) if item.is_file() else shutil.copytree(item, path / item.name)
        yield SmallFs(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def send_labels(settings: Settings, n: int, prefix: str, *, features: bool = True) -> list[str]:
    """``n`` valid labels (classes of the bundled digits model) on the labels topic; their ids.
    With ``features`` they join without a review record; without, none can join."""
    with np.load(example_paths()[1]) as d:
        X, y = d["X"], d["y"]
    ids = [f"{prefix}{i}" for i in range(n)]
    records = [(sid.encode(), encode_label(sid, str(y[i % len(y)]), annotator="ann",
                                           features=X[i % len(X)].tolist() if features else None))
               for i, sid in enumerate(ids)]
    produce(settings, settings.topics.labels_topic, records)
    return ids


def committed(settings: Settings, group: str, topic: str) -> int:
    """Sum over partitions of the offsets ``group`` committed on ``topic`` (0 if none); an
    OffsetFetch that neither joins the group nor moves anything."""
    from kafka import KafkaConsumer, TopicPartition

    reader = KafkaConsumer(bootstrap_servers=settings.connection.bootstrap_servers, group_id=group,
                           enable_auto_commit=False)
    try:
        partitions = reader.partitions_for_topic(topic) or set()
        return sum(max(reader.committed(TopicPartition(topic, p)) or 0, 0) for p in partitions)
    finally:
        reader.close(autocommit=False)


# --- a topic that refuses writes (the embedded broker has no ACLs) ---------------------------


class _Delivered:
    """What a confluent delivery report carries about a message (topic, key, value)."""

    def __init__(self, topic: str, key: Optional[bytes], value: Optional[bytes]) -> None:
        self._t, self._k, self._v = topic, key, value

    def topic(self) -> str:
        return self._t

    def key(self) -> Optional[bytes]:
        return self._k

    def value(self) -> Optional[bytes]:
        return self._v


class RefusingConfluent:
    """A confluent_kafka.Producer whose deliveries to ``topics`` fail with librdkafka's
    TOPIC_AUTHORIZATION_FAILED while ``refusing`` is set (as a broker ACL would answer)."""

    def __init__(self, real: Any, topics: set[str], refusing: threading.Event) -> None:
        self._real, self._topics, self._refusing = real, topics, refusing
        self._refused: list[tuple[Any, _Delivered]] = []

    def produce(self, topic: str, value: Any = None, key: Any = None, partition: int = -1, on_delivery: Any = None,
                timestamp: int = 0, headers: Any = None) -> None:
        """confluent_kafka's signature, positional order included (the transport passes
        topic, value, key, partition, on_delivery positionally)."""
        if self._refusing.is_set() and topic in self._topics:
            self._refused.append((on_delivery, _Delivered(topic, key, value)))
            return
        self._real.produce(topic, value, key, partition, on_delivery, timestamp, headers=headers)

    def _report(self) -> None:
        from confluent_kafka import KafkaError

        refused, self._refused = self._refused, []
        for callback, msg in refused:
            callback(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "Broker: Topic authorization failed"), msg)

    def poll(self, timeout: float = 0.0) -> int:
        self._report()
        return int(self._real.poll(timeout))

    def flush(self, timeout: float = 10.0) -> int:
        left = int(self._real.flush(timeout))
        self._report()
        return left


class RefusingKafkaPython:
    """A kafka.KafkaProducer whose sends to ``topics`` fail with TopicAuthorizationFailedError
    while ``refusing`` is set."""

    def __init__(self, real: Any, topics: set[str], refusing: threading.Event) -> None:
        self._real, self._topics, self._refusing = real, topics, refusing

    def send(self, topic: str, value: Any = None, key: Any = None, headers: Any = None) -> Any:
        from kafka.errors import TopicAuthorizationFailedError
        from kafka.future import Future

        if self._refusing.is_set() and topic in self._topics:
            return Future().failure(TopicAuthorizationFailedError(f"Topic authorization failed: {topic}"))
        return self._real.send(topic, value=value, key=key, headers=headers)

    def flush(self, timeout: Optional[float] = None) -> None:
        self._real.flush(timeout=timeout)

    def close(self, timeout: Optional[float] = None) -> None:
        self._real.close(timeout=timeout)


def refusing_producer(s: Settings, topics: set[str], refusing: threading.Event) -> Producer:
    """The real producer of ``s``, its client wrapped to refuse ``topics`` for authorization."""
    producer: Any = make_producer(s)
    wrap = RefusingConfluent if s.connection.kafka_client == "confluent" else RefusingKafkaPython
    producer._p = wrap(producer._p, topics, refusing)
    return producer  # type: ignore[no-any-return]
