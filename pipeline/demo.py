"""The main job end to end: broker up, topics applied, simulated traffic in, live summary out."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from pipeline.config import Settings
from pipeline.kafka.broker import Broker
from pipeline.kafka.clients import make_producer
from pipeline.kafka.ingest import Ingest, IngestStats
from pipeline.kafka.topics import apply_topics, load_topics
from pipeline.simulate.malformed import bad_samples

Echo = Callable[[str], None]


def summary_line(stats: IngestStats, produced: int, elapsed: float, lag: int) -> str:
    dead = stats.dead.total()
    rate = (stats.valid + dead) / elapsed if elapsed > 0 else 0.0
    return (
        f"[{elapsed:6.1f}s] produced {produced:>9,}  consumed {stats.valid + dead:>9,} "
        f"({rate:>8,.0f}/s)  valid {stats.valid:>9,}  dead-lettered {dead:>4}  "
        f"identities {len(stats.identities):>7,}  lag {lag:>7,}"
    )


def final_report(stats: IngestStats, produced: int, elapsed: float) -> list[str]:
    lines = ["", "What arrived", "------------"]
    for topic, n in sorted(stats.by_topic.items()):
        lines.append(f"  {topic:<22} {n:>10,} valid events")
    for cls, n in sorted(stats.by_class.items()):
        name = {3002: "Authentication", 6003: "API Activity"}.get(cls, str(cls))
        lines.append(f"  class {cls} {name:<14} {n:>10,}")
    for kind, n in sorted(stats.by_kind.items()):
        lines.append(f"  identity kind {kind:<9}{n:>10,}")
    lines.append(f"  distinct identities    {len(stats.identities):>10,}")
    if stats.first_time_ms and stats.last_time_ms:
        span_h = (stats.last_time_ms - stats.first_time_ms) / 3_600_000
        lines.append(f"  event-time span        {span_h:>10.1f} h (simulated)")
    lines += ["", "Dead-lettered (custos.deadletter, original bytes + reason + source offset)"]
    by_reason = stats.dead.by_reason()
    if not by_reason:
        lines.append("  none")
    for reason, n in sorted(by_reason.items()):
        lines.append(f"  {reason:<22} {n:>10,}")
    total = stats.valid + stats.dead.total()
    lines += [
        "",
        f"produced {produced:,} messages, consumed {total:,} "
        f"({total / elapsed:,.0f} msg/s over {elapsed:.1f} s); nothing lost: "
        f"{'yes' if total == produced else 'NO'}",
    ]
    return lines


def run_demo(
    settings: Settings,
    *,
    identities: int,
    duration_s: float,
    seed: int,
    rate: float | None,
    echo: Echo = print,
    timeout_s: float = 900.0,
) -> dict[str, Any]:
    """Run the whole loop once and return the final figures (also echoed as it goes)."""
    from pipeline.simulate import simulate
    from pipeline.simulate.sinks import KafkaSink

    if settings.managed_broker:
        started, secs = Broker(settings).up()
        state = f"started in {secs:.1f} s" if started else "already running"
        echo(f"kafka: {state} on {settings.bootstrap_servers}")
    report = apply_topics(settings, load_topics(settings.topics_file))
    echo(
        f"topics: {len(report.created)} created, {len(report.updated)} updated, "
        f"{len(report.unchanged)} unchanged"
    )

    ingest = Ingest(settings, group_id=f"custos-demo-{int(time.time())}")
    produced = [0]
    sim_done = threading.Event()
    sim_error: list[BaseException] = []
    sim_report: list[Any] = []

    def produce_bad() -> None:
        bad = bad_samples(int(time.time() * 1000), tag=str(time.time_ns()))
        producer = make_producer(settings)
        for s in bad:
            producer.produce(s.topic, key=s.key, value=s.value)
        producer.flush(30)
        produced[0] += len(bad)

    def simulator() -> None:
        try:
            produce_bad()
            sink = KafkaSink(settings)
            sim_report.append(
                simulate(
                    settings,
                    identities=identities,
                    duration_s=duration_s,
                    seed=seed,
                    rate=rate,
                    sink=sink,
                    labels_path=None,
                )
            )
            produced[0] += sim_report[0].events
            produce_bad()
        except BaseException as exc:  # reported by the main thread, never swallowed
            sim_error.append(exc)
        finally:
            sim_done.set()

    t0 = time.monotonic()
    thread = threading.Thread(target=simulator, name="simulator", daemon=True)
    thread.start()
    last_print = 0.0
    try:
        while True:
            ingest.poll_batch(timeout=0.5)
            elapsed = time.monotonic() - t0
            consumed = ingest.stats.valid + ingest.stats.dead.total()
            if elapsed - last_print >= 2.0:
                echo(summary_line(ingest.stats, produced[0], elapsed, ingest.lag()))
                last_print = elapsed
            if sim_done.is_set() and (sim_error or consumed >= produced[0]):
                break
            if elapsed > timeout_s:
                echo(f"stopping after {timeout_s:.0f} s")
                break
    finally:
        ingest.close()
    if sim_error:
        raise sim_error[0]
    elapsed = time.monotonic() - t0
    for line in final_report(ingest.stats, produced[0], elapsed):
        echo(line)
    sim = sim_report[0] if sim_report else None
    if sim is not None:
        echo(
            f"simulator: {sim.events:,} events in {sim.wall_s:.1f} s "
            f"({sim.events_per_s:,.0f} events/s into Kafka)"
        )
    return {
        "produced": produced[0],
        "valid": ingest.stats.valid,
        "dead": ingest.stats.dead.by_reason(),
        "elapsed_s": elapsed,
    }
