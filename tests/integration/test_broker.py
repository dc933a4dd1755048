"""The managed broker: idempotent up, topics applied idempotently, restarts keep records."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.kafka.broker import Broker
from pipeline.kafka.clients import make_admin, make_producer, read_all
from pipeline.kafka.topics import apply_topics, load_topics


def test_up_on_a_running_broker_is_a_no_op(kafka_settings: Settings) -> None:
    broker = Broker(kafka_settings)
    pid = broker.pid()
    started, _ = broker.up()
    assert started is False
    assert broker.pid() == pid
    status = broker.status()
    assert status.answering and status.running


def test_declared_topics_exist_and_apply_is_idempotent(kafka_settings: Settings) -> None:
    specs = load_topics(kafka_settings.topics_file)
    report = apply_topics(kafka_settings, specs)
    assert report.created == [] and report.updated == []
    assert sorted(report.unchanged) == sorted(s.name for s in specs)
    md = make_admin(kafka_settings).list_topics(timeout=10)
    for spec in specs:
        assert len(md.topics[spec.name].partitions) == spec.partitions


def test_apply_grows_partitions_and_aligns_config(kafka_settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "topics.yaml"
    path.write_text(
        "topics:\n  - {name: t.grow, partitions: 1, config: {retention.ms: '1000000'}}\n"
    )
    assert apply_topics(kafka_settings, load_topics(path)).created == ["t.grow"]
    path.write_text(
        "topics:\n  - {name: t.grow, partitions: 3, config: {retention.ms: '2000000'}}\n"
    )
    assert apply_topics(kafka_settings, load_topics(path)).updated == ["t.grow"]
    assert apply_topics(kafka_settings, load_topics(path)).unchanged == ["t.grow"]
    md = make_admin(kafka_settings).list_topics("t.grow", timeout=10)
    assert len(md.topics["t.grow"].partitions) == 3
    path.write_text("topics:\n  - {name: t.grow, partitions: 2}\n")
    report = apply_topics(kafka_settings, load_topics(path))
    assert report.warnings and "cannot shrink" in report.warnings[0]


@pytest.mark.parametrize(
    "text, message",
    [
        ("topics: 3", "'topics' list"),
        ("topics:\n  - {name: 'bad name!'}", "invalid topic name"),
        ("topics:\n  - {name: a}\n  - {name: a}", "declared twice"),
        ("topics:\n  - {name: a, partitions: 0}", "positive integer"),
        ("topics:\n  - {name: custos.audit, config: {cleanup.policy: compact}}", "never be"),
    ],
)
def test_bad_topic_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_topics(path)


def test_restart_keeps_every_record(kafka_settings: Settings) -> None:
    topic = kafka_settings.identity_topic
    before = len(read_all(kafka_settings, topic, timeout_s=20))
    producer = make_producer(kafka_settings)
    for i in range(500):
        producer.produce(topic, key=f"restart-{i % 7}".encode(), value=f'{{"n":{i}}}'.encode())
    assert producer.flush(30) == 0

    broker = Broker(kafka_settings)
    assert broker.down() is True
    assert broker.status().answering is False
    started, _ = broker.up()
    assert started is True

    values = [m.value() for m in read_all(kafka_settings, topic, timeout_s=30)]
    assert len(values) == before + 500
    assert {f'{{"n":{i}}}'.encode() for i in range(500)} <= set(values)
    # A restart re-uses the formatted log directory: the topics are all still there.
    listed = set(make_admin(kafka_settings).list_topics(timeout=10).topics)
    assert {s.name for s in load_topics(kafka_settings.topics_file)} <= listed
