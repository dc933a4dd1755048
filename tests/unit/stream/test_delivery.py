"""The outbox: every output acknowledged before anything that depends on it; a refusal stops."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pipeline.stream.delivery import Outbox, OutputRefused


class _Topic:
    def __init__(self, name: str, fail_send: bool = False, fail_ack: bool = False) -> None:
        self.name, self.fail_send, self.fail_ack = name, fail_send, fail_ack
        self.sent: list[bytes | None] = []

    def get_topic_name(self) -> str:
        return self.name

    async def send(self, key: Any = None, value: Any = None, headers: Any = None,
                   force: bool = False) -> Any:  # fmt: skip
        assert force, "outputs are sent at once, not at commit time"
        if self.fail_send:
            raise RuntimeError("topic not found")
        self.sent.append(value)
        ack = asyncio.get_running_loop().create_future()
        if self.fail_ack:
            ack.set_exception(RuntimeError("NOT_ENOUGH_REPLICAS"))
        else:
            ack.set_result(None)
        return ack


def test_callbacks_run_only_after_every_output_is_acknowledged() -> None:
    died: list[str] = []
    out = Outbox(1.0, died.append)
    counted: list[int] = []

    async def go() -> int:
        topic = _Topic("custos.alerts")
        await out.send(topic, b"k", b"v1")
        await out.send(topic, b"k", b"v2")
        out.then.append(lambda: counted.append(1))
        assert counted == []  # sent is not delivered
        return await out.delivered()

    assert asyncio.run(go()) == 2
    assert counted == [1] and died == []


@pytest.mark.parametrize("where", ["send", "ack"])
def test_a_refused_output_stops_the_worker_and_keeps_the_record(where: str) -> None:
    died: list[str] = []
    kept: list[BaseException] = []
    out = Outbox(1.0, died.append)
    counted: list[int] = []
    topic = _Topic("custos.deadletter", fail_send=where == "send", fail_ack=where == "ack")

    async def go() -> None:
        await out.send(topic, b"k", b"bad bytes", on_refused=kept.append)
        out.then.append(lambda: counted.append(1))
        await out.delivered()

    with pytest.raises(OutputRefused):
        asyncio.run(go())
    assert len(died) == 1 and "custos.deadletter" in died[0]
    assert len(kept) == 1  # the dead letter was handed to its spill before stopping
    assert counted == []  # nothing counted as done


def test_an_unacknowledged_output_times_out_as_a_refusal() -> None:
    died: list[str] = []
    out = Outbox(0.05, died.append)

    class _Silent(_Topic):
        async def send(self, *a: Any, **kw: Any) -> Any:
            return asyncio.get_running_loop().create_future()  # never acknowledged

    async def go() -> None:
        await out.send(_Silent("custos.alerts"), b"k", b"v")
        await out.barrier()

    with pytest.raises(OutputRefused):
        asyncio.run(go())
    assert died and "not acknowledged" in died[0]
