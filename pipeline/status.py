"""``custos status``: what an operator checks first, gathered from Kafka and the worker."""

from __future__ import annotations

import urllib.request

from confluent_kafka import Consumer, KafkaException, TopicPartition

from pipeline.config import Settings
from pipeline.kafka.clients import base_config, make_admin


def _worker_metrics(port: int) -> dict[str, str]:
    try:
        url = f"http://127.0.0.1:{port}/custos/metrics"
        body = urllib.request.urlopen(url, timeout=3).read().decode()
    except OSError:
        return {}
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = value
    return out


def collect(settings: Settings) -> list[str]:
    lines: list[str] = []
    if settings.managed_broker:
        from pipeline.kafka.broker import Broker

        lines.append("kafka:  " + Broker(settings).status().describe())
    try:
        md = make_admin(settings, **{"socket.timeout.ms": 3000}).list_topics(timeout=5)
    except Exception as exc:  # unreachable broker: say so and stop here
        return [*lines, f"kafka:  not reachable at {settings.bootstrap_servers} ({exc})"]

    consumer = Consumer(base_config(settings, **{"group.id": settings.app_id}))
    try:
        lines.append("topics:")
        lag_parts: list[TopicPartition] = []
        for name in sorted(t for t in md.topics if not t.startswith("__")):
            total = 0
            try:
                for p in md.topics[name].partitions:
                    low, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=5)
                    total += high - low
                    if name in (settings.identity_topic, settings.agent_topic):
                        lag_parts.append(TopicPartition(name, p))
            except KafkaException as exc:  # e.g. a topic created a moment ago, no leader yet
                lines.append(f"  {name:<40} unavailable ({exc.args[0].str()})")
                continue
            lines.append(f"  {name:<40} {total:>12,} records")
        lag = 0
        for tp in consumer.committed(lag_parts, timeout=10) if lag_parts else []:
            low, high = consumer.get_watermark_offsets(tp, timeout=5)
            lag += high - (tp.offset if tp.offset >= 0 else low)
        lines.append(f"worker: consumer group {settings.app_id}: lag {lag:,} input events")
    finally:
        consumer.close()

    metrics = _worker_metrics(settings.worker_web_port)
    if not metrics:
        lines.append(f"worker: no metrics on 127.0.0.1:{settings.worker_web_port} (not running?)")
    else:
        for key in (
            "custos_scored_total",
            "custos_findings_total",
            "custos_alerts_total",
            "custos_scoring_microseconds_per_event",
            'custos_event_to_score_ms{quantile="0.5"}',
            'custos_event_to_score_ms{quantile="0.99"}',
            "custos_identities",
            "custos_state_resets_total",
        ):
            if key in metrics:
                lines.append(f"  {key:<44} {metrics[key]}")
        dead = sum(float(v) for k, v in metrics.items() if k.startswith("custos_deadletter_total"))
        lines.append(f"  {'dead-lettered':<44} {dead:.0f}")
    return lines
