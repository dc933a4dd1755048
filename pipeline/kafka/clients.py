"""Factories for the Kafka clients every Custos process uses (confluent-kafka; faust and
aiokafka get their security settings from here too)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any, Final

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from pipeline.config import Settings

# librdkafka logs to stderr by default (one line per failed reconnect); route it through
# logging so a broker that is still starting does not flood the terminal.
_LOG = logging.getLogger("custos.kafka.client")


def base_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """The settings every client shares (servers, TLS/SASL, log routing), then ``overrides``.

    ``logger=None`` leaves librdkafka's log on stderr, its default.
    """
    conf: dict[str, Any] = {**settings.client_config(), "logger": _LOG}
    conf.update(overrides)
    if conf["logger"] is None:
        del conf["logger"]
    return conf


def make_admin(settings: Settings, **overrides: Any) -> AdminClient:
    return AdminClient(base_config(settings, **overrides))


def make_producer(settings: Settings, **overrides: Any) -> Producer:
    """A batched, idempotent, compressed producer.

    ``murmur2_random`` matches the Java clients and aiokafka (which faust uses), so one
    identity's events land on the partition the worker expects for that key.
    """
    conf: dict[str, Any] = {
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": settings.compression,
        "linger.ms": 20,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 500_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "message.max.bytes": 2_097_152,
        "partitioner": "murmur2_random",
    }
    conf.update(overrides)
    return Producer(base_config(settings, **conf))


def make_consumer(
    settings: Settings,
    group_id: str | None = None,
    *,
    manual_commit: bool = True,
    bulk_fetch: bool = True,
    **overrides: Any,
) -> Consumer:
    """A consumer in group ``group_id`` (``settings.group_id`` by default).

    ``manual_commit``: it commits only what the caller has finished with (no auto-commit),
    and a group with no commit yet starts at the earliest record. ``bulk_fetch``: larger
    fetches, for the ingest loop. Readers that only assign partitions or read watermarks
    turn both off: their group id is one the client requires, never joined.
    """
    conf: dict[str, Any] = {"group.id": group_id or settings.group_id}
    if manual_commit:
        conf.update({"enable.auto.commit": False, "auto.offset.reset": "earliest"})
    if bulk_fetch:
        conf.update({"fetch.max.bytes": 52_428_800, "max.partition.fetch.bytes": 2_097_152})
    conf.update(overrides)
    return Consumer(base_config(settings, **conf))


_ELECTING: Final = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                              KafkaError.UNKNOWN_TOPIC_OR_PART})  # fmt: skip


def _watermarks(consumer: Consumer, tp: TopicPartition, attempts: int = 20) -> tuple[int, int]:
    """Watermark offsets, retried while a new topic's leader is still being elected."""
    for attempt in range(attempts):
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            return int(low), int(high)
        except KafkaException as exc:
            err = exc.args[0]
            # librdkafka does not flag these retriable, yet they only mean "not elected yet".
            transient = err.retriable() or err.code() in _ELECTING
            if attempt == attempts - 1 or not transient:
                raise
            time.sleep(0.25)
    raise AssertionError("unreachable")


def read_all(
    settings: Settings, topic: str, *, expect: int | None = None, timeout_s: float = 30.0
) -> list[Message]:
    """Every record of ``topic`` from the beginning (no group, no commits).

    Stops at the end of all partitions as they were when called, or once ``expect``
    records arrived, or at ``timeout_s``. With ``expect`` it waits for records still to come
    (an empty topic is not "done"). For tests, exports and inspections.
    """
    consumer = Consumer(
        base_config(settings, **{"group.id": "custos-read-all", "enable.auto.commit": False})
    )
    try:
        md = consumer.list_topics(topic, timeout=10)
        parts = md.topics[topic].partitions
        if expect is not None:
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
            waited: list[Message] = []
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and len(waited) < expect:
                waited.extend(m for m in consumer.consume(num_messages=10_000, timeout=0.5)
                              if m.error() is None)  # fmt: skip
            return waited
        ends = {}
        tps = []
        for p in parts:
            low, high = _watermarks(consumer, TopicPartition(topic, p))
            if high > low:
                ends[p] = high
                tps.append(TopicPartition(topic, p, OFFSET_BEGINNING))
        out: list[Message] = []
        if not tps:
            return out
        consumer.assign(tps)
        deadline = time.monotonic() + timeout_s
        done: set[int] = set()
        while time.monotonic() < deadline and len(done) < len(ends):
            for msg in consumer.consume(num_messages=10_000, timeout=0.5):
                if msg.error() is not None:
                    continue
                out.append(msg)
                if (msg.offset() or 0) + 1 >= ends[msg.partition() or 0]:
                    done.add(msg.partition() or 0)
        return out
    finally:
        consumer.close()


def make_hot_consumer(settings: Settings, group_id: str) -> Consumer:
    """The worker's per-event consumer: large batched fetches, no auto-commit.

    ``range`` assignment, not cooperative-sticky: the worker's input, re-keyed, signal and
    feedback topics share one partition count, and only the range assignor gives one
    member the same partition numbers of all of them - identity X's events, signals and
    feedback must reach the worker that holds X's state. ``fetch.queue.backoff.ms`` 10
    instead of 1000: the fetcher refills its queue as soon as the loop drained it.
    """
    conf: dict[str, Any] = {
        "partition.assignment.strategy": "range",
        "fetch.queue.backoff.ms": 10,
        "queued.min.messages": 100_000,
        "enable.partition.eof": False,
        "session.timeout.ms": 45_000,
        "max.poll.interval.ms": 300_000,
    }
    return make_consumer(settings, group_id, **conf)


def read_partition(
    settings: Settings, topic: str, partition: int, timeout_s: float = 300.0
) -> Iterator[Message]:
    """Every record of one partition, from the beginning to its end as it was when called.

    The worker restores a partition's identity state from its changelog with this (no group:
    assigned, never committed). Raises KafkaError if the end is not reached in ``timeout_s``.
    """
    from pipeline.errors import KafkaError as CustosKafkaError

    consumer = make_consumer(settings, f"{settings.app_id}-restore", bulk_fetch=True)
    try:
        tp = TopicPartition(topic, partition)
        low, high = _watermarks(consumer, tp)
        if high <= low:
            return
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        deadline = time.monotonic() + timeout_s
        while True:
            if time.monotonic() > deadline:
                raise CustosKafkaError(f"restoring {topic}[{partition}]: end offset {high} "
                                       f"not reached in {timeout_s:.0f} s")  # fmt: skip
            got = consumer.consume(num_messages=10_000, timeout=0.5)
            for msg in got:
                if msg.error() is not None:
                    continue
                yield msg
                if (msg.offset() or 0) + 1 >= high:
                    return
            if not got and consumer.position([tp])[0].offset >= high:
                return  # compaction can leave the last offsets without a record
    finally:
        consumer.close()


def group_lag(settings: Settings, group: str, topics: list[str]) -> int:
    """Records of ``topics`` that consumer group ``group`` has not committed yet."""
    consumer = Consumer(base_config(settings, **{"group.id": group}))
    try:
        parts = []
        for topic in topics:
            md = consumer.list_topics(topic, timeout=10)
            parts += [TopicPartition(topic, p) for p in md.topics[topic].partitions]
        total = 0
        for tp in consumer.committed(parts, timeout=10) if parts else []:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            total += high - (tp.offset if tp.offset >= 0 else low)
        return total
    finally:
        consumer.close()


def faust_auth(settings: Settings) -> dict[str, Any]:
    """faust's ``broker_credentials`` for a secured cluster (nothing for PLAINTEXT)."""
    auth = settings.kafka_auth()
    if auth.protocol == "PLAINTEXT":
        return {}
    import faust  # only the worker needs it: the other clients stay faust-free

    if auth.username:
        creds: Any = faust.SASLCredentials(username=auth.username, password=auth.password,
                                           ssl_context=auth.ssl_context(),
                                           mechanism=auth.mechanism)  # fmt: skip
    else:
        creds = faust.SSLCredentials(auth.ssl_context())
    return {"broker_credentials": creds}


def aiokafka_auth(settings: Settings) -> dict[str, Any]:
    """The same for a plain aiokafka client (control-topic readers)."""
    auth = settings.kafka_auth()
    if auth.protocol == "PLAINTEXT":
        return {}
    out: dict[str, Any] = {"security_protocol": auth.protocol, "ssl_context": auth.ssl_context()}
    if auth.username:
        out.update(sasl_mechanism=auth.mechanism, sasl_plain_username=auth.username,
                   sasl_plain_password=auth.password)  # fmt: skip
    return out
