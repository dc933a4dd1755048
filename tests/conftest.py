"""Shared fixtures. Integration tests get one real Kafka 4.x broker per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.ops.localhost import free_port


@pytest.fixture(scope="session")
def kafka_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings pointing at a broker of its own, started once for this test session.

    Always a fresh broker on free ports (never CUSTOS_BOOTSTRAP's cluster): the tests
    restart it and count records, which they must not do to anyone else's Kafka.
    """
    from pipeline.kafka.broker import Broker
    from pipeline.kafka.topics import apply_topics, load_topics

    home = tmp_path_factory.mktemp("custos-home")
    # The jars are shared with `custos kafka up` so Maven copies them once per machine.
    libs = os.environ.get("CUSTOS_KAFKA_LIBS") or str(Path.home() / ".custos" / "kafka" / "libs")
    settings = Settings.from_env(
        {},
        home=str(home),
        kafka_libs=libs,
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        kafka_heap="512m",
    )
    broker = Broker(settings)
    broker.up()
    apply_topics(settings, load_topics(settings.topics_file))
    try:
        yield settings
    finally:
        broker.down()
