"""The CLI's no-broker behaviour and client-log handling, without a broker: the messages,
the rate limit, secret redaction, the client-log levels, and the announcement that fails
after the registry changed (a closed loopback port; no Kafka is ever reached)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import triage.cli as cli
from triage.runtime.broker import free_port
from triage.errors import AnnouncementPendingError, BrokerUnavailableError
from triage.lifecycle.registry import Registry


def _record(name: str, msg: str, *args: Any, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_broker_unavailable_message_names_address_attempt_and_fix() -> None:
    err = BrokerUnavailableError("localhost:9092", 30.0, "metadata request, confluent client, PLAINTEXT",
                                 "start one (`triage broker`) or set --bootstrap-servers", detail="Connection refused",
                                 note="registry unchanged")
    assert err.retriable
    assert err.message == (
        "no Kafka broker answered at localhost:9092 within 30 s (metadata request, confluent client, PLAINTEXT; "
        "last error: Connection refused); registry unchanged; start one (`triage broker`) or set --bootstrap-servers")
    assert "\n" not in err.message


def test_announcement_pending_says_what_changed_and_when_scorers_follow() -> None:
    msg = AnnouncementPendingError("v3", "promote", "triage.models", "gave up after 3 s").message
    assert msg.startswith("CURRENT = v3 in the registry")
    assert "pending" in msg and "--registry-poll-s" in msg and "triage models promote v3" in msg


def test_rate_limit_lets_a_client_message_through_once_per_window_and_counts_the_rest() -> None:
    now = [0.0]
    limit = cli.RateLimit(every_s=10.0, clock=lambda: now[0])
    first = _record("rdkafka", "Connect to %s failed (after %dms)", "127.0.0.1:1", 0)
    assert limit.filter(first)
    for ms in range(5):  # same text up to numbers: suppressed
        now[0] += 1.0
        assert not limit.filter(_record("rdkafka", "Connect to %s failed (after %dms)", "127.0.0.1:1", ms))
    assert limit.filter(_record("rdkafka", "another message"))
    now[0] = 10.5
    again = _record("rdkafka", "Connect to %s failed (after %dms)", "127.0.0.1:1", 7)
    assert limit.filter(again)
    assert again.getMessage().endswith("[5 more like this in the last 10 s]")
    assert limit.filter(_record("kafka.net.manager", "Connect failed"))
    for _ in range(3):  # triage's own records are never limited
        assert limit.filter(_record("triage.serve", "same"))


def test_redact_hides_secrets_in_any_record() -> None:
    rec = _record("kafka.admin.client", "config: %s", {"sasl_plain_password": "hunter2"}, level=logging.DEBUG)
    assert cli.Redact(["hunter2"]).filter(rec)
    assert "hunter2" not in rec.getMessage() and "**********" in rec.getMessage()


@pytest.mark.parametrize("level,client_logs,expected", [
    ("INFO", False, cli.HIDDEN), ("WARNING", False, cli.HIDDEN), ("DEBUG", False, logging.DEBUG),
    ("INFO", True, logging.WARNING), ("DEBUG", True, logging.DEBUG), ("ERROR", True, logging.WARNING),
])
def test_client_logs_are_debug_detail_unless_asked_for(level: str, client_logs: bool, expected: int) -> None:
    assert cli.client_log_level(level, client_logs) == expected


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_broker_gone_after_the_check_reports_a_pending_announcement(
        registry: Registry, client: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The preflight passed, then the broker vanished: CURRENT has changed, the command says
    the announcement is pending and exits non-zero, within about the connect timeout."""
    import triage.commands.models as models

    manifest = {k: v for k, v in registry.manifest("v1").items() if k not in ("version", "sha256", "path", "status")}
    v2 = registry.add_bundle(registry.model_path("v1").read_bytes(), manifest, registry.canary("v1"))
    monkeypatch.setattr(models, "check_broker", lambda settings, note="": None)
    monkeypatch.setattr(cli, "configure_logging", lambda *a, **k: None)
    for key in [k for k in __import__("os").environ if k.startswith("TRIAGE_")]:
        monkeypatch.delenv(key)
    rc = cli.main(["models", "promote", v2, "--registry", str(registry.root), "--bootstrap-servers",
                   f"127.0.0.1:{free_port()}", "--kafka-client", client, "--connect-timeout-s", "1"])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert registry.current() == v2
    assert err.startswith(f"triage models promote: CURRENT = {v2} in the registry") and "pending" in err


def test_held_back_logs_wait_for_emit_and_pass_the_handlers_filters() -> None:
    from triage.runtime.logs import held_back

    class Keep(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(self.format(record))

    root, keep = logging.getLogger(), Keep()
    keep.addFilter(cli.Redact(["hunter2"]))
    saved, root.handlers = root.handlers[:], [keep]
    try:
        with held_back() as emit:
            logging.getLogger("triage.model").warning("loaded with %s", "hunter2")
        assert keep.lines == [] and root.handlers == [keep]
        emit()
        emit()  # once only
        assert keep.lines == ["loaded with **********"]
        with held_back():
            logging.getLogger("triage.model").warning("dropped: the command ended first")
        assert len(keep.lines) == 1
    finally:
        root.handlers = saved
