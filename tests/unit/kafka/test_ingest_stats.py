"""IngestStats.record counts a batch at once: the same counters as counting event by event."""

from __future__ import annotations

import random
from collections import Counter

from pipeline.events.schemas import Event
from pipeline.kafka.ingest import IngestStats


def _one_by_one(batches: list[tuple[str, list[Event], int]]) -> tuple[object, ...]:
    """The counters as the per-event loop kept them."""
    by_topic: Counter[str] = Counter()
    by_class: Counter[int] = Counter()
    by_kind: Counter[str] = Counter()
    identities: set[str] = set()
    valid = nbytes = 0
    first: int | None = None
    last: int | None = None
    for topic, events, n in batches:
        by_topic[topic] += len(events)
        valid += len(events)
        nbytes += n
        for ev in events:
            by_class[ev.class_uid] += 1
            by_kind[ev.identity_kind] += 1
            identities.add(ev.identity_uid)
            if first is None or ev.time_ms < first:
                first = ev.time_ms
            if last is None or ev.time_ms > last:
                last = ev.time_ms
    return (
        list(by_topic.items()),
        list(by_class.items()),
        list(by_kind.items()),
        list(identities),
        valid,
        nbytes,
        first,
        last,
    )


def test_a_batch_is_counted_as_its_events_one_by_one() -> None:
    rng = random.Random(7)
    kinds = ("human", "service", "agent")
    batches = []
    for b in range(40):
        events = [
            Event(
                uid=f"e{b}-{i}",
                class_uid=rng.choice((3002, 6003)),
                activity_id=1,
                time_ms=rng.randrange(10**12, 2 * 10**12),
                identity_uid=f"u{rng.randrange(300)}",
                identity_kind=rng.choice(kinds),
            )
            for i in range(rng.choice((0, 1, 2, 50)))
        ]
        batches.append((rng.choice(("identity.events", "agent.events", "inputs")), events, b))
    stats = IngestStats()
    for topic, events, n in batches:
        stats.record(topic, events, n)
    got = (
        list(stats.by_topic.items()),
        list(stats.by_class.items()),
        list(stats.by_kind.items()),
        list(stats.identities),
        stats.valid,
        stats.bytes_in,
        stats.first_time_ms,
        stats.last_time_ms,
    )
    assert got == _one_by_one(batches)
    assert stats.valid > 0 and stats.first_time_ms is not None


def test_an_empty_batch_still_names_its_topic() -> None:
    stats = IngestStats()
    stats.record("identity.events", [], 0)
    assert stats.by_topic == Counter({"identity.events": 0})
    assert "identity.events" in stats.by_topic
    assert stats.first_time_ms is None and stats.valid == 0
