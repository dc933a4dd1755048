"""``custos bench-response``: event → credential revoked latency, under load (printed figures).

Runs the real parts as separate processes on fresh topics - the credential broker, ``workers``
workers in one consumer group (sharing the input partitions; one by default), one responder -
waits until the group owns every partition, keeps simulated traffic flowing at ``load``
events/s, and then, one after another, compromises ``compromises`` agents: each holds a live
credential from the broker, then presents a credential issued to someone else (a Critical
rule). The clock starts when that event is handed to the producer and stops when the broker
first refuses the agent's own credential. Whether the load was held is printed beside: events
sent per second of sending, and scored per second by the workers over the same time. The last
line printed is one JSON object.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from pipeline.config import Settings, env_var
from pipeline.kafka.clients import make_producer
from pipeline.kafka.metrics import scrape
from pipeline.kafka.topics import TopicSpec, apply_topics
from pipeline.ops.localhost import call_json, free_port, healthy, wait_until
from pipeline.ops.localhost import stop as stop_all
from pipeline.simulate import Simulation

Echo = Callable[[str], None]

#: A compromise not refused within this long counts as missed, and ends the run: under a load
#: the workers cannot hold, the backlog only grows and every later one would miss too.
REFUSE_WITHIN_S = 60.0


def _misuse(agent: str, uid: str) -> bytes:
    return msgspec.json.encode({
        "class_uid": 6003, "category_uid": 6, "activity_id": 2, "time": int(time.time() * 1000),
        "status_id": 1, "metadata": {"uid": uid, "version": "1.8.0"},
        "actor": {"user": {"uid": agent, "type_id": 99}, "session": {"uid": "task-1"}},
        "api": {"operation": "crm.read", "service": {"name": "crm"}},
        "unmapped": {"identity_kind": "agent",
                     "credential": {"uid": f"stolen-{uid}", "issued_to": "agt-victim"}},
    })  # fmt: skip


def _owners(ports: list[int]) -> list[float]:
    """Each worker's number of owned input partitions (0 for one that does not answer)."""
    return [scrape(port, timeout=2).get("custos_partitions_owned", 0.0) for port in ports]


def group_settled(owned: list[float], partitions: int) -> bool:
    """Every partition owned, by as many workers as can have one: while a rebalance is under
    way a worker that was revoked still counts its old partitions, so the sum runs over.

    >>> group_settled([6.0, 0.0], 6), group_settled([6.0, 3.0], 6), group_settled([3.0, 3.0], 6)
    (False, False, True)
    """
    busy = sum(1 for n in owned if n > 0)
    return sum(owned) == partitions and busy == min(len(owned), partitions)


def _scored(ports: list[int]) -> float:
    return sum(scrape(port, timeout=2).get("custos_scored_total", 0.0) for port in ports)


def run_bench_response(
    settings: Settings, *, compromises: int, load: float, identities: int, workers: int = 1,
    echo: Echo = print,
) -> dict[str, Any]:
    if settings.managed_broker:
        from pipeline.kafka.broker import Broker

        Broker(settings).up()
    tag = f"rbench-{int(time.time())}"
    s = dataclasses.replace(
        settings, identity_topic=f"{tag}.identity", agent_topic=f"{tag}.agent",
        deadletter_topic=f"{tag}.dlq", alerts_topic=f"{tag}.alerts",
        scores_topic=f"{tag}.scores", quarantine_topic=f"{tag}.quarantine",
        approvals_topic=f"{tag}.approvals", acks_topic=f"{tag}.acks",
        quarantine_deadletter_topic=f"{tag}.quarantine-dlq", feedback_topic=f"{tag}.feedback",
        models_topic=f"{tag}.models", agent_models_topic=f"{tag}.agent-models",
        reports_topic=f"{tag}.reports",
    )  # fmt: skip
    names = (s.identity_topic, s.agent_topic, s.deadletter_topic, s.alerts_topic,
             s.scores_topic, s.quarantine_topic, s.approvals_topic, s.acks_topic,
             s.quarantine_deadletter_topic, s.feedback_topic)  # fmt: skip
    apply_topics(s, [TopicSpec(t, s.worker_partitions, 1, {}) for t in names])
    control = (s.models_topic, s.agent_models_topic, s.reports_topic)
    apply_topics(s, [TopicSpec(t, 1, 1, {}) for t in control])
    tmp = Path(tempfile.mkdtemp(prefix="custos-rbench-"))
    broker_port = free_port()
    env = dict(os.environ)
    for name, value in {
        "bootstrap": s.bootstrap_servers, "home": str(tmp / "home"),
        "identity_topic": s.identity_topic, "agent_topic": s.agent_topic,
        "deadletter_topic": s.deadletter_topic, "alerts_topic": s.alerts_topic,
        "scores_topic": s.scores_topic, "quarantine_topic": s.quarantine_topic,
        "approvals_topic": s.approvals_topic, "acks_topic": s.acks_topic,
        "quarantine_deadletter_topic": s.quarantine_deadletter_topic,
        "rejections_topic": s.agent_topic, "broker_state_dir": str(tmp / "broker"),
        "broker_port": str(broker_port),
        "app_id": f"{tag}-worker", "responder_group": f"{tag}-responders",
        "worker_batch_within_s": str(settings.worker_batch_within_s),
        "feedback_topic": s.feedback_topic, "models_topic": s.models_topic,
        "agent_models_topic": s.agent_models_topic, "reports_topic": s.reports_topic,
    }.items():  # fmt: skip
        env[env_var(name)] = value
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str, log: str = "", **extra: str) -> subprocess.Popen[bytes]:
        out = open(tmp / f"{log or args[0]}.log", "wb")
        penv = {**env, **{env_var(k): v for k, v in extra.items()}}
        procs.append(subprocess.Popen([sys.executable, "-m", "pipeline", *args], env=penv,
                                      stdout=out, stderr=subprocess.STDOUT))  # fmt: skip
        return procs[-1]

    stop = threading.Event()
    sent = [0]
    sending = [0.0, 0.0]  # perf_counter at the first and after the last send
    base = f"http://127.0.0.1:{broker_port}"
    sim = Simulation(s, identities=identities, duration_s=3600.0, seed=7)
    background = [(t, k, v) for t, k, v, _ in sim.events()]
    ports = [free_port() for _ in range(workers)]
    try:
        start("broker")
        wait_until(lambda: healthy(base), 30, "credential broker")
        token = (tmp / "broker" / "api-token").read_text().strip()
        # One group, one data directory and web port each; one home: the first worker makes
        # the command signing key, the others (started after it exists) sign with it too.
        ws = [start("worker", log=f"worker-{i}", worker_web_port=str(port),
                    worker_datadir=str(tmp / f"worker-{i}"))
              for i, port in enumerate(ports[:1])]  # fmt: skip
        wait_until(lambda: (tmp / "home/keys/commands.jwks.json").exists(), 60, "worker keys")
        ws += [start("worker", log=f"worker-{i}", worker_web_port=str(port),
                     worker_datadir=str(tmp / f"worker-{i}"))
               for i, port in enumerate(ports[1:], 1)]  # fmt: skip
        start("respond")
        t_join = time.perf_counter()

        def settled() -> bool:
            if any(w.poll() is not None for w in ws):
                raise RuntimeError(f"a worker exited; see {tmp}/worker-*.log")
            return group_settled(_owners(ports), s.worker_partitions)

        wait_until(settled, 600, f"the workers owning all partitions (logs in {tmp})", step=0.5)
        echo(f"  {workers} worker(s) own the {s.worker_partitions} partitions "
             f"{time.perf_counter() - t_join:.1f} s after starting: {_owners(ports)}")
        producer = make_producer(s)

        def load_loop() -> None:
            lp = make_producer(s)
            t0 = sending[0] = time.perf_counter()
            i = 0
            while not stop.is_set():
                t, key, value = background[i % len(background)]
                try:  # the simulation already uses s's topics
                    lp.produce(t, key=key, value=value)
                except BufferError:  # the producer is behind: wait, and count it as not sent
                    lp.poll(0.05)
                    continue
                i += 1
                if i % 100 == 0:
                    lp.poll(0)
                    ahead = i / load - (time.perf_counter() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
            sending[1] = time.perf_counter()
            lp.flush(30)
            sent[0] = i

        loader = threading.Thread(target=load_loop, daemon=True)
        scored0 = _scored(ports)
        if load > 0:
            loader.start()

        def one(agent: str) -> float | None:
            code, got = call_json("POST", f"{base}/v1/credentials", token,
                              {"agent": agent, "task": "task-1", "step": 1,
                               "scope": ["crm.read"]})  # fmt: skip
            if code != 201:
                raise RuntimeError(f"issue failed: {code} {got}")
            use = {"agent": agent, "task": "task-1", "step": 1, "operation": "crm.read"}
            t0 = time.perf_counter()
            producer.produce(s.agent_topic, key=agent.encode(), value=_misuse(agent, agent))
            producer.flush(10)
            try:
                wait_until(
                    lambda: call_json("POST", f"{base}/v1/access", got["credential"],
                                      use)[0] == 403,
                    REFUSE_WITHIN_S, f"{agent} refused", step=0.005,
                )  # fmt: skip
            except RuntimeError:
                echo(f"  {agent} not refused within {REFUSE_WITHIN_S:.0f} s (logs in {tmp})")
                return None
            return (time.perf_counter() - t0) * 1000

        warm = one("agt-rbench-warmup")  # the responder joining its group, first batches, JIT
        if warm is not None:
            echo(f"  warm-up compromise: {warm:,.0f} ms")
        lat: list[float] = []
        missed = int(warm is None)
        for i in range(compromises if warm is not None else 0):
            got_ms = one(f"agt-rbench-{i:04d}")
            if got_ms is None:
                missed += 1
                break
            lat.append(got_ms)
            time.sleep(0.2)
        stop.set()
        if load > 0:
            loader.join(60)
        # Scored while the load ran (its last events may still be on their way: at most a
        # batch or two short of the sent rate when the workers keep up).
        scored = _scored(ports) - scored0
    finally:
        stop.set()
        stop_all(procs)
    # A miss counts as the limit: the figures are then lower bounds.
    values = lat + [REFUSE_WITHIN_S * 1000] * missed
    p50, p99 = (float(x) for x in np.quantile(values, [0.5, 0.99]))
    secs = max(1e-9, sending[1] - sending[0])
    bound = f" ({missed} missed: lower bounds)" if missed else ""
    echo(f"  {len(lat)} of {compromises} compromises refused, {workers} worker(s), under "
         f"{load:,.0f} events/s of background traffic: event → credential refused p50 "
         f"{p50:,.0f} ms, p99 {p99:,.0f} ms, max {max(values):,.0f} ms{bound}")  # fmt: skip
    echo("  in order (ms): " + ", ".join(f"{x:.0f}" for x in lat))
    if load > 0:
        echo(f"  background: {sent[0]:,} sent in {secs:.1f} s ({sent[0] / secs:,.0f}/s), "
             f"{scored:,.0f} scored meanwhile ({scored / secs:,.0f}/s)")  # fmt: skip
    result = {"compromises": compromises, "load_events_per_s": load, "workers": workers,
              "p50_ms": round(p50, 1), "p99_ms": round(p99, 1), "max_ms": round(max(values), 1),
              "missed": missed,
              "sent_per_s": round(sent[0] / secs) if load > 0 else 0,
              "scored_per_s": round(scored / secs) if load > 0 else 0}  # fmt: skip
    echo(json.dumps(result))
    return result
