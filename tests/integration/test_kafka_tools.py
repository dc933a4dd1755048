"""Kafka's own tools (``custos kafka tools``) from the cached jars against real brokers: the
plain test broker (a consumer group's committed offsets and lag as Kafka reports them) and the
secure one (TLS + SCRAM from the generated client properties; a wrong password is refused)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from click.testing import CliRunner

from pipeline.config import Settings
from pipeline.kafka.broker import Broker
from pipeline.kafka.clients import make_consumer, make_producer
from pipeline.kafka.tools import java_properties, tool_command, write_properties


def _run(settings: Settings, name: str, *args: str, client: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    client = client or settings.client_config()
    props = write_properties(java_properties(client))
    try:
        cmd = tool_command(Broker(settings).tool_jvm(), name, list(args),
                           client["bootstrap.servers"], props)  # fmt: skip
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    finally:
        props.unlink()


def test_consumer_group_lag_as_kafka_itself_reports_it(kafka_settings: Settings) -> None:
    topic, group = f"tools-{uuid.uuid4().hex[:8]}", f"tools-g-{uuid.uuid4().hex[:8]}"
    from pipeline.kafka.topics import TopicSpec, apply_topics

    apply_topics(kafka_settings, [TopicSpec(topic, 1, 1, {})])
    producer = make_producer(kafka_settings)
    for i in range(5):
        producer.produce(topic, key=b"k", value=str(i).encode())
    assert producer.flush(30) == 0
    consumer = make_consumer(kafka_settings, group)
    consumer.subscribe([topic])
    got = []
    while len(got) < 3:
        m = consumer.poll(10)
        assert m is not None, "no record within 10 s"
        got.append(m)
    consumer.commit(message=got[-1], asynchronous=False)
    consumer.close()

    out = _run(kafka_settings, "consumer-groups", "--describe", "--group", group)
    assert out.returncode == 0, out.stderr
    row = next(line.split() for line in out.stdout.splitlines() if topic in line)
    # GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG ...
    assert row[1:6] == [topic, "0", "3", "5", "2"], out.stdout
    offsets = _run(kafka_settings, "get-offsets", "--topic", topic)
    assert offsets.stdout.strip() == f"{topic}:0:5", offsets.stdout + offsets.stderr


def test_the_tools_log_in_to_the_secure_broker_and_a_wrong_password_does_not(
    tmp_path: Path,
) -> None:
    import os

    from pipeline.ops.localhost import free_port

    libs = os.environ.get("CUSTOS_KAFKA_LIBS") or str(Path.home() / ".custos" / "kafka" / "libs")
    secure = Settings.from_env({}, home=str(tmp_path / "home"), kafka_libs=libs,
                               kafka_port=free_port(), kafka_controller_port=free_port(),
                               kafka_heap="512m", kafka_secure=True)  # fmt: skip
    broker = Broker(secure)
    broker.up()
    try:
        admin = secure.as_principal("admin")
        conf = admin.client_config()
        assert conf["security.protocol"] == "SASL_SSL"
        ok = _run(admin, "topics", "--list", client=conf)
        assert ok.returncode == 0, ok.stderr
        bad = _run(admin, "topics", "--list", client={**conf, "sasl.password": "wrong"})
        assert bad.returncode != 0 and "Authentication failed" in (bad.stdout + bad.stderr)
        # The CLI: no tool name lists them; an unknown one is an error.
        from pipeline.cli.main import main

        listed = CliRunner().invoke(main, ["kafka", "tools"])
        assert listed.exit_code == 0 and "consumer-groups" in listed.output
        assert CliRunner().invoke(main, ["kafka", "tools", "nope"]).exit_code == 2
    finally:
        broker.down()
