"""The tests' S3 server fails at once, naming the cause, on a nearly full disk (a stop's CI once
lost 18 minutes to every S3 test retrying writes SeaweedFS could never store)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.reliability.world import small_fs
from tests.s3server import WeedS3


def test_on_a_nearly_full_disk_the_s3_server_refuses_to_start_and_says_why(tmp_path: Path) -> None:
    (tmp_path / "s3").mkdir()
    with small_fs(tmp_path / "s3", size="1g") as fs:
        fd = os.open(fs.path / "ballast", os.O_CREAT | os.O_WRONLY)
        try:  # 4 MiB left: SeaweedFS makes no volume (it kept 0 of 1 GiB free volumes here)
            os.posix_fallocate(fd, 0, (1024 - 4) * 2**20)
        finally:
            os.close(fd)
        server = WeedS3(fs.path / "weed")
        try:
            with pytest.raises(RuntimeError, match=r"did not store an object .* [0-4] MiB are free"):
                server.start(timeout=15)
            assert server.process is None  # stopped, not left running
        finally:
            server.stop(grace_s=2)
