"""The main job end to end: broker up, topics applied, the detection worker running, simulated
traffic (with attacks and some malformed input) streamed in, alerts shown live."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from pipeline.config import Settings, env_var
from pipeline.kafka.broker import Broker
from pipeline.kafka.clients import base_config, group_lag, make_producer
from pipeline.kafka.topics import apply_topics, load_topics
from pipeline.simulate.malformed import bad_samples

Echo = Callable[[str], None]
_LEVEL = {0: "Info", 1: "Low", 2: "Medium", 3: "High", 4: "Critical"}


def alert_line(finding: dict[str, Any]) -> str:
    """One live line per finding: who, how bad, why (the first explanation)."""
    uid = finding["evidences"][0]["actor"]["user"]["uid"]
    level = _LEVEL.get(finding.get("risk_level_id", 0), "?")
    action = {1: "NEW   ", 2: "UPDATE", 3: "CLOSED"}.get(finding["activity_id"], "?")
    custos = finding.get("unmapped", {}).get("custos", {})
    rules = custos.get("rules") or []
    why = rules[0].get("text") if rules and isinstance(rules[0], dict) else None
    if why is None:
        texts = custos.get("contributions") or [finding.get("message", "")]
        why = texts[0] if texts else ""
    quarantine = " QUARANTINE" if custos.get("quarantine") else ""
    return (
        f"  {action} {level:<8} risk {finding.get('risk_score', 0):>3} {uid:<14}"
        f"{quarantine} {str(why)[:90]}"
    )


def _worker_env(settings: Settings, directory: Path) -> dict[str, str]:
    env = dict(os.environ)
    env[env_var("bootstrap")] = settings.bootstrap_servers
    env[env_var("directory_file")] = str(directory)
    return env


def run_demo(
    settings: Settings,
    *,
    identities: int,
    duration_s: float,
    seed: int,
    rate: float | None,
    echo: Echo = print,
    timeout_s: float = 1200.0,
) -> dict[str, Any]:
    """Run the whole loop once; return the final figures (also echoed as it goes)."""
    from pipeline.simulate import simulate
    from pipeline.simulate.directory import write_directory
    from pipeline.simulate.population import build_population
    from pipeline.simulate.sinks import KafkaSink

    if settings.managed_broker:
        started, secs = Broker(settings).up()
        state = f"started in {secs:.1f} s" if started else "already running"
        echo(f"kafka: {state} on {settings.bootstrap_servers}")
    report = apply_topics(settings, load_topics(settings.topics_file))
    echo(f"topics: {len(report.created)} created, {len(report.updated)} updated, "
         f"{len(report.unchanged)} unchanged")  # fmt: skip

    # The identity directory an IdP / agent registry would export for this population.
    demo_dir = settings.home_path / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    directory = demo_dir / f"directory-{identities}-{seed}.jsonl"
    write_directory(build_population(identities, seed=seed), directory)
    settings = dataclasses.replace(settings, directory_file=str(directory))

    # Watch the outputs from their current end: this run's findings and dead letters only.
    watch = Consumer(base_config(settings, **{"group.id": f"custos-demo-watch-{time.time_ns()}"}))
    parts = []
    for topic in (settings.alerts_topic, settings.deadletter_topic):
        md = watch.list_topics(topic, timeout=10)
        parts += [TopicPartition(topic, p, OFFSET_END) for p in md.topics[topic].partitions]
    watch.assign(parts)

    log = demo_dir / "worker.log"
    echo(f"worker: starting (consumer group {settings.app_id}, log {log})")
    worker = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "worker"],
        env=_worker_env(settings, directory), stdout=open(log, "ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip

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
            sim_report.append(
                simulate(settings, identities=identities, duration_s=duration_s, seed=seed,
                         rate=rate, sink=KafkaSink(settings), labels_path=demo_dir / "labels.jsonl")
            )  # fmt: skip
            produced[0] += sim_report[0].events
            produce_bad()
        except BaseException as exc:  # reported by the main thread, never swallowed
            sim_error.append(exc)
        finally:
            sim_done.set()

    t0 = time.monotonic()
    threading.Thread(target=simulator, name="simulator", daemon=True).start()
    echo(f"simulator: {identities:,} identities, {duration_s / 3600:.0f} h of event time, "
         "labelled attacks and a few malformed messages")  # fmt: skip
    echo("")
    findings: Counter[str] = Counter()
    alerted: set[str] = set()
    dead: Counter[str] = Counter()
    shown = 0
    last_status = 0.0
    lag = -1
    try:
        while True:
            for msg in watch.consume(num_messages=500, timeout=0.5):
                if msg.error() is not None:
                    continue
                if msg.topic() == settings.deadletter_topic:
                    reason = dict(msg.headers() or []).get("custos.reason") or b"?"
                    dead[reason.decode() if isinstance(reason, bytes) else reason] += 1
                    continue
                finding = msgspec.json.decode(msg.value() or b"{}")
                findings[_LEVEL.get(finding.get("risk_level_id", 0), "?")] += 1
                if finding.get("is_alert") and finding["activity_id"] == 1:
                    alerted.add(finding["evidences"][0]["actor"]["user"]["uid"])
                    if shown < 40:  # the first ones live; the rest are counted
                        echo(alert_line(finding))
                        shown += 1
            elapsed = time.monotonic() - t0
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode}; see {log}")
            if elapsed - last_status >= 5.0:
                lag = group_lag(
                    settings, settings.app_id, [settings.identity_topic, settings.agent_topic]
                )
                echo(f"[{elapsed:5.0f}s] produced {produced[0]:,}  worker lag {lag:,}  "
                     f"findings {sum(findings.values()):,}  identities alerted {len(alerted):,}  "
                     f"dead letters {sum(dead.values())}")  # fmt: skip
                last_status = elapsed
                if sim_done.is_set() and (sim_error or lag == 0):
                    break
            if elapsed > timeout_s:
                echo(f"stopping after {timeout_s:.0f} s")
                break
    finally:
        watch.close()
        worker.terminate()
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
    if sim_error:
        raise sim_error[0]
    elapsed = time.monotonic() - t0
    sim = sim_report[0] if sim_report else None
    echo("")
    echo("Summary")
    echo("-------")
    if sim is not None:
        echo(f"  simulated events       {sim.events:>10,}  ({sim.events_per_s:,.0f}/s into Kafka)")
        echo(f"  labelled campaigns     {sim.campaigns:>10,}  ({demo_dir}/labels.jsonl)")
    echo(f"  identities alerted     {len(alerted):>10,}")
    for level in ("Critical", "High", "Medium", "Low", "Info"):
        if findings[level]:
            echo(f"  findings {level:<13} {findings[level]:>10,}")
    for reason, n in sorted(dead.items()):
        echo(f"  dead letter {reason:<18} {n:>6,}")
    caught_up = "yes" if lag == 0 else "no"
    echo(f"  wall time              {elapsed:>10.1f} s; worker caught up: {caught_up}")
    echo(f"Findings are OCSF 2004 JSON on {settings.alerts_topic}; the broker keeps running "
         "(custos kafka down stops it).")  # fmt: skip
    return {
        "produced": produced[0],
        "findings": dict(findings),
        "alerted": len(alerted),
        "dead": dict(dead),
        "elapsed_s": elapsed,
        "caught_up": lag == 0,
    }
