"""Ticks over many open incidents: cheap for those not due, a bounded slice per unit of work.

A worker holding tens of thousands of open incidents ticked them all in one unit of work on its
event loop every 10 s, decoding every one's whole state: its web pages (the console's identity
page) and control units waited a second each time. The core now decides on the side part alone
when nothing is due, and the worker goes through the incidents a slice at a time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from pipeline.alerts.policy import RiskPolicy
from pipeline.alerts.state import Suppression
from pipeline.control.feedback import Feedback
from pipeline.detection import Detection, IdentityState
from pipeline.stream import units as units_module
from tests.unit.stream.test_worker_agents import (
    FakeProducer,
    Sent,
    _app,
    _call,
    _dispatch,
    _Feed,
    sent,
)
from tests.unit.test_detection import T0
from tests.unit.test_detection import _call as _event

__all__ = ["sent"]  # the fixture, imported for the tests below

HOUR = 3_600_000


def _open_incidents(policy: RiskPolicy | None = None) -> tuple[Detection, dict[str, bytes]]:
    """Four agents with an open incident (a credential misused), two without."""
    det = Detection(policy=policy)
    store: dict[str, bytes] = {}
    events = [_event(i, uid=f"agt-{i % 6}", issued_to=f"agt-{i % 6}") for i in range(60)]
    events += [_event(60 + k, uid=f"agt-{k}", issued_to="agt-x") for k in range(4)]
    det.process(events, store)
    # An analyst silences agt-2 for two hours: its finding turns Suppressed, then back.
    fb = Feedback(uid="fb-1", action="suppress", identity="agt-2", by="ann", reason="test",
                  at_ms=T0 + 40 * 60_000, until_ms=T0 + 2 * HOUR)  # fmt: skip
    det.apply_feedback(fb, store)
    return det, store


def test_a_tick_decodes_only_the_states_it_changes_and_decides_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A standing suppression of agt-3 ends within the day: a tick must say so.
    policy = RiskPolicy(suppressions=[Suppression(identity="agt-3", until_ms=T0 + 3 * HOUR)])
    det, store = _open_incidents(policy)
    assert det.open_incidents == {"agt-0", "agt-1", "agt-2", "agt-3"}
    decoded: list[str] = []
    load = det.state_of

    def counting(uid: str, store: Any) -> IdentityState:
        decoded.append(uid)
        return load(uid, store)

    monkeypatch.setattr(det, "state_of", counting)
    # Nothing is due a minute after the last event: no state is decoded, nothing written.
    before = dict(store)
    assert det.tick(T0 + 65 * 30_000, store) == []
    assert decoded == [] and store == before

    # Over the next day, every tick decides exactly what decoding every state decides.
    slow = Detection(policy=policy)
    slow_store = dict(store)
    slow.open_incidents = set(det.open_incidents)
    monkeypatch.setattr(slow, "_tick_idle", lambda *a: False)
    for minutes in range(0, 26 * 60, 7):
        now = T0 + minutes * 60_000
        decoded.clear()
        fast_out, slow_out = det.tick(now, store), slow.tick(now, slow_store)
        assert fast_out == slow_out, minutes
        assert store == slow_store and det.open_incidents == slow.open_incidents
        assert len(decoded) == len({d.identity_uid for d in fast_out})  # only those acted on
    assert not det.open_incidents  # all closed within the day


def test_a_tick_of_some_identities_leaves_the_others_and_skips_those_no_longer_open() -> None:
    det, store = _open_incidents()
    now = T0 + 26 * HOUR  # everything is due
    assert det.tick(now, store, uids=["agt-1", "agt-5", "nobody"]) != []
    assert det.open_incidents == {"agt-0", "agt-2", "agt-3"}
    det.open_incidents.discard("agt-0")  # handed over to another worker meanwhile
    assert det.tick(now, store, uids=["agt-0"]) == []
    assert {d.identity_uid for d in det.tick(now, store)} == {"agt-2", "agt-3"}


def test_the_worker_ticks_many_open_incidents_a_slice_at_a_time_and_closes_them_all(
    tmp_path: Any, sent: Sent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(units_module, "TICK_STEP", 4)
    monkeypatch.setattr(units_module, "TICK_SLICE_S", 0.0)  # one step per slice
    producer = FakeProducer()
    app = _app(tmp_path, producer)
    units, det = app.custos_units, app.custos_detection
    now = int(time.time() * 1000)
    feed = _Feed("agent.events")
    agents = [f"agt-{i}" for i in range(10)]
    _dispatch(app, [feed(a.encode(), _call(f"misuse-{a}", a, now - 1000, "agt-x"))
                    for a in agents])  # fmt: skip
    assert det.open_incidents == set(agents)
    det.watermark_ms += 26 * HOUR  # every incident is due to close
    slices: list[list[str]] = []
    tick = units.engine.tick

    def spy(store: Any = None, *, uids: Any = None) -> Any:
        slices.append(list(uids))
        return tick(store, uids=uids)

    monkeypatch.setattr(units.engine, "tick", spy)
    between: list[int] = []  # slices done whenever another task ran with the units' lock free
    sent.clear()

    async def run() -> None:
        async def other() -> None:
            while True:
                if not units.lock.locked():
                    between.append(len(slices))
                await asyncio.sleep(0)

        task = asyncio.create_task(other())
        await units.tick()
        task.cancel()

    asyncio.run(run())
    assert [len(s) for s in slices] == [4, 4, 2]
    assert sorted(u for s in slices for u in s) == sorted(agents)
    assert {1, 2} <= set(between)  # the loop was free between two slices
    assert not det.open_incidents
    closed = {k.decode() for topic, k, _, _ in sent if topic == "custos.alerts"}
    assert closed == set(agents)  # a close finding for every one
