"""A state write the broker refuses is seen, although the state producer asks for delivery
reports of failures only (``delivery.report.only.error``): the worker must stop, not go on
with state the changelog never got."""

from __future__ import annotations

import dataclasses
import os
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.config import Settings
from pipeline.stream.app import hot_clients
from pipeline.stream.hot import HotLoop
from pipeline.stream.offsets import SharedCheckpoint
from pipeline.stream.store import PartitionStore


def _loop(settings: Settings, changelog: str, tmp_path: Path, died: list[str]) -> HotLoop:
    clients = hot_clients(settings)
    store = PartitionStore(1, lambda p, k, v: None)
    return HotLoop(
        None, store, SharedCheckpoint(tmp_path / "shared.ckpt"),  # type: ignore[arg-type]
        consumer=clients.consumer, producer=clients.producer, changelog=changelog,
        kinds={}, restore=clients.restore, batch=10, within_s=0.1, commit_s=1.0,
        send_timeout_s=20.0, die=died.append,
    )  # fmt: skip


def test_refused_state_write_is_reported(kafka_settings: Settings, tmp_path: Path) -> None:
    settings = dataclasses.replace(kafka_settings, app_id=f"refused-{uuid.uuid4().hex[:6]}")
    changelog = f"{settings.app_id}-changelog"
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    # Records above 2 KB are refused by this topic (MSG_SIZE_TOO_LARGE from the broker).
    futures = admin.create_topics(
        [NewTopic(changelog, 1, 1, config={"max.message.bytes": "2048"})]
    )
    futures[changelog].result(30)
    died: list[str] = []
    loop = _loop(settings, changelog, tmp_path, died)

    loop.store["agt-1"] = b"\x04" + bytes(100)  # accepted
    assert loop._unwritten() is None and loop.failed is None

    loop.store["agt-2"] = b"\x04" + os.urandom(100_000)  # refused (incompressible)
    reason = loop._unwritten()
    assert reason is not None and "refused" in reason and changelog in reason
    loop.consumer.close()
