"""``custos bench-response``: event → credential revoked latency, under load (printed figures).

Runs the real parts as separate processes on fresh topics - the credential broker, one faust
worker, one responder - keeps simulated traffic flowing at ``load`` events/s, and then, one
after another, compromises ``compromises`` agents: each holds a live credential from the
broker, then presents a credential issued to someone else (a Critical rule). The clock starts
when that event is handed to the producer and stops when the broker first refuses the agent's
own credential. The last line printed is one JSON object.
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
from pipeline.kafka.topics import TopicSpec, apply_topics
from pipeline.ops.localhost import call_json, free_port, healthy, wait_until
from pipeline.ops.localhost import stop as stop_all
from pipeline.simulate import Simulation

Echo = Callable[[str], None]


def _misuse(agent: str, uid: str) -> bytes:
    return msgspec.json.encode({
        "class_uid": 6003, "category_uid": 6, "activity_id": 2, "time": int(time.time() * 1000),
        "status_id": 1, "metadata": {"uid": uid, "version": "1.8.0"},
        "actor": {"user": {"uid": agent, "type_id": 99}, "session": {"uid": "task-1"}},
        "api": {"operation": "crm.read", "service": {"name": "crm"}},
        "unmapped": {"identity_kind": "agent",
                     "credential": {"uid": f"stolen-{uid}", "issued_to": "agt-victim"}},
    })  # fmt: skip


def run_bench_response(
    settings: Settings, *, compromises: int, load: float, identities: int, echo: Echo = print
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
        "broker_port": str(broker_port), "worker_web_port": str(free_port()),
        "app_id": f"{tag}-worker", "responder_group": f"{tag}-responders",
        "worker_batch_within_s": str(settings.worker_batch_within_s),
        "feedback_topic": s.feedback_topic, "models_topic": s.models_topic,
        "agent_models_topic": s.agent_models_topic, "reports_topic": s.reports_topic,
    }.items():  # fmt: skip
        env[env_var(name)] = value
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> None:
        log = open(tmp / f"{args[0]}.log", "wb")
        procs.append(subprocess.Popen([sys.executable, "-m", "pipeline", *args], env=env,
                                      stdout=log, stderr=subprocess.STDOUT))  # fmt: skip

    stop = threading.Event()
    sent = [0]
    base = f"http://127.0.0.1:{broker_port}"
    try:
        start("broker")
        wait_until(lambda: healthy(base), 30, "credential broker")
        token = (tmp / "broker" / "api-token").read_text().strip()
        start("worker")
        wait_until(lambda: (tmp / "home/keys/commands.jwks.json").exists(), 60, "worker keys")
        start("respond")

        sim = Simulation(s, identities=identities, duration_s=3600.0, seed=7)
        background = [(t, k, v) for t, k, v, _ in sim.events()]
        producer = make_producer(s)

        def load_loop() -> None:
            lp = make_producer(s)
            t0 = time.perf_counter()
            i = 0
            while not stop.is_set():
                t, key, value = background[i % len(background)]
                lp.produce(t, key=key, value=value)  # the simulation already uses s's topics
                i += 1
                if i % 100 == 0:
                    lp.poll(0)
                    ahead = i / load - (time.perf_counter() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
            lp.flush(30)
            sent[0] = i

        loader = threading.Thread(target=load_loop, daemon=True)
        if load > 0:
            loader.start()

        def one(agent: str) -> float:
            code, got = call_json("POST", f"{base}/v1/credentials", token,
                              {"agent": agent, "task": "task-1", "step": 1,
                               "scope": ["crm.read"]})  # fmt: skip
            if code != 201:
                raise RuntimeError(f"issue failed: {code} {got}")
            use = {"agent": agent, "task": "task-1", "step": 1, "operation": "crm.read"}
            t0 = time.perf_counter()
            producer.produce(s.agent_topic, key=agent.encode(), value=_misuse(agent, agent))
            producer.flush(10)
            wait_until(
                lambda: call_json("POST", f"{base}/v1/access", got["credential"], use)[0] == 403,
                60, f"{agent} refused (logs in {tmp})", step=0.005,
            )  # fmt: skip
            return (time.perf_counter() - t0) * 1000

        warm = one("agt-rbench-warmup")  # group joins, first batch, JIT of everything
        echo(f"  warm-up compromise (consumer groups joining): {warm:,.0f} ms")
        lat = []
        for i in range(compromises):
            lat.append(one(f"agt-rbench-{i:04d}"))
            time.sleep(0.2)
        stop.set()
        if load > 0:
            loader.join(60)
    finally:
        stop.set()
        stop_all(procs)
    p50, p99 = (float(x) for x in np.quantile(lat, [0.5, 0.99]))
    echo(f"  {compromises} compromises under {load:,.0f} events/s of background traffic "
         f"({sent[0]:,} sent): event → credential refused p50 {p50:,.0f} ms, "
         f"p99 {p99:,.0f} ms, max {max(lat):,.0f} ms")  # fmt: skip
    result = {"compromises": compromises, "load_events_per_s": load, "p50_ms": round(p50, 1),
              "p99_ms": round(p99, 1), "max_ms": round(max(lat), 1)}  # fmt: skip
    echo(json.dumps(result))
    return result
