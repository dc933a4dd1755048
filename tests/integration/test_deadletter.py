"""Bad input through the real broker: every class lands in the dead-letter topic, intact."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import pytest

from pipeline.config import Settings
from pipeline.errors import KafkaError
from pipeline.kafka.clients import make_producer, read_all
from pipeline.kafka.ingest import Ingest
from pipeline.simulate.malformed import bad_samples, valid_logon


def _produce(settings: Settings, items: list[tuple[str, bytes | None, bytes | None]]) -> list[Any]:
    """Produce and return (topic, partition, offset) per item, in order."""
    producer = make_producer(settings)
    where: list[Any] = [None] * len(items)

    def report(i: int) -> Any:
        def cb(err: Any, msg: Any) -> None:
            assert err is None, err
            where[i] = (msg.topic(), msg.partition(), msg.offset())

        return cb

    for i, (topic, key, value) in enumerate(items):
        producer.produce(topic, key=key, value=value, on_delivery=report(i))
    assert producer.flush(30) == 0
    return where


def _consume_until(ingest: Ingest, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while ingest.stats.valid + ingest.stats.dead.total() < n and time.monotonic() < deadline:
        ingest.poll_batch(timeout=0.5)


def _retarget(
    settings: Settings, samples: list[Any]
) -> list[tuple[str, bytes | None, bytes | None]]:
    topic = {"identity.events": settings.identity_topic, "agent.events": settings.agent_topic}
    return [(topic[s.topic], s.key, s.value) for s in samples]


def test_every_bad_input_class_is_dead_lettered_with_bytes_reason_and_offset(
    isolated: Settings,
) -> None:
    now = int(time.time() * 1000)
    samples = bad_samples(now, tag="dlq")
    good = [
        (
            isolated.identity_topic,
            f"u{i}".encode(),
            json.dumps(valid_logon(f"ok-{i}", now)).encode(),
        )
        for i in range(20)
    ]
    items = _retarget(isolated, samples) + good
    where = _produce(isolated, items)

    ingest = Ingest(isolated, group_id="t-dlq")
    try:
        _consume_until(ingest, len(items))
    finally:
        ingest.close()
    assert ingest.stats.valid == len(good)
    expected: dict[str, int] = {}
    for s in samples:
        expected[s.reason] = expected.get(s.reason, 0) + 1
    assert ingest.stats.dead.by_reason() == expected

    dead = read_all(isolated, isolated.deadletter_topic, expect=len(samples))
    assert len(dead) == len(samples)
    by_source = {}
    for msg in dead:
        h = {k: v for k, v in msg.headers() or []}
        src = (h["custos.source.topic"].decode(), int(h["custos.source.partition"]),
               int(h["custos.source.offset"]))  # fmt: skip
        by_source[src] = (msg, h)
    for sample, (topic, partition, offset), item in zip(samples, where, items, strict=False):
        msg, h = by_source[(topic, partition, offset)]
        # The original bytes, unchanged (a tombstone has none: empty value plus a marker).
        assert msg.value() == (item[2] if item[2] is not None else b""), sample.reason
        if item[2] is None:
            assert h["custos.source.tombstone"] == b"1"
        assert msg.key() == item[1]
        assert h["custos.reason"].decode() == sample.reason
        assert h["custos.detail"]
        assert int(h["custos.dlq.time"]) >= now - 60_000


def test_offsets_are_not_committed_when_the_dead_letter_topic_fails(isolated: Settings) -> None:
    """Nothing is lost: if the dead-letter write fails, the batch is read again later."""
    now = int(time.time() * 1000)
    sample = bad_samples(now, tag="nocommit")[0]
    _produce(isolated, [(isolated.identity_topic, sample.key, sample.value)])

    broken = dataclasses.replace(isolated, deadletter_topic="t.does-not-exist")
    producer = make_producer(broken, **{"message.timeout.ms": 3000})
    ingest = Ingest(broken, group_id="t-nocommit", producer=producer)
    with pytest.raises(KafkaError, match="did not acknowledge"):
        _consume_until(ingest, 1)
    ingest.consumer.close()

    retry = Ingest(isolated, group_id="t-nocommit")
    try:
        _consume_until(retry, 1)
    finally:
        retry.close()
    assert retry.stats.dead.by_reason() == {sample.reason: 1}
    assert [m.value() for m in read_all(isolated, isolated.deadletter_topic, expect=1)] == [
        sample.value
    ]


def test_worker_keeps_running_after_bad_input(isolated: Settings) -> None:
    now = int(time.time() * 1000)
    bad = _retarget(isolated, bad_samples(now, tag="keep")[:3])
    later = [(isolated.identity_topic, b"u", json.dumps(valid_logon("after-bad", now)).encode())]
    _produce(isolated, bad + later)
    ingest = Ingest(isolated, group_id="t-keep")
    try:
        _consume_until(ingest, 4)
    finally:
        ingest.close()
    assert ingest.stats.valid == 1 and ingest.stats.dead.total() == 3
