"""Simulated traffic through the real broker: nothing lost, all valid, per-identity order kept."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

from pipeline.config import Settings
from pipeline.events.schemas import Event
from pipeline.kafka.ingest import Ingest
from pipeline.simulate import iter_events, simulate
from pipeline.simulate.labels import read_labels
from pipeline.simulate.sinks import KafkaSink


def test_simulator_to_kafka_to_decoder_round_trip(isolated: Settings, tmp_path: Path) -> None:
    labels = tmp_path / "labels.jsonl"
    report = simulate(
        isolated, identities=300, duration_s=3 * 3600, seed=11, start_ms=1_790_000_000_000,
        rate=None, sink=KafkaSink(isolated), labels_path=labels,
    )  # fmt: skip
    assert report.events > 1000
    expected = {
        (topic, key, value)
        for topic, key, value, _ in iter_events(
            isolated, identities=300, duration_s=3 * 3600, seed=11, start_ms=1_790_000_000_000
        )
    }
    assert len(expected) == report.events

    seen: list[Event] = []
    ingest = Ingest(isolated, group_id="t-roundtrip")
    deadline = time.monotonic() + 60
    try:
        while len(seen) < report.events and time.monotonic() < deadline:
            seen.extend(ingest.poll_batch(timeout=0.5))
    finally:
        ingest.close()

    assert ingest.stats.dead.total() == 0
    assert len(seen) == report.events
    assert ingest.stats.by_topic == report.per_topic
    # Keyed by identity: within a topic (= class), each identity's events arrive in
    # event-time order. Across the two topics there is no order to keep.
    last: dict[tuple[int, str], int] = defaultdict(int)
    for ev in seen:
        key = (ev.class_uid, ev.identity_uid)
        assert ev.time_ms >= last[key], key
        last[key] = ev.time_ms
    # The labelled attacks' identities are in the stream, and their first events too.
    uids = {ev.uid for ev in seen}
    rows = read_labels(labels)
    assert rows and all(r.first_event_uid in uids for r in rows)
