"""``custos bench``: printed figures, never timed tests.

1. Offline core: the pure detection path (decode → features → baselines → detector → rules →
   policy) over simulated events in one process: events/s, state bytes per identity, RSS.
2. Through Kafka: the same events into fresh topics, then (a) raw confluent-kafka consumption
   for reference, (b) faust alone (the worker's consumer setup, an agent that only counts:
   :mod:`pipeline.stream.ceiling`) and (c) one faust worker draining them: events/s. Then a
   paced phase with the worker caught up gives event → scored latency (Kafka timestamp to batch
   scored, p50/p99).

The last line printed is one JSON object (events_per_s, p50_ms, p99_ms, bytes_per_identity,
identities, ...).
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.config import Settings, env_var
from pipeline.directory import Directory
from pipeline.kafka.clients import make_producer, read_all
from pipeline.kafka.topics import TopicSpec, apply_topics
from pipeline.localhost import free_port, stop
from pipeline.metrics import scrape
from pipeline.schemas import EventDecoder
from pipeline.scoring import Detection
from pipeline.simulate import Simulation
from pipeline.simulate.directory import write_directory

Echo = Callable[[str], None]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_offline(
    settings: Settings, identities: int, duration_s: float, seed: int, directory: Directory
) -> tuple[dict[str, Any], list[tuple[str, bytes, bytes, int]]]:
    sim = Simulation(settings, identities=identities, duration_s=duration_s, seed=seed)
    raw = list(sim.events())
    decoder = EventDecoder(max_future_skew_ms=10**13)
    det = Detection(settings, directory=directory)
    store: dict[str, bytes] = {}
    t0 = time.perf_counter()
    batch = []
    for _, _, value, _ in raw:
        batch.append(decoder.decode(value))
        if len(batch) >= settings.worker_batch:
            det.process(batch, store)
            batch = []
    det.process(batch, store)
    secs = time.perf_counter() - t0
    sizes = [len(v) for v in store.values()]
    return {
        "events": len(raw),
        "seconds": secs,
        "events_per_s": len(raw) / secs,
        "identities_seen": len(store),
        "bytes_per_identity": sum(sizes) / max(1, len(sizes)),
        "max_bytes_per_identity": max(sizes, default=0),
        "rss_mb": _rss_mb(),
    }, raw


def bench_kafka(
    settings: Settings,
    raw: list[tuple[str, bytes, bytes, int]],
    directory_path: Path,
    echo: Echo,
    paced_rate: float,
    paced_seconds: float,
) -> dict[str, Any]:
    tag = f"bench-{int(time.time())}"
    s = dataclasses.replace(
        settings,
        identity_topic=f"{tag}.identity",
        agent_topic=f"{tag}.agent",
        deadletter_topic=f"{tag}.dlq",
        alerts_topic=f"{tag}.alerts",
        scores_topic=f"{tag}.scores",
        app_id=f"{tag}-worker",
    )
    parts = s.worker_partitions
    names = (s.identity_topic, s.agent_topic, s.deadletter_topic, s.alerts_topic, s.scores_topic)
    apply_topics(s, [TopicSpec(t, parts, 1, {}) for t in names])
    topic = {settings.identity_topic: s.identity_topic, settings.agent_topic: s.agent_topic}
    producer = make_producer(s)
    t0 = time.perf_counter()
    for t, key, value, _ in raw:
        while True:
            try:
                producer.produce(topic[t], key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(120)
    produce_s = time.perf_counter() - t0
    echo(f"  produced {len(raw):,} events in {produce_s:.1f} s ({len(raw) / produce_s:,.0f}/s)")

    t0 = time.perf_counter()
    n_raw = sum(len(read_all(s, tp, timeout_s=300)) for tp in (s.identity_topic, s.agent_topic))
    raw_s = time.perf_counter() - t0
    echo(f"  raw confluent-kafka consume: {n_raw:,} in {raw_s:.1f} s ({n_raw / raw_s:,.0f}/s)")

    env = dict(os.environ)
    for name, setting in {
        "bootstrap": s.bootstrap_servers, "identity_topic": s.identity_topic,
        "agent_topic": s.agent_topic, "deadletter_topic": s.deadletter_topic,
        "alerts_topic": s.alerts_topic, "scores_topic": s.scores_topic,
        "directory_file": str(directory_path),
        "worker_datadir": tempfile.mkdtemp(prefix="custos-bench-"),
    }.items():  # fmt: skip
        env[env_var(name)] = setting
    log = Path(env[env_var("worker_datadir")]) / "worker.log"

    # faust's own ceiling on the same topics: the worker's consumer setup, an agent that counts.
    port = free_port()
    env.update({env_var("app_id"): f"{s.app_id}-ceiling", env_var("worker_web_port"): str(port)})
    ceiling = subprocess.Popen(
        [sys.executable, "-m", "pipeline.stream.ceiling"], env=env,
        stdout=open(log.with_name("ceiling.log"), "wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        ceiling_rate = _drain(ceiling, port, "custos_ceiling_consumed_total", len(raw), log)
    finally:
        stop([ceiling])
    echo(f"  faust alone (agent only counts): {ceiling_rate:,.0f} events/s")

    port = free_port()
    env.update({env_var("app_id"): s.app_id, env_var("worker_web_port"): str(port)})
    worker = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "worker"], env=env,
        stdout=open(log, "wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        worker_rate = _drain(worker, port, "custos_scored_total", len(raw), log)
        rss = _proc_rss_mb(worker.pid)
        echo(f"  faust worker drained {len(raw):,} events: {worker_rate:,.0f} events/s, "
             f"RSS {rss:,.0f} MB")  # fmt: skip

        # Paced phase: the worker is caught up; send at a steady rate and read the latency.
        paced = raw[: int(paced_rate * paced_seconds)]
        t0 = time.perf_counter()
        for i, (t, key, value, _) in enumerate(paced):
            producer.produce(topic[t], key=key, value=value)
            if i % 200 == 0:
                producer.poll(0)
                ahead = i / paced_rate - (time.perf_counter() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        producer.flush(60)
        deadline = time.perf_counter() + 120
        while time.perf_counter() < deadline:
            m = scrape(port)
            if m.get("custos_scored_total", 0.0) >= len(raw) + len(paced):
                break
            time.sleep(0.5)
        p50 = m.get('custos_event_to_score_ms{quantile="0.5"}', 0.0)
        p99 = m.get('custos_event_to_score_ms{quantile="0.99"}', 0.0)
        echo(f"  paced {paced_rate:,.0f} events/s for {paced_seconds:.0f} s: "
             f"event → scored p50 {p50:.0f} ms, p99 {p99:.0f} ms")  # fmt: skip
    finally:
        stop([worker])
    return {
        "produce_per_s": len(raw) / produce_s,
        "raw_consume_per_s": n_raw / raw_s,
        "faust_ceiling_per_s": ceiling_rate,
        "worker_events_per_s": worker_rate,
        "worker_rss_mb": rss,
        "p50_ms": p50,
        "p99_ms": p99,
    }


def _drain(proc: subprocess.Popen[bytes], port: int, metric: str, n: int, log: Path) -> float:
    """Wait until ``metric`` reaches ``n``; events/s from the first counted event on."""
    first = None
    t_start = time.perf_counter()
    while True:
        time.sleep(1.0)
        if proc.poll() is not None:
            raise RuntimeError(f"bench process exited; see {log}")
        done = scrape(port).get(metric, 0.0)
        if first is None and done > 0:
            first = (time.perf_counter(), done)
        if done >= n:
            break
        if time.perf_counter() - t_start > 1800:
            raise RuntimeError(f"bench process did not drain within 30 min; see {log}")
    assert first is not None
    secs = time.perf_counter() - first[0]
    return (n - first[1]) / secs if secs > 0 else 0.0


def _proc_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_bench(
    settings: Settings,
    *,
    identities: int,
    duration_s: float,
    seed: int,
    kafka: bool,
    paced_rate: float,
    paced_seconds: float,
    echo: Echo = print,
) -> dict[str, Any]:
    from pipeline.simulate.population import build_population

    with tempfile.TemporaryDirectory() as tmp:
        directory_path = Path(tmp) / "directory.jsonl"
        write_directory(build_population(identities, seed=seed), directory_path)
        directory = Directory.load(directory_path)
        echo(f"bench: {identities:,} identities, {duration_s / 3600:.1f} h of simulated traffic")
        offline, raw = bench_offline(settings, identities, duration_s, seed, directory)
        echo(f"  offline core: {offline['events']:,} events in {offline['seconds']:.1f} s "
             f"({offline['events_per_s']:,.0f}/s); state {offline['bytes_per_identity']:.0f} B "
             f"per identity (max {offline['max_bytes_per_identity']}); "
             f"RSS {offline['rss_mb']:,.0f} MB")  # fmt: skip
        result: dict[str, Any] = {
            "identities": identities,
            "events": offline["events"],
            "offline_events_per_s": round(offline["events_per_s"]),
            "bytes_per_identity": round(offline["bytes_per_identity"]),
        }
        if kafka:
            if settings.managed_broker:
                from pipeline.kafka.broker import Broker

                Broker(settings).up()
            k = bench_kafka(settings, raw, directory_path, echo, paced_rate, paced_seconds)
            result.update(
                events_per_s=round(k["worker_events_per_s"]),
                p50_ms=round(k["p50_ms"], 1),
                p99_ms=round(k["p99_ms"], 1),
                raw_consume_per_s=round(k["raw_consume_per_s"]),
                faust_ceiling_per_s=round(k["faust_ceiling_per_s"]),
                produce_per_s=round(k["produce_per_s"]),
                worker_rss_mb=round(k["worker_rss_mb"]),
            )
        else:
            result.update(events_per_s=result["offline_events_per_s"], p50_ms=None, p99_ms=None)
    echo(json.dumps(result))
    return result
