"""Factories for the fast confluent-kafka clients every Custos process uses."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from pipeline.config import Settings

# librdkafka logs to stderr by default (one line per failed reconnect); route it through
# logging so a broker that is still starting does not flood the terminal.
_LOG = logging.getLogger("custos.kafka.client")


def base_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {**settings.client_config(), "logger": _LOG}
    conf.update(overrides)
    return conf


def make_admin(settings: Settings, **overrides: Any) -> AdminClient:
    return AdminClient(base_config(settings, **overrides))


def make_producer(settings: Settings, **overrides: Any) -> Producer:
    """A batched, idempotent, compressed producer.

    ``murmur2_random`` matches the Java clients and aiokafka (which faust uses), so one
    identity's events land on the partition the faust worker expects for that key.
    """
    conf: dict[str, Any] = {
        **base_config(settings),
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
    return Producer(conf)


def make_consumer(settings: Settings, group_id: str | None = None, **overrides: Any) -> Consumer:
    """A consumer that commits only what the caller has finished with (no auto-commit)."""
    conf: dict[str, Any] = {
        **base_config(settings),
        "group.id": group_id or settings.group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.max.bytes": 52_428_800,
        "max.partition.fetch.bytes": 2_097_152,
    }
    conf.update(overrides)
    return Consumer(conf)
