"""faust reads through aiokafka: it must decode every codec a confluent-kafka producer uses.

Without cramjam, aiokafka raises UnsupportedCodecError on the first lz4/snappy/zstd batch and
the faust worker dies; this test fails the same way if that dependency goes missing.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.config import Settings
from pipeline.kafka.clients import make_producer


@pytest.mark.parametrize("codec", ["lz4", "zstd", "snappy", "gzip"])
def test_aiokafka_reads_batches_compressed_by_confluent_kafka(
    isolated: Settings, codec: str
) -> None:
    topic = isolated.agent_topic
    producer = make_producer(isolated, **{"compression.type": codec})
    payloads = [f'{{"codec":"{codec}","n":{i},"pad":"{"x" * 200}"}}'.encode() for i in range(300)]
    for i, value in enumerate(payloads):
        producer.produce(topic, key=f"agent-{i % 5}".encode(), value=value)
    assert producer.flush(30) == 0

    async def consume() -> list[bytes]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=isolated.bootstrap_servers, enable_auto_commit=False
        )
        await consumer.start()
        try:
            parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
            if not parts:
                await consumer._client.force_metadata_update()  # topic metadata not cached yet
                parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            got: list[bytes] = []
            async with asyncio.timeout(30):
                while len(got) < len(payloads):
                    batches = await consumer.getmany(timeout_ms=500)
                    for records in batches.values():
                        got.extend(r.value for r in records if r.value is not None)
            return got
        finally:
            await consumer.stop()

    assert sorted(asyncio.run(consume())) == sorted(payloads)
