"""``custos status``: what an operator checks first, gathered from Kafka and the worker."""

from __future__ import annotations

from confluent_kafka import KafkaException, TopicPartition

from pipeline.config import Settings
from pipeline.kafka.clients import group_lag, make_admin, make_consumer
from pipeline.kafka.metrics import scrape


def collect(settings: Settings) -> list[str]:
    lines: list[str] = []
    if settings.managed_broker:
        from pipeline.kafka.broker import Broker

        lines.append("kafka:  " + Broker(settings).status().describe())
    try:
        md = make_admin(settings, **{"socket.timeout.ms": 3000}).list_topics(timeout=5)
    except Exception as exc:  # unreachable broker: say so and stop here
        return [*lines, f"kafka:  not reachable at {settings.bootstrap_servers} ({exc})"]

    consumer = make_consumer(settings, settings.app_id, manual_commit=False, bulk_fetch=False)
    try:
        lines.append("topics:")
        for name in sorted(t for t in md.topics if not t.startswith("__")):
            total = 0
            try:
                for p in md.topics[name].partitions:
                    low, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=5)
                    total += high - low
            except KafkaException as exc:  # e.g. a topic created a moment ago, no leader yet
                lines.append(f"  {name:<40} unavailable ({exc.args[0].str()})")
                continue
            lines.append(f"  {name:<40} {total:>12,} records")
    finally:
        consumer.close()
    inputs = [t for t in (settings.identity_topic, settings.agent_topic) if t in md.topics]
    try:
        lag = group_lag(settings, settings.app_id, inputs)
        lines.append(f"worker: consumer group {settings.app_id}: lag {lag:,} input events")
    except KafkaException as exc:
        lines.append(f"worker: lag of {settings.app_id} unavailable ({exc.args[0].str()})")

    metrics = scrape(settings.worker_web_port, timeout=3)
    if not metrics:
        lines.append(f"worker: no metrics on 127.0.0.1:{settings.worker_web_port} (not running?)")
    else:
        for key in (
            "custos_scored_total",
            "custos_findings_total",
            "custos_alerts_total",
            'custos_event_to_score_seconds{quantile="0.5"}',
            'custos_event_to_score_seconds{quantile="0.99"}',
            "custos_identities_held",
            "custos_state_resets_total",
            "custos_state_names_shed_total",
            "custos_state_over_budget_total",
        ):
            if key in metrics:
                lines.append(f"  {key:<44} {metrics[key]:g}")
        if metrics.get("custos_scored_total"):
            cost = metrics.get("custos_scoring_seconds_total", 0.0) / metrics["custos_scored_total"]
            lines.append(f"  {'scoring µs per event':<44} {cost * 1e6:.1f}")
        dead = sum(v for k, v in metrics.items() if k.startswith("custos_deadletter_total"))
        lines.append(f"  {'dead-lettered':<44} {dead:.0f}")
    return lines
