"""kill -9 of the Kafka broker itself while events stream through the worker.

A broker of its own (it is killed). Events are produced at a steady pace; mid-stream the broker
JVM gets SIGKILL and is started again on the same data directory. Every event the producer saw
acknowledged must be on the topic and scored, none applied twice beyond the unit in flight; a
worker that stopped because a write was refused during the outage is restarted, as a
supervisor would.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from pipeline.config import Settings, env_var
from pipeline.kafka.broker import Broker
from pipeline.kafka.clients import make_producer, read_all
from pipeline.kafka.topics import apply_topics, load_topics
from pipeline.ops.localhost import free_port
from tests.integration.test_worker import _start

N = 3_000
BATCH = 100


@pytest.fixture
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    home = tmp_path_factory.mktemp("kill-home")
    libs = os.environ.get("CUSTOS_KAFKA_LIBS") or str(Path.home() / ".custos" / "kafka" / "libs")
    settings = Settings.from_env({}, home=str(home), kafka_libs=libs, kafka_port=free_port(),
                                 kafka_controller_port=free_port(), kafka_heap="512m")  # fmt: skip
    broker = Broker(settings)
    broker.up()
    apply_topics(settings, load_topics(settings.topics_file))
    try:
        yield settings
    finally:
        broker.down()


def _event(i: int, t: int) -> tuple[bytes, bytes]:
    user = f"usr-kill-{i % 25:02d}"
    doc = {
        "class_uid": 3002, "category_uid": 3, "activity_id": 1, "type_uid": 300201,
        "time": t, "status_id": 1, "user": {"uid": user, "type_id": 1},
        "metadata": {"uid": f"k-{i}", "version": "1.8.0", "product": {"name": "itest"}},
        "src_endpoint": {"ip": "10.0.0.7", "location": {"country": "DE"}},
    }  # fmt: skip
    return user.encode(), json.dumps(doc).encode()


def test_broker_killed_mid_stream_loses_nothing_acknowledged(
    own_broker: Settings, tmp_path: Path
) -> None:
    s = own_broker
    env = dict(os.environ)
    for name, value in {"home": s.home, "kafka_libs": s.kafka_libs, "kafka_port": s.kafka_port,
                        "kafka_controller_port": s.kafka_controller_port, "emit_scores": "true",
                        "worker_web_port": free_port(), "worker_datadir": tmp_path / "data",
                        "worker_batch": BATCH, "worker_batch_within_s": "0.05",
                        "worker_partitions": "6",
                        "app_id": f"itest-bkill-{int(time.time())}"}.items():  # fmt: skip
        env[env_var(name)] = str(value)
    log = tmp_path / "worker.log"
    acked: list[str] = []
    failed: list[str] = []
    start_ms = int(time.time() * 1000) - 3_600_000

    def paced() -> None:
        producer = make_producer(s)

        def delivered(err: object, msg: object) -> None:
            uid = json.loads(msg.value())["metadata"]["uid"]  # type: ignore[attr-defined]
            (failed if err is not None else acked).append(uid)

        for i in range(N):
            key, value = _event(i, start_ms + i * 1000)
            producer.produce(s.identity_topic, key=key, value=value, on_delivery=delivered)
            producer.poll(0)
            if i % 50 == 49:
                time.sleep(0.1)
        producer.flush(120)

    worker = _start(env, log)
    restarts = 0
    feeder = threading.Thread(target=paced, daemon=True)
    feeder.start()
    broker = Broker(s)
    try:
        deadline = time.monotonic() + 60
        while len(acked) < N // 3:
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        pid = broker.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # the JVM, mid-stream
        while broker.pid() is not None:
            time.sleep(0.1)
        time.sleep(3)
        broker.up()
        feeder.join(180)
        deadline = time.monotonic() + 180
        while True:
            if worker.poll() is not None:  # stopped on a refused write: restart it
                restarts += 1
                assert restarts <= 3, log.read_text()[-3000:]
                worker = _start(env, log)
            scored = Counter(msgspec.json.decode(m.value())["event_uid"]
                             for m in read_all(s, s.scores_topic, timeout_s=3))  # fmt: skip
            if set(acked) <= set(scored):
                break
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
    on_topic = Counter(json.loads(m.value())["metadata"]["uid"]
                       for m in read_all(s, s.identity_topic, timeout_s=5))  # fmt: skip
    twice = sum(n - 1 for n in scored.values() if n > 1)
    print(f"broker kill: produced {N}, acknowledged {len(acked)}, failed {len(failed)}, "
          f"on the topic {len(on_topic)}, scored {len(scored)}, scored twice {twice}, "
          f"worker restarts {restarts}")  # fmt: skip
    assert set(acked) <= set(on_topic)  # every acknowledged event survived the kill
    assert max(on_topic.values()) == 1  # the idempotent producer wrote none twice
    assert set(acked) <= set(scored)
    assert twice <= BATCH * (restarts + 1)  # at most the unit in flight, per stop
