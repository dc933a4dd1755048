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

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from pipeline.kafka.ingest import IngestStats

Extra = Callable[[], Iterator[Metric]]

#: Upper bounds (seconds) of the event → scored histogram's buckets: ten per decade (1, 1.2,
#: 1.5, 2, 2.5, 3, 4, 5, 6, 7.5) from 5 ms to 60 s, fine enough to place a 1 s target
#: (0.75, 1, 1.2 s) and wide enough to keep a backlog's minutes-old events out of +Inf.
LATENCY_BOUNDS: tuple[float, ...] = tuple(
    b for e in range(-3, 2) for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7.5)
    if 0.005 <= (b := round(m * 10.0**e, 6)) <= 60
)  # fmt: skip


class Histogram:
    """A Prometheus histogram kept as plain counts, added a batch at a time.

    Cumulative since the process started, unlike a window of recent values: the difference
    of two scrapes is exactly what happened between them (:func:`histogram_quantiles`).
    """

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BOUNDS) -> None:
        self.bounds = np.asarray(bounds, dtype=float)
        self.counts = np.zeros(len(bounds) + 1, dtype=np.int64)  # the last one: above all (+Inf)
        self.sum = 0.0

    def observe(self, values: np.ndarray) -> None:
        if len(values):
            # "le" buckets: a value equal to a bound belongs to that bound's bucket.
            where = np.searchsorted(self.bounds, values, side="left")
            self.counts += np.bincount(where, minlength=len(self.counts))
            self.sum += float(values.sum())

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        cumulative = np.cumsum(self.counts)
        les = [repr(float(b)) for b in self.bounds] + ["+Inf"]
        return HistogramMetricFamily(
            name, documentation, sum_value=self.sum,
            buckets=[(le, float(n)) for le, n in zip(les, cumulative, strict=True)],
        )  # fmt: skip


def histogram_quantiles(
    before: dict[str, float], after: dict[str, float], name: str, qs: tuple[float, ...]
) -> list[float]:
    """Quantiles of the observations histogram ``name`` counted between two :func:`scrape`
    results, interpolated linearly within a bucket (as Prometheus's ``histogram_quantile``);
    one in the +Inf bucket is the largest finite bound; 0.0 if there were none.

    >>> b = {'x_bucket{le="1.0"}': 5.0, 'x_bucket{le="2.0"}': 5.0, 'x_bucket{le="+Inf"}': 5.0}
    >>> a = {'x_bucket{le="1.0"}': 5.0, 'x_bucket{le="2.0"}': 9.0, 'x_bucket{le="+Inf"}': 9.0}
    >>> histogram_quantiles(b, a, "x", (0.5, 1.0))
    [1.5, 2.0]
    """
    prefix = f'{name}_bucket{{le="'
    rows = sorted(
        (float(k[len(prefix):-2]), v - before.get(k, 0.0))
        for k, v in after.items() if k.startswith(prefix)
    )  # fmt: skip
    total = rows[-1][1] if rows else 0.0
    out = []
    for q in qs:
        if total <= 0:
            out.append(0.0)
            continue
        rank, lower, below = q * total, 0.0, 0.0
        for le, cum in rows:
            if cum >= rank and cum > below:
                if le == float("inf"):
                    out.append(lower)
                else:
                    out.append(lower + (le - lower) * (rank - below) / (cum - below))
                break
            lower, below = le, cum
        else:
            out.append(lower)
    return out


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
    return parse(body)


def parse(body: str) -> dict[str, float]:
    """A text exposition as ``{name{labels}: value}`` (what :func:`scrape` returns)."""
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
