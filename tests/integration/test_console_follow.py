"""The console follows the real broker's alerts topic into its store, and resumes where the
store ends after a restart (nothing twice, nothing lost), whatever its group committed."""

from __future__ import annotations

import json
import time
from pathlib import Path

from pipeline.config import Settings
from pipeline.console.follow import Follower
from pipeline.console.store import ConsoleStore
from pipeline.kafka.clients import make_producer
from tests.unit.console.test_web import finding


def _produce(settings: Settings, uids: list[str]) -> None:
    producer = make_producer(settings)
    for uid in uids:
        producer.produce(settings.alerts_topic, key=b"agt-7",
                         value=json.dumps(finding(uid, title=f"finding {uid}")).encode())
    assert producer.flush(30) == 0


def _wait(store: ConsoleStore, n: int, follower: Follower) -> None:
    deadline = time.monotonic() + 60
    while len(store.findings(limit=1000)) < n:
        assert follower.error is None, follower.error
        assert time.monotonic() < deadline, f"{len(store.findings())} of {n} findings arrived"
        time.sleep(0.2)


def test_the_console_follows_alerts_and_resumes_from_its_store(
    isolated: Settings, tmp_path: Path
) -> None:
    store = ConsoleStore(tmp_path / "console.db")
    _produce(isolated, [f"f-{i}" for i in range(5)])
    follower = Follower(isolated, store).start()
    try:
        _wait(store, 5, follower)
    finally:
        follower.stop()
    store.triage("f-0", "alice", "acknowledge")
    seq = store.last_seq()
    # A new console process on the same store, more findings meanwhile.
    _produce(isolated, ["f-5", "f-6"])
    again = ConsoleStore(tmp_path / "console.db")
    follower = Follower(isolated, again).start()
    try:
        _wait(again, 7, follower)
        time.sleep(1.0)  # nothing else is on its way
    finally:
        follower.stop()
    assert {f["uid"] for f in again.findings(after_seq=seq)} == {"f-5", "f-6"}  # none twice
    assert again.finding("f-0")["status"] == "acknowledged"  # type: ignore[index]
    assert sum(again.offsets(isolated.alerts_topic).values()) == 7
