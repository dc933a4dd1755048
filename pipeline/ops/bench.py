"""``custos bench``: printed figures, never timed tests.

1. Offline core: the pure detection path (decode → features → baselines → detector → rules →
   policy) over simulated events in one process: events/s, state bytes per identity (p50,
   p99, max), RSS, and microseconds per event of each stage timed alone (:func:`stage_costs`).
2. Through Kafka: the same events into fresh topics, then (a) raw confluent-kafka consumption
   for reference, (b) faust alone (an agent that only counts: :mod:`pipeline.stream.ceiling`,
   what the worker's per-event path cost before it left faust) and (c) one worker draining
   them: events/s. Then a paced phase with the worker caught up gives event → scored latency
   (Kafka timestamp to batch scored, p50/p99 of the paced events alone: the difference of the
   worker's latency histogram before and after), and (d) a second worker, on an empty data
   directory in the same group, restores every partition's state from the changelog: the
   recovery time of a lost worker (process start and group join included).

The last line printed is one JSON object (events_per_s, offline_events_per_s, us_per_event,
bytes_per_identity_p50 / _p99 / _max, side_parts, side_bytes_max, identities, workers,
rss_mb, p50_ms, p99_ms, restore_s, p99_event_to_revoked_ms at revoked_at_load_events_per_s,
...). Event → credential revoked comes from
:func:`~pipeline.ops.bench_response.run_bench_response` (10 compromises; ``custos
bench-response`` runs more).
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

import numpy as np

from pipeline.config import Settings, env_var
from pipeline.detection import Detection, side_owner
from pipeline.events.schemas import EventDecoder
from pipeline.kafka.clients import make_consumer, make_producer, read_all
from pipeline.kafka.metrics import histogram_quantiles, scrape
from pipeline.kafka.topics import TopicSpec, apply_topics
from pipeline.ops.localhost import free_port, stop
from pipeline.scores.directory import Directory
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
    det = Detection.from_settings(settings, directory=directory)
    det.defer_writes = True  # as replay and evaluate run it (Engine.run): states written once
    store: dict[str, bytes] = {}
    t0 = time.perf_counter()
    batch = []
    for _, _, value, _ in raw:
        batch.append(decoder.decode(value))
        if len(batch) >= settings.worker_batch:
            det.process(batch, store)
            batch = []
    det.process(batch, store)
    det.flush_states(store)
    secs = time.perf_counter() - t0
    # An identity's state (what every event reads) and, for the few with an incident, held
    # events or feedback, its side part (what only the slow path reads), sized apart.
    sides = np.array([len(v) for k, v in store.items() if side_owner(k) is not None] or [0])
    states = [v for k, v in store.items() if side_owner(k) is None]
    sizes = np.array([len(v) for v in states] or [0])
    return {
        "store": store,
        "events": len(raw),
        "seconds": secs,
        "events_per_s": len(raw) / secs,
        "identities_seen": len(states),
        "side_parts": int((sides > 0).sum()),
        "side_bytes_p99": float(np.percentile(sides, 99)),
        "side_bytes_max": int(sides.max()),
        "bytes_per_identity": float(sizes.mean()),
        "bytes_per_identity_p50": float(np.percentile(sizes, 50)),
        "bytes_per_identity_p99": float(np.percentile(sizes, 99)),
        "max_bytes_per_identity": int(sizes.max()),
        "rss_mb": _rss_mb(),
        "us_per_event": stage_costs(
            settings, [v for _, _, v, _ in raw], directory,
            whole_us=secs / max(1, len(raw)) * 1e6, states=states,
        ),
    }, raw


def stage_costs(
    settings: Settings, values: list[bytes], directory: Directory, *, whole_us: float,
    states: list[bytes], limit: int = 200_000,
) -> dict[str, float]:
    """Microseconds per event of each stage, each timed alone over the same events.

    decode, features, baselines (observe + deviations + learn, own state only), detector
    (LODA score and learn, per micro-batch), rules, state codec (one load and dump per
    identity, as the core with deferred writes does, over ``states``: the run's own);
    ``rest`` is the whole core's time per event (``whole_us``, decode included) minus those:
    the rounds glue, peer blend, calibration, policy, explanations and findings. Timed alone,
    a stage runs warmer than inside the core, so ``rest`` is an upper bound.
    """
    from pipeline.baselines.features import extract_rows
    from pipeline.baselines.layout import DEVIATIONS
    from pipeline.scores.detectors import Loda
    from pipeline.scores.rules import RuleState

    values = values[:limit]
    n = len(values)
    out: dict[str, float] = {}
    decoder = EventDecoder(max_future_skew_ms=10**13)
    t = time.perf_counter()
    events = [decoder.decode(v) for v in values]
    out["decode"] = time.perf_counter() - t
    # As the core extracts them: a micro-batch's events at once, flat; the Features objects
    # the per-event calls below read are built outside the timing (the core builds few).
    b = settings.worker_batch
    t = time.perf_counter()
    batches = [extract_rows(events[i:i + b]) for i in range(0, n, b)]
    out["features"] = time.perf_counter() - t
    feats = [r.features(i) for r in batches for i in range(len(r))]
    det = Detection.from_settings(settings, directory=directory)
    bm, rules = det.baseline_model, det.rules
    fresh: dict[str, Any] = {}  # per identity: a baseline from nothing
    rows = np.empty((n, len(DEVIATIONS)))
    t = time.perf_counter()
    for i, (e, f) in enumerate(zip(events, feats, strict=True)):
        st = fresh.get(e.identity_uid)
        if st is None:
            st = fresh[e.identity_uid] = bm.new_state()
        bm.observe(st, f)
        rows[i] = bm.deviations(st, f)[0]
        bm.learn_one(st, f)
    out["baselines"] = time.perf_counter() - t
    loda = Loda(n_features=rows.shape[1])
    t = time.perf_counter()
    for i in range(0, n, b):
        loda.score_many(rows[i:i + b])
        loda.learn_many(rows[i:i + b])
    out["detector"] = time.perf_counter() - t
    rstates: dict[str, RuleState] = {}
    t = time.perf_counter()
    for e in events:
        rs = rstates.get(e.identity_uid)
        if rs is None:
            rs = rstates[e.identity_uid] = RuleState()
        rules.check(rs, e, directory.lookup(e.identity_uid))
    out["rules"] = time.perf_counter() - t
    # The core, writes deferred as replay runs it, decodes an identity's state when first seen
    # and encodes it once at the end: one codec round trip per identity, over the real states
    # the whole run left behind.
    blobs = states or [det.dump_state(det.load_state(None))]
    t = time.perf_counter()
    for blob in blobs:
        det.dump_state(det.load_state(blob))
    out["state_codec"] = time.perf_counter() - t
    us = {k: v / n * 1e6 for k, v in out.items()}
    us["rest"] = max(0.0, whole_us - sum(us.values()))
    us["whole"] = whole_us
    return {k: round(v, 2) for k, v in us.items()}


def bench_kafka(
    settings: Settings,
    raw: list[tuple[str, bytes, bytes, int]],
    directory_path: Path,
    echo: Echo,
    paced_rate: float,
    paced_seconds: float,
    audit_records: int = 0,
    memory_identities: int = 0,
    states: dict[str, bytes] | None = None,
) -> dict[str, Any]:
    tag = f"bench-{int(time.time())}"
    s = dataclasses.replace(
        settings,
        identity_topic=f"{tag}.identity",
        agent_topic=f"{tag}.agent",
        deadletter_topic=f"{tag}.dlq",
        alerts_topic=f"{tag}.alerts",
        scores_topic=f"{tag}.scores",
        models_topic=f"{tag}.models",
        agent_models_topic=f"{tag}.agent-models",
        reports_topic=f"{tag}.reports",
        feedback_topic=f"{tag}.feedback",
        quarantine_topic=f"{tag}.quarantine",
        approvals_topic=f"{tag}.approvals",
        app_id=f"{tag}-worker",
    )
    parts = s.worker_partitions
    # Every topic the worker writes (its preflight refuses to start without them).
    names = (s.identity_topic, s.agent_topic, s.deadletter_topic, s.alerts_topic, s.scores_topic,
             s.feedback_topic, s.quarantine_topic, s.approvals_topic)  # fmt: skip
    apply_topics(s, [TopicSpec(t, parts, 1, {}) for t in names])
    control = (s.models_topic, s.agent_models_topic, s.reports_topic)
    apply_topics(s, [TopicSpec(t, 1, 1, {}) for t in control])
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
        "models_topic": s.models_topic, "agent_models_topic": s.agent_models_topic,
        "reports_topic": s.reports_topic, "feedback_topic": s.feedback_topic,
        "quarantine_topic": s.quarantine_topic, "approvals_topic": s.approvals_topic,
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
        echo(f"  worker drained {len(raw):,} events: {worker_rate:,.0f} events/s, "
             f"RSS {rss:,.0f} MB")  # fmt: skip
        worker_us = worker_stages(scrape(port), worker_rate)
        echo("  worker µs per event: " + ", ".join(f"{k} {v:.1f}" for k, v in worker_us.items()))

        # Paced phase: the worker is caught up; send at a steady rate and read the latency.
        paced = raw[: int(paced_rate * paced_seconds)]
        before = scrape(port)  # the drain's latencies, subtracted from the paced phase's
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
        p50, p99 = (x * 1000 for x in histogram_quantiles(
            before, m, "custos_event_to_score_latency_seconds", (0.5, 0.99)))  # fmt: skip
        echo(f"  paced {paced_rate:,.0f} events/s for {paced_seconds:.0f} s: "
             f"event → scored p50 {p50:.0f} ms, p99 {p99:.0f} ms")  # fmt: skip
        # Snapshot mode: the drain may be shorter than one interval, so what a snapshot costs
        # is printed apart (each one: the changed states encoded and written, acknowledged).
        snaps = int(m.get("custos_state_snapshots_total", 0.0))
        snap_s = m.get('custos_stage_seconds_total{stage="snapshot"}', 0.0)
        snapshot = {"snapshot_interval_s": settings.snapshot_interval_s, "snapshots": snaps,
                    "snapshot_ms_mean": round(snap_s / snaps * 1000, 1) if snaps else None}
        if snaps:
            echo(f"  snapshots (every {settings.snapshot_interval_s:g} s): {snaps} while it ran, "
                 f"{snap_s / snaps * 1000:,.0f} ms each on average")  # fmt: skip
    finally:
        stop([worker])
    restore = bench_restore(env, parts, log, echo)
    memory = (
        bench_memory(s, env, states or {}, memory_identities, len(raw), log, echo)
        if memory_identities
        else {}
    )
    audit = (
        bench_audit(s, env, len(raw), log, echo, worker_rate, audit_records)
        if audit_records
        else {}
    )
    return {
        **audit,
        **memory,
        "produce_per_s": len(raw) / produce_s,
        "raw_consume_per_s": n_raw / raw_s,
        "faust_ceiling_per_s": ceiling_rate,
        "worker_events_per_s": worker_rate,
        "worker_us_per_event": worker_us,
        "worker_rss_mb": rss,
        **restore,
        "p50_ms": p50,
        "p99_ms": p99,
        **snapshot,
    }


def _owning(worker: subprocess.Popen[bytes], port: int, parts: int,
            deadline: float) -> dict[str, float]:  # fmt: skip
    """The worker's metrics once it owns all ``parts`` partitions (or at ``deadline``, or when
    it exited)."""
    m: dict[str, float] = {}
    while time.perf_counter() < deadline and worker.poll() is None:
        try:
            m = scrape(port)
        except OSError:
            m = {}
        if m.get("custos_partitions_owned", 0.0) >= parts:
            break
        time.sleep(0.2)
    return m


def bench_restore(env: dict[str, str], parts: int, log: Path, echo: Echo) -> dict[str, Any]:
    """A new worker (empty data directory, same group) takes every partition over: seconds
    from its start until it owns them all with their state read back from the changelog."""
    port = free_port()
    wenv = {**env, env_var("worker_web_port"): str(port),
            env_var("worker_datadir"): tempfile.mkdtemp(prefix="custos-bench-")}  # fmt: skip
    t0 = time.perf_counter()
    worker = subprocess.Popen([sys.executable, "-m", "pipeline", "worker"], env=wenv,
                              stdout=open(log.with_name("worker-restore.log"), "wb"),
                              stderr=subprocess.STDOUT)  # fmt: skip
    try:
        m = _owning(worker, port, parts, t0 + 600)
        secs = time.perf_counter() - t0
    finally:
        stop([worker])
    records = int(m.get("custos_state_restored_total", m.get("custos_state_restored", 0.0)))
    identities = int(m.get("custos_identities_held", 0.0))
    echo(f"  restore: a new worker owned all {parts} partitions, {identities:,} identities "
         f"from {records:,} changelog records (not yet compacted), {secs:.1f} s after it "
         "started")  # fmt: skip
    return {"restore_s": round(secs, 1), "restored_records": records,
            "restored_identities": identities}  # fmt: skip


def bench_memory(
    s: Settings, env: dict[str, str], states: dict[str, bytes], identities: int, n_events: int,
    log: Path, echo: Echo,
) -> dict[str, Any]:
    """A worker holding ``identities`` identity states: their records are written to a new
    changelog (copies of the offline run's own states and side parts, under new identity uids,
    in the envelope the worker writes), a worker of a new group restores them all, then drains
    the bench's events. Its RSS after the restore and after the drain, the restore time and
    its events/s while it holds them all."""
    from pipeline.detection import side_key
    from pipeline.stream.app import changelog_topic, internal_topics
    from pipeline.stream.store import PartitionStore

    app_id = f"{s.app_id}-memory"
    sm = dataclasses.replace(s, app_id=app_id)
    parts = sm.worker_partitions
    apply_topics(sm, [TopicSpec(name, parts, 1, config)
                      for name, config in internal_topics(sm).items()])  # fmt: skip
    changelog = changelog_topic(sm)
    producer = make_producer(sm, **{"linger.ms": 50, "batch.size": 1_000_000})

    def emit(partition: int, key: bytes, value: bytes | None) -> None:
        while True:
            try:
                producer.produce(changelog, key=key, value=value, partition=partition)
                return
            except BufferError:
                producer.poll(0.05)

    store = PartitionStore(parts, emit)
    uids = [k for k in states if side_owner(k) is None]
    t0 = time.perf_counter()
    n = 0
    for r in range(identities // max(1, len(uids)) + 1):
        for uid in uids:
            if n >= identities:
                break
            copy = uid if r == 0 else f"{uid}~{r}"
            side = states.get(side_key(uid))
            if side is not None:
                store[side_key(copy)] = side
            store[copy] = states[uid]
            n += 1
            if n % 50_000 == 0:  # this process keeps none of them
                store.drop(set(range(parts)))
                store.forget()
                producer.poll(0)
    store.drop(set(range(parts)))
    producer.flush(300)
    echo(f"  memory: {n:,} identity states written to a new changelog in "
         f"{time.perf_counter() - t0:.1f} s")  # fmt: skip

    port = free_port()
    wenv = {**env, env_var("app_id"): app_id, env_var("worker_web_port"): str(port),
            env_var("worker_datadir"): tempfile.mkdtemp(prefix="custos-bench-")}  # fmt: skip
    t0 = time.perf_counter()
    worker = subprocess.Popen([sys.executable, "-m", "pipeline", "worker"], env=wenv,
                              stdout=open(log.with_name("worker-memory.log"), "wb"),
                              stderr=subprocess.STDOUT)  # fmt: skip
    try:
        m = _owning(worker, port, parts, t0 + 900)
        restore_s = time.perf_counter() - t0
        held = int(m.get("custos_identities_held", 0.0))
        rss_restored = _proc_rss_mb(worker.pid)
        echo(f"  memory: a worker restored {held:,} identities in {restore_s:.1f} s; RSS "
             f"{rss_restored:,.0f} MB ({rss_restored * 2**20 / max(1, held):,.0f} B per "
             "identity, the interpreter and models included)")  # fmt: skip
        rate = _drain(worker, port, "custos_scored_total", n_events, log)
        rss = _proc_rss_mb(worker.pid)
        echo(f"  memory: holding them, it drained {n_events:,} events at {rate:,.0f}/s; RSS "
             f"{rss:,.0f} MB")  # fmt: skip
        page_p50, page_max = _identity_page_ms(port, uids, identities, echo)
        echo(f"  memory: its /custos/identity answer (the console's identity page) median "
             f"{page_p50:.1f} ms, worst {page_max:.1f} ms (50 identities over "
             f"{PAGE_SPREAD_S:.0f} s, a housekeeping tick included)")  # fmt: skip
    finally:
        stop([worker])
    return {"memory_identities": held, "memory_restore_s": round(restore_s, 1),
            "memory_rss_restored_mb": round(rss_restored),
            "memory_worker_events_per_s": round(rate), "memory_rss_mb": round(rss),
            "memory_identity_page_ms_p50": round(page_p50, 1),
            "memory_identity_page_ms_max": round(page_max, 1)}  # fmt: skip


#: The identity page's requests are spread over this long: more than the worker's 10-s
#: housekeeping tick, so the worst answer includes one (what an analyst may meet).
PAGE_SPREAD_S = 12.0


def _identity_page_ms(
    port: int, uids: list[str], identities: int, echo: Echo | None = None
) -> tuple[float, float]:
    """Median and worst time of the worker's identity description, for 50 held copies asked
    over :data:`PAGE_SPREAD_S` (``echo``: also say the five slowest)."""
    import random
    import statistics
    import urllib.request
    from urllib.parse import quote

    rng = random.Random(5)
    rounds = max(1, identities // max(1, len(uids)))
    times = []
    for i in range(50):
        if i:
            time.sleep(PAGE_SPREAD_S / 49)
        r = rng.randrange(rounds)
        uid = rng.choice(uids) + (f"~{r}" if r else "")
        url = f"http://127.0.0.1:{port}/custos/identity/{quote(uid, safe='')}?kind=agent"
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=10) as resp:
            resp.read()
        times.append((time.perf_counter() - t0) * 1000)
    if echo is not None:
        slowest = ", ".join(f"{t:.1f}" for t in sorted(times, reverse=True)[:5])
        echo(f"  memory: the five slowest identity answers (ms): {slowest}")
    return statistics.median(times), max(times)


def bench_audit(
    s: Settings, env: dict[str, str], n_events: int, log: Path, echo: Echo, alone: float,
    records: int = 20_000,
) -> dict[str, Any]:
    """Audit log cost: append throughput alone, then the auditor and a worker side by side.

    The auditor works through ``records`` findings (an alert storm) while a second worker (a
    new consumer group) drains the same events again; the worker's events/s against ``alone``
    (its rate without the auditor) is the audit's cost on detection on this machine.
    """
    import threading

    from confluent_kafka import TopicPartition

    from pipeline.alerts.findings import build_finding, encode_finding
    from pipeline.alerts.policy import RiskPolicy
    from pipeline.alerts.state import RiskState
    from pipeline.audit.log import AuditLog
    from pipeline.scores.explanations import RuleHit, Score

    pure = AuditLog("bench")
    t0 = time.perf_counter()
    for i in range(records):
        pure.append(kind="alert.created", subject=f"agt-{i % 1000}", actor="custos",
                    time_ms=i, why={"explanation": ["credential_misuse: ..."]},
                    refs={"finding": f"f-{i}", "events": [f"e-{i}"]},
                    detail={"risk": 80})  # fmt: skip
    append_rate = records / (time.perf_counter() - t0)
    echo(f"  audit log append (pure, one process): {append_rate:,.0f} records/s")

    a = dataclasses.replace(s, alerts_topic=f"{s.alerts_topic}-audit-in",
                            audit_topic=f"{s.alerts_topic}-audit",
                            audit_checkpoints_topic=f"{s.alerts_topic}-audit-cp",
                            quarantine_topic=f"{s.alerts_topic}-audit-q",
                            approvals_topic=f"{s.alerts_topic}-audit-ap",
                            acks_topic=f"{s.alerts_topic}-audit-acks",
                            auditor_group=f"{s.app_id}-auditor",
                            home=tempfile.mkdtemp(prefix="custos-bench-audit-"))  # fmt: skip
    apply_topics(a, [TopicSpec(t, 1, 1, {}) for t in (
        a.alerts_topic, a.audit_topic, a.audit_checkpoints_topic, a.quarantine_topic,
        a.approvals_topic, a.acks_topic)])  # fmt: skip
    hit = RuleHit("credential_misuse", 5, "agt-1 used credential c-1 issued to agt-2")
    producer = make_producer(a)
    for i in range(records):
        d = RiskPolicy().decide(RiskState(), Score(f"e-{i}", f"agt-{i % 1000}", "agent",
                                                   1_790_000_000_000 + i, 0.1, 0.0,
                                                   rules=(hit,), rationale="told to"))  # fmt: skip
        assert d is not None
        while True:
            try:
                value = encode_finding(build_finding(d, product_version="b"))
                producer.produce(a.alerts_topic, key=d.identity_uid.encode(), value=value)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(120)

    aenv = dict(env)
    for name in ("alerts_topic", "audit_topic", "audit_checkpoints_topic", "quarantine_topic",
                 "approvals_topic", "acks_topic", "auditor_group", "home"):  # fmt: skip
        aenv[env_var(name)] = str(getattr(a, name))
    port = free_port()
    wenv = dict(env)
    wenv.update({env_var("app_id"): f"{s.app_id}-2", env_var("worker_web_port"): str(port),
                 env_var("worker_datadir"): tempfile.mkdtemp(prefix="custos-bench-")})  # fmt: skip
    auditor = subprocess.Popen([sys.executable, "-m", "pipeline", "audit", "run"], env=aenv,
                               stdout=open(log.with_name("auditor.log"), "wb"),
                               stderr=subprocess.STDOUT)  # fmt: skip
    worker = subprocess.Popen([sys.executable, "-m", "pipeline", "worker"], env=wenv,
                              stdout=open(log.with_name("worker-2.log"), "wb"),
                              stderr=subprocess.STDOUT)  # fmt: skip
    t0 = time.perf_counter()
    finished: list[float] = []

    def watch_audit() -> None:
        # The auditor's finish, seen while the worker drains (they run side by side). The
        # factory brings a secured cluster's TLS/SCRAM; librdkafka keeps logging to stderr.
        watch = make_consumer(a, "bench-watch", manual_commit=False, bulk_fetch=False,
                              logger=None)  # fmt: skip
        try:
            while time.perf_counter() - t0 < 600:
                tp = TopicPartition(a.audit_topic, 0)
                _, high = watch.get_watermark_offsets(tp, timeout=10)
                if high >= records + 1:  # + its config.start record
                    finished.append(time.perf_counter() - t0)
                    return
                time.sleep(0.2)
        finally:
            watch.close()

    watcher = threading.Thread(target=watch_audit, daemon=True)
    watcher.start()
    try:
        rate = _drain(worker, port, "custos_scored_total", n_events, log)
        watcher.join(600)
    finally:
        stop([worker, auditor])
    audit_s = finished[0] if finished else None
    audited = records / audit_s if audit_s else 0.0
    echo(f"  auditor through Kafka: {records:,} findings in {audit_s or 0:.1f} s "
         f"({audited:,.0f} records/s, checkpoint every {a.audit_checkpoint_records})")  # fmt: skip
    echo(f"  worker beside the auditor: {rate:,.0f} events/s vs {alone:,.0f} alone "
         f"({rate / alone:.0%})")  # fmt: skip
    return {"audit_append_per_s": round(append_rate), "auditor_records_per_s": round(audited),
            "worker_with_auditor_per_s": round(rate)}  # fmt: skip


def worker_stages(metrics: dict[str, float], rate: float) -> dict[str, float]:
    """The worker's microseconds per scored event, per stage of its per-event path (its
    ``custos_stage_seconds_total``), and ``other``: the drain's wall time per event (1 / its
    rate) minus those (the loop, rebalance and commit bookkeeping, time outside the units).

    >>> worker_stages({"custos_scored_total": 1000.0,
    ...                'custos_stage_seconds_total{stage="decode"}': 0.02}, 10_000.0)
    {'decode': 20.0, 'other': 80.0, 'whole': 100.0}
    """
    n = metrics.get("custos_scored_total", 0.0)
    if n <= 0 or rate <= 0:
        return {}
    prefix = 'custos_stage_seconds_total{stage="'
    us = {k[len(prefix):-2]: v / n * 1e6 for k, v in metrics.items() if k.startswith(prefix)}
    whole = 1e6 / rate
    us["other"] = max(0.0, whole - sum(us.values()))
    us["whole"] = whole
    return {k: round(v, 2) for k, v in us.items()}


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
    audit_records: int = 0,
    response_load: float = 0.0,
    memory_identities: int = 0,
    console_alerts: int = 0,
    echo: Echo = print,
) -> dict[str, Any]:
    from pipeline.simulate.profiles import build_population

    with tempfile.TemporaryDirectory() as tmp:
        directory_path = Path(tmp) / "directory.jsonl"
        write_directory(build_population(identities, seed=seed), directory_path)
        directory = Directory.load(directory_path)
        echo(f"bench: {identities:,} identities, {duration_s / 3600:.1f} h of simulated traffic")
        offline, raw = bench_offline(settings, identities, duration_s, seed, directory)
        echo(f"  offline core: {offline['events']:,} events in {offline['seconds']:.1f} s "
             f"({offline['events_per_s']:,.0f}/s); state {offline['bytes_per_identity']:.0f} B "
             f"per identity (p50 {offline['bytes_per_identity_p50']:.0f}, p99 "
             f"{offline['bytes_per_identity_p99']:.0f}, max {offline['max_bytes_per_identity']}); "
             f"side parts {offline['side_parts']:,} (p99 {offline['side_bytes_p99']:.0f} B, max "
             f"{offline['side_bytes_max']} B); RSS {offline['rss_mb']:,.0f} MB")  # fmt: skip
        stages = offline["us_per_event"]
        echo("  µs per event, each stage timed alone: " + ", ".join(
            f"{k} {v:.1f}" for k, v in stages.items()))  # fmt: skip
        result: dict[str, Any] = {
            "identities": identities,
            "events": offline["events"],
            "offline_events_per_s": round(offline["events_per_s"]),
            "bytes_per_identity": round(offline["bytes_per_identity"]),
            "bytes_per_identity_p50": round(offline["bytes_per_identity_p50"]),
            "bytes_per_identity_p99": round(offline["bytes_per_identity_p99"]),
            "bytes_per_identity_max": offline["max_bytes_per_identity"],
            "side_parts": offline["side_parts"],
            "side_bytes_max": offline["side_bytes_max"],
            "us_per_event": stages,
            "offline_rss_mb": round(offline["rss_mb"]),
            "workers": 1,
        }
        if kafka:
            if settings.managed_broker:
                from pipeline.kafka.broker import Broker

                Broker(settings).up()
            k = bench_kafka(settings, raw, directory_path, echo, paced_rate, paced_seconds,
                            audit_records, memory_identities, offline["store"])  # fmt: skip
            result.update(
                events_per_s=round(k["worker_events_per_s"]),
                p50_ms=round(k["p50_ms"], 1),
                p99_ms=round(k["p99_ms"], 1),
                raw_consume_per_s=round(k["raw_consume_per_s"]),
                faust_ceiling_per_s=round(k["faust_ceiling_per_s"]),
                produce_per_s=round(k["produce_per_s"]),
                worker_rss_mb=round(k["worker_rss_mb"]),
                worker_us_per_event=k["worker_us_per_event"],
                rss_mb=round(k["worker_rss_mb"]),
                **{key: v for key, v in k.items()
                   if key.startswith(("audit", "worker_with", "restore", "memory", "snapshot"))},
            )
            if response_load > 0:
                from pipeline.ops.bench_response import run_bench_response

                echo(f"  containment: 10 agents compromised in turn under {response_load:,.0f} "
                     "background events/s")  # fmt: skip
                def table(line: str) -> None:  # its own JSON line is merged into ours
                    if not line.startswith("{"):
                        echo(line)

                r = run_bench_response(settings, compromises=10, load=response_load,
                                       identities=min(identities, 5_000), echo=table)  # fmt: skip
                result.update(p50_event_to_revoked_ms=r["p50_ms"],
                              p99_event_to_revoked_ms=r["p99_ms"],
                              revoked_at_load_events_per_s=response_load)  # fmt: skip
        else:
            result.update(events_per_s=result["offline_events_per_s"], p50_ms=None, p99_ms=None)
        if console_alerts > 0:
            from pipeline.ops.bench_console import bench_console

            result.update(bench_console(settings, console_alerts, echo))
    echo(json.dumps(result))
    return result
