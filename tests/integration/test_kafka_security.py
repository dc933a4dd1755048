"""The secure managed broker: TLS, one SCRAM principal per service, ACLs (issue 12.10).

A broker of its own (CUSTOS_KAFKA_SECURE) on free ports. Every principal tries to write every
topic whose writers the issue names; logins without TLS, with a wrong password or without the
CA fail; and the faust worker runs on it as principal ``worker`` (its internal topics, group
and outputs are all the ACLs allow it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaException

from pipeline.config import Settings, env_var
from pipeline.kafka.broker import Broker
from pipeline.kafka.clients import make_producer, read_all
from pipeline.kafka.topics import apply_topics, load_topics
from pipeline.ops.localhost import free_port
from pipeline.simulate.malformed import valid_logon


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    home = tmp_path_factory.mktemp("secure-home")
    libs = os.environ.get("CUSTOS_KAFKA_LIBS") or str(Path.home() / ".custos" / "kafka" / "libs")
    settings = Settings.from_env({}, home=str(home), kafka_libs=libs, kafka_port=free_port(),
                                 kafka_controller_port=free_port(), kafka_heap="512m",
                                 kafka_secure=True)  # fmt: skip
    broker = Broker(settings)
    broker.up()
    apply_topics(settings, load_topics(settings.topics_file))
    try:
        yield settings
    finally:
        broker.down()


def _write(settings: Settings, principal: str, topic: str) -> str:
    """"ok", or the error the broker answered a write of ``principal`` to ``topic`` with."""
    # Not idempotent: the question is the topic ACL, not the cluster-level producer id.
    producer = make_producer(settings.as_principal(principal),
                             **{"message.timeout.ms": 10_000, "enable.idempotence": False})
    result: list[str] = []

    def delivered(err: object, msg: object) -> None:
        result.append("ok" if err is None else str(err.name()))  # type: ignore[attr-defined]

    try:
        producer.produce(topic, key=b"k", value=b"{}", on_delivery=delivered)
        producer.flush(20)
    except KafkaException as exc:  # fatal: the idempotent producer was refused outright
        return str(exc.args[0].name())
    return result[0] if result else "no answer"


def test_only_the_service_that_owns_a_topic_may_write_it(secure: Settings) -> None:
    s = secure
    writers = {
        s.identity_topic: {"producer"},
        s.agent_topic: {"producer", "broker"},  # the credential broker reports refused uses
        s.alerts_topic: {"worker", "responder"},  # responders raise "quarantine failed"
        s.scores_topic: {"worker"},
        s.quarantine_topic: {"worker", "analyst"},  # analysts' approvals and releases
        s.approvals_topic: {"worker"},
        s.acks_topic: {"responder"},
        s.audit_topic: {"auditor"},
        s.audit_checkpoints_topic: {"auditor"},
    }
    principals = ("worker", "responder", "auditor", "broker", "producer", "analyst", "console")
    got = {(p, t): _write(s, p, t) for t in writers for p in principals}
    allowed = {k for k, v in got.items() if v == "ok"}
    expected = {(p, t) for t, who in writers.items() for p in who}
    assert allowed == expected, {k: v for k, v in got.items() if (k in allowed) != (k in expected)}
    refused = {v for k, v in got.items() if k not in expected}
    assert refused <= {"TOPIC_AUTHORIZATION_FAILED", "CLUSTER_AUTHORIZATION_FAILED"}, refused
    print(f"{len(got)} writes tried: {len(allowed)} allowed, {len(got) - len(allowed)} refused")


def _connects(conf: dict[str, str]) -> bool:
    """Whether a client with ``conf`` gets metadata from the broker."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({**conf, "socket.timeout.ms": 3000, "log_level": 0})
    try:
        admin.list_topics(timeout=6)
    except KafkaException:
        return False
    return True


def test_no_login_without_tls_the_right_password_and_the_ca(secure: Settings) -> None:
    good = secure.as_principal("producer").client_config()
    assert _connects(good)
    assert not _connects({"bootstrap.servers": good["bootstrap.servers"]})  # plaintext
    assert not _connects({**good, "sasl.password": "guessed"})
    no_ca = {k: v for k, v in good.items() if k != "ssl.ca.location"}
    assert not _connects({**no_ca, "ssl.ca.location": "probe"})  # the system CAs: untrusted
    assert not _connects({**good, "security.protocol": "SASL_PLAINTEXT"})
    mode = (secure.kafka_security_path / "principals" / "worker.password").stat().st_mode
    assert mode & 0o077 == 0  # passwords readable by their owner only


def test_the_worker_runs_as_its_own_principal(secure: Settings, tmp_path: Path) -> None:
    env = dict(os.environ)
    for name, value in {"home": secure.home, "kafka_libs": secure.kafka_libs,
                        "kafka_port": secure.kafka_port, "kafka_secure": "true",
                        "kafka_controller_port": secure.kafka_controller_port,
                        "emit_scores": "true", "worker_web_port": free_port(),
                        "worker_datadir": tmp_path / "data", "worker_batch_within_s": "0.05",
                        "app_id": secure.app_id}.items():  # fmt: skip  (its ACLs name it)
        env[env_var(name)] = str(value)
    log = tmp_path / "worker.log"
    worker = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "worker", "--loglevel", "info"],
        env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        producer = make_producer(secure.as_principal("producer"))
        doc = valid_logon("secure-1", int(time.time() * 1000) - 1000)
        producer.produce(secure.identity_topic, key=doc["user"]["uid"].encode(),
                         value=json.dumps(doc).encode())  # fmt: skip
        assert producer.flush(30) == 0
        console = secure.as_principal("console")
        deadline = time.monotonic() + 90
        while not read_all(console, secure.scores_topic, timeout_s=2):
            assert time.monotonic() < deadline and worker.poll() is None, log.read_text()[-3000:]
            time.sleep(1)
        assert "AUTHORIZATION_FAILED" not in log.read_text()
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
