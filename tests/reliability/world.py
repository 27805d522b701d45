"""What the tests of the world's faults share: a real small (or read-only) file system under the
registry's ``data/``, committed offsets of a group, and labels that join."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from tests.fixtures import produce
from triage.contracts import encode_label
from triage.examples import example_paths
from triage.settings import Settings

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
