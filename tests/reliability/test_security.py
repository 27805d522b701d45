"""Security settings: TLS/SASL mapping, secrets never shown, bounded sizes, bind address.

What the bundled broker (Tansu 0.6.0) can and cannot check end to end:
- ``--authentication`` makes it demand SASL, but users can only be created over an
  authenticated connection and the storage is memory-only, so no user can ever log in:
  the test below proves the scorer speaks SASL/SCRAM on the wire and fails cleanly.
- ``--cert``/``--key`` do not give a TLS listener (0.6.0 refuses the pair and serves plain
  TCP with either alone), so TLS is checked as configuration mapping only.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient
from prometheus_client import CollectorRegistry

from tests.fixtures import REPO
from triage.runtime.broker import EmbeddedBroker
from triage.cli import build_parser
from triage.runtime.http import OpsServer
from triage.settings import Settings
from triage.transport.base import Subscription, client_sizes
from triage.transport.kafka_python import client_config

SECRET = "hunter2-do-not-print"
KEY_SECRET = "key-pass-do-not-print"


def _secure(**extra: object) -> Settings:
    return Settings(
        bootstrap_servers="broker-1:9093", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
        sasl_username="scorer", sasl_password=SECRET, ssl_cafile=Path("/etc/ca.pem"),
        ssl_certfile=Path("/etc/client.pem"), ssl_keyfile=Path("/etc/client.key"),
        ssl_key_password=KEY_SECRET, **extra,
    )


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_and_tls_settings_map_to_the_kafka_client(mechanism: str) -> None:
    cfg = client_config(_secure().replace(**{"sasl_mechanism": mechanism}))
    assert cfg["security_protocol"] == "SASL_SSL"
    assert cfg["sasl_mechanism"] == mechanism
    assert cfg["sasl_plain_username"] == "scorer" and cfg["sasl_plain_password"] == SECRET
    assert (cfg["ssl_cafile"], cfg["ssl_certfile"], cfg["ssl_keyfile"]) == ("/etc/ca.pem", "/etc/client.pem", "/etc/client.key")
    assert cfg["ssl_password"] == KEY_SECRET
    # every key is one the kafka-python clients know (a typo would be rejected at start-up)
    for client in (KafkaProducer, KafkaConsumer, KafkaAdminClient):
        assert set(cfg) <= set(client.DEFAULT_CONFIG), set(cfg) - set(client.DEFAULT_CONFIG)


def test_plaintext_maps_to_no_credentials() -> None:
    cfg = client_config(Settings())
    assert cfg["security_protocol"] == "PLAINTEXT"
    assert not any(k.startswith(("sasl_", "ssl_")) for k in cfg)


def test_secrets_are_secretstr_and_never_rendered() -> None:
    s = _secure()
    assert s.connection.sasl_password is not None and s.connection.sasl_password.get_secret_value() == SECRET
    for text in (repr(s), str(s), str(s.flat()), repr(s.connection)):
        assert SECRET not in text and KEY_SECRET not in text


def test_sasl_without_credentials_is_a_config_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "triage", "serve", "--security-protocol", "SASL_SSL"],
        capture_output=True, text=True, cwd=REPO, timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )
    assert proc.returncode == 2, proc.stderr
    assert "TRIAGE_SASL_PASSWORD" in proc.stderr


def test_help_never_shows_a_secret_from_the_environment() -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "TRIAGE_SASL_PASSWORD": SECRET, "TRIAGE_SSL_KEY_PASSWORD": KEY_SECRET}
    proc = subprocess.run([sys.executable, "-m", "triage", "serve", "--help"], capture_output=True, text=True,
                          cwd=REPO, timeout=60, env=env)
    assert proc.returncode == 0
    assert "--sasl-password" in proc.stdout and "--ssl-key-password" in proc.stdout
    assert SECRET not in proc.stdout + proc.stderr and KEY_SECRET not in proc.stdout + proc.stderr
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    assert SECRET not in serve.format_help()


def test_scram_against_an_authenticating_broker_fails_cleanly_without_leaking(tmp_path: Path) -> None:
    """The broker demands SASL and knows no users: the scorer must attempt SCRAM, give up
    with a clear message (exit 1, no traceback) and print the password nowhere, even at DEBUG."""
    log = tmp_path / "tansu.log"
    with EmbeddedBroker(log_file=log, extra_args=["--authentication"]) as broker:
        model = REPO / "triage" / "examples" / "digits_mlp.onnx"
        proc = subprocess.run(
            [sys.executable, "-m", "triage", "serve", "--bootstrap-servers", broker.bootstrap_servers,
             "--security-protocol", "SASL_PLAINTEXT", "--sasl-mechanism", "SCRAM-SHA-512",
             "--sasl-username", "scorer", "--model", str(model), "--metrics-port", "0",
             "--metrics-host", "127.0.0.1", "--log-level", "DEBUG"],
            capture_output=True, text=True, cwd=REPO, timeout=120,
            env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "TRIAGE_SASL_PASSWORD": SECRET},
        )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert "triage serve: kafka: cannot connect to" in out and "sasl_" in out
    assert "Traceback (most recent call last)" not in out.split("triage serve:")[-1]
    assert SECRET not in out
    assert SECRET not in log.read_text(errors="replace")


def test_metrics_bind_where_told() -> None:
    ops = OpsServer("127.0.0.2", 0, CollectorRegistry(), lambda: {"ok": True}).start()
    try:
        assert ops.httpd.server_address[0] == "127.0.0.2"
        with urllib.request.urlopen(f"http://127.0.0.2:{ops.port}/healthz", timeout=5) as r:
            assert r.status == 200
        with pytest.raises(OSError):  # not on the other loopback address
            socket.create_connection(("127.0.0.1", ops.port), timeout=2).close()
    finally:
        ops.stop()


def test_sizes_are_bounded() -> None:
    fields = dict(Settings.fields())
    assert any(getattr(m, "le", None) == 100_000 for m in fields["batch_size"].metadata)
    s = Settings(max_message_bytes=2_000_000, batch_size=500)
    from triage.transport import kafka_python

    # the consumer's fetch sizes follow max_message_bytes (not unbounded)
    consumer_kwargs: dict[str, object] = {}

    class Recorder:
        def __init__(self, **kwargs: object) -> None:
            consumer_kwargs.update(kwargs)

        def subscribe(self, *args: object, **kwargs: object) -> None:
            return None

    original = kafka_python.KafkaConsumer
    kafka_python.KafkaConsumer = Recorder  # type: ignore[misc,assignment]
    try:
        kafka_python.make_consumer(s, Subscription(("t",), group_id="g"))
    finally:
        kafka_python.KafkaConsumer = original  # type: ignore[misc]
    assert consumer_kwargs["max_poll_records"] == 500
    assert consumer_kwargs["max_partition_fetch_bytes"] == 2_000_000 + 1024
    assert consumer_kwargs["fetch_max_bytes"] == 8 * 1024 * 1024  # the one floor both clients use (base.FETCH_FLOOR)
    assert consumer_kwargs["fetch_max_bytes"] == client_sizes(2_000_000, 500).fetch_bytes
