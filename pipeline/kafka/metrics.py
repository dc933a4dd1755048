"""Prometheus metrics (prometheus-client) over the counters the consumers already keep.

A custom collector reads :class:`~pipeline.kafka.ingest.IngestStats` (and the worker's
additions) at scrape time, so the hot path only bumps plain integers.

>>> from pipeline.kafka.ingest import IngestStats
>>> stats = IngestStats()
>>> stats.dead.add("identity.events", "invalid_json", 3)
>>> [l for l in render(stats).splitlines() if l.startswith("custos_deadletter_total")]
['custos_deadletter_total{reason="invalid_json",topic="identity.events"} 3.0']
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from pipeline.kafka.ingest import IngestStats

Extra = Callable[[], Iterator[Metric]]


class StatsCollector(Collector):
    """Exposes an IngestStats (plus optional extra metric families) at scrape time."""

    def __init__(self, stats: IngestStats, extra: Extra | None = None) -> None:
        self.stats = stats
        self.extra = extra

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        with stats.lock:
            by_topic = dict(stats.by_topic)
            by_class = dict(stats.by_class)
            by_kind = dict(stats.by_kind)
            identities = len(stats.identities)
        events = CounterMetricFamily(
            "custos_events", "Valid input events decoded, per topic.", labels=["topic"]
        )
        for topic, n in sorted(by_topic.items()):
            events.add_metric([topic], n)
        yield events
        classes = CounterMetricFamily(
            "custos_events_by_class", "Valid input events per OCSF class.", labels=["class_uid"]
        )
        for cls, n in sorted(by_class.items()):
            classes.add_metric([str(cls)], n)
        yield classes
        kinds = CounterMetricFamily(
            "custos_events_by_kind", "Valid input events per identity kind.", labels=["kind"]
        )
        for kind, n in sorted(by_kind.items()):
            kinds.add_metric([kind], n)
        yield kinds
        yield GaugeMetricFamily("custos_identities", "Distinct identities seen.", identities)
        dead = CounterMetricFamily(
            "custos_deadletter",
            "Messages sent to the dead-letter topic, per source topic and reason.",
            labels=["reason", "topic"],
        )
        for (topic, reason), n in sorted(stats.dead.snapshot().items()):
            dead.add_metric([reason, topic], n)
        yield dead
        if self.extra is not None:
            yield from self.extra()


def registry_for(stats: IngestStats, extra: Extra | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(stats, extra))
    return registry


def render(stats: IngestStats, extra: Extra | None = None) -> str:
    """The Prometheus text exposition of ``stats`` (what a scrape returns)."""
    return generate_latest(registry_for(stats, extra)).decode()


def scrape(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> dict[str, float]:
    """A running worker's metrics as ``{name{labels}: value}``; empty if none answers."""
    try:
        url = f"http://{host}:{port}/custos/metrics"
        body = urllib.request.urlopen(url, timeout=timeout).read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def serve(stats: IngestStats, port: int, host: str = "127.0.0.1") -> WSGIServer:
    """Serve ``/metrics`` on ``host:port`` in a daemon thread; ``shutdown()`` stops it."""
    server, _thread = start_http_server(port, addr=host, registry=registry_for(stats))
    return server
