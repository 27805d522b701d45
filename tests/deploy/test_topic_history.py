"""The deployments create every triage topic with the history its role needs, the same configs
``ensure_topics`` sets (``triage.transport.retention.topic_configs``), and give topics an older
stack created the whole history of the topics the system rebuilds state from."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, REPO
from triage.settings import TopicSettings
from triage.transport.retention import UNLIMITED, topic_configs

CREATE = re.compile(r"--create\b.*?--topic (\S+)(.*)$", re.M)
CONFIG = re.compile(r"--config (\S+?)=(\S+)")
ALTER = re.compile(r"--alter\b.*?--entity-name (\S+) --add-config (\S+)$", re.M)


def _compose_script() -> str:
    doc = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return str(doc["services"]["topic-init"]["command"][0])


def _k8s_script() -> str:
    docs: list[dict[str, Any]] = list(yaml.safe_load_all((DEPLOY / "k8s" / "base" / "topics.yaml").read_text()))
    job = next(d for d in docs if d["kind"] == "Job" and d["metadata"]["name"] == "triage-topics")
    return str(job["spec"]["template"]["spec"]["containers"][0]["args"][0])


def _configs(script: str) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """(topic -> configs it is created with, topic -> configs added to it when it exists)."""
    created = {m.group(1): dict(CONFIG.findall(m.group(2))) for m in CREATE.finditer(script)}
    altered = {m.group(1): dict(kv.split("=", 1) for kv in m.group(2).split(",")) for m in ALTER.finditer(script)}
    return created, altered


@pytest.mark.parametrize("script", [_compose_script, _k8s_script], ids=["compose", "k8s"])
def test_deployments_create_topics_with_the_configs_of_ensure_topics(script: Any) -> None:
    created, altered = _configs(script())
    topics = TopicSettings()
    assert set(created) == set(topics.all()), "every triage topic is created, nothing else"
    wanted = topic_configs(topics)
    for topic in topics.all():
        assert created[topic] == wanted.get(topic, {}), topic
    kept_whole = {t for t, c in wanted.items() if c == UNLIMITED}
    assert kept_whole == {topics.review_topic, topics.labels_topic}
    assert altered == {t: UNLIMITED for t in kept_whole}, "an existing topic keeps 7 days unless altered"
