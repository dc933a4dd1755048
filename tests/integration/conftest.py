from __future__ import annotations

import dataclasses
import re
import uuid
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.kafka.topics import apply_topics, load_topics


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def isolated(kafka_settings: Settings, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings whose input and dead-letter topics are new and belong to this test alone."""
    tag = re.sub(r"[^A-Za-z0-9]", "-", request.node.name)[:60] + "-" + uuid.uuid4().hex[:6]
    settings = dataclasses.replace(
        kafka_settings,
        identity_topic=f"t.{tag}.identity",
        agent_topic=f"t.{tag}.agent",
        deadletter_topic=f"t.{tag}.dlq",
        alerts_topic=f"t.{tag}.alerts",
        scores_topic=f"t.{tag}.scores",
        quarantine_topic=f"t.{tag}.quarantine",
        approvals_topic=f"t.{tag}.approvals",
        acks_topic=f"t.{tag}.acks",
        audit_topic=f"t.{tag}.audit",
        audit_checkpoints_topic=f"t.{tag}.audit-checkpoints",
        models_topic=f"t.{tag}.models",
        agent_models_topic=f"t.{tag}.agent-models",
        reports_topic=f"t.{tag}.reports",
        feedback_topic=f"t.{tag}.feedback",
        worker_partitions=3,
    )
    path = tmp_path / "topics.yaml"
    path.write_text(
        "topics:\n"
        + "".join(
            f"  - {{name: {name}, partitions: 3}}\n"
            for name in (
                settings.identity_topic,
                settings.agent_topic,
                settings.deadletter_topic,
                settings.alerts_topic,
                settings.scores_topic,
                settings.quarantine_topic,
                settings.approvals_topic,
                settings.acks_topic,
                settings.feedback_topic,
            )
        )
        + "".join(
            f"  - {{name: {name}, partitions: 1}}\n"
            for name in (settings.audit_topic, settings.audit_checkpoints_topic,
                         settings.models_topic, settings.agent_models_topic,
                         settings.reports_topic)
        )
    )
    apply_topics(settings, load_topics(path))
    return settings
