from __future__ import annotations

import json
import socket
import urllib.request

import numpy as np

from pipeline.events.schemas import EventDecoder
from pipeline.kafka import metrics
from pipeline.kafka.ingest import IngestStats
from pipeline.simulate.malformed import valid_logon
from pipeline.stream.units import WorkerStats


def test_metrics_endpoint_exposes_counts_per_reason_and_topic() -> None:
    stats = IngestStats()
    ev = EventDecoder().decode(
        json.dumps(valid_logon("m1", 1_800_000_000_000)).encode(),
        now_ms=1_800_000_000_000,
    )
    stats.record("identity.events", [ev, ev], 100)
    stats.dead.add("agent.events", "oversized", 2)
    stats.dead.add("identity.events", "absurd_time")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = metrics.serve(stats, port)
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        server.shutdown()
    assert 'custos_events_total{topic="identity.events"} 2.0' in body
    assert 'custos_deadletter_total{reason="oversized",topic="agent.events"} 2.0' in body
    assert 'custos_deadletter_total{reason="absurd_time",topic="identity.events"} 1.0' in body
    assert "custos_identities 1.0" in body


def test_a_phase_quantiles_come_from_two_histogram_snapshots_not_from_what_came_before() -> None:
    """custos bench's paced phase: a drain of old events (30 s late) and then 40,000 paced ones
    (~0.25 s late). The window of recent latencies still holds 10,000 of the drain's, so its
    p99 is the drain's; the histogram's difference between two scrapes holds the paced alone."""
    stats = WorkerStats()

    def batch(seconds: np.ndarray) -> None:  # what a unit's count() records
        stats.latency.observe(seconds)
        stats.latency_ms.extend((seconds * 1000).tolist())

    rng = np.random.default_rng(1)
    for _ in range(280):  # the drain: 140,000 events, 20 to 40 s after their timestamp
        batch(rng.uniform(20.0, 40.0, 500))
    before = metrics.parse(metrics.render(stats, lambda: iter([stats.latency.family("lat", "")])))
    paced = rng.uniform(0.2, 0.3, 40_000)
    paced[:100] = 0.9  # its slowest 0.25 %: the p99 stays inside 0.2-0.3 s
    for i in range(0, len(paced), 500):
        batch(paced[i:i + 500])
    after = metrics.parse(metrics.render(stats, lambda: iter([stats.latency.family("lat", "")])))

    assert stats.latency_quantiles()[1] > 20_000  # the old reading: the drain's p99, in ms
    p50, p99 = metrics.histogram_quantiles(before, after, "lat", (0.5, 0.99))
    true50, true99 = np.quantile(paced, [0.5, 0.99])
    # Within the bucket holding the true value (0.25-0.3 s), linearly interpolated.
    assert 0.2 <= p50 <= 0.3 and abs(p50 - true50) < 0.03, (p50, true50)
    assert 0.25 <= p99 <= 0.3 and abs(p99 - true99) < 0.03, (p99, true99)
    assert after["lat_count"] - before["lat_count"] == 40_000
    assert after['lat_bucket{le="+Inf"}'] == 180_000


def test_histogram_buckets_are_le_cumulative_and_past_the_last_bound_is_the_last_bound() -> None:
    h = metrics.Histogram((0.1, 1.0))
    h.observe(np.array([0.05, 0.1, 0.5, 1.0, 5.0, 7.0]))
    got = metrics.parse(metrics.render(IngestStats(), lambda: iter([h.family("h", "")])))
    assert got['h_bucket{le="0.1"}'] == 2  # 0.1 itself is "less or equal"
    assert got['h_bucket{le="1.0"}'] == 4
    assert got['h_bucket{le="+Inf"}'] == got["h_count"] == 6
    assert abs(got["h_sum"] - 13.65) < 1e-9
    # Ranks in +Inf cannot be placed: the largest finite bound (as Prometheus answers).
    assert metrics.histogram_quantiles({}, got, "h", (0.99,)) == [1.0]
    assert metrics.histogram_quantiles(got, got, "h", (0.5,)) == [0.0]  # nothing in between
