from __future__ import annotations

import json
import socket
import urllib.request

from pipeline.events.schemas import EventDecoder
from pipeline.kafka import metrics
from pipeline.kafka.ingest import IngestStats
from pipeline.simulate.malformed import valid_logon


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
