"""Same input, same output: the live worker and `custos replay` publish the same findings."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import msgspec

from pipeline.config import Settings, env_var
from pipeline.kafka.clients import make_producer, read_all
from pipeline.offline.replay import replay
from pipeline.ops.localhost import wait_until
from pipeline.simulate import Simulation
from pipeline.simulate.directory import write_directory
from pipeline.simulate.profiles import build_population
from pipeline.simulate.sinks import JsonlSink
from tests.integration.test_worker import _env, _start


def _key(f: dict[str, object]) -> tuple[object, ...]:
    """What a SOC analyst acts on: which incident, which activity, how bad, which rules."""
    info = f["finding_info"]
    custos = f["unmapped"]["custos"]  # type: ignore[index]
    return (
        info["uid"],  # type: ignore[index]
        f["activity_id"],
        f["severity_id"],
        f["is_alert"],
        tuple(sorted(r["rule"] for r in custos["rules"])),
        tuple(e["uid"] for e in info["related_events"]),  # type: ignore[index]
    )


def test_worker_and_replay_publish_the_same_findings(isolated: Settings, tmp_path: Path) -> None:
    # Event time ends now: the worker accepts it (bounded future skew) exactly as replay does.
    duration = 4 * 3600
    sim = Simulation(isolated, identities=120, duration_s=duration, seed=9,
                     start_ms=int(time.time() * 1000) - duration * 1000)  # fmt: skip
    events = tmp_path / "events.jsonl"
    sink = JsonlSink(events)
    producer = make_producer(isolated)
    n = 0
    for t, key, value, _ in sim.events():
        sink.write(t, key, value)
        producer.produce(t, key=key, value=value)  # the isolated topics: sim has `isolated`
        n += 1
    sink.close()
    assert producer.flush(60) == 0
    directory = tmp_path / "directory.jsonl"
    write_directory(build_population(120, seed=9), directory)

    env = _env(isolated, tmp_path / "data", f"itest-parity-{os.getpid()}-{int(time.time())}")
    env[env_var("directory_file")] = str(directory)
    # Whole input in one batch on both sides: the same rounds, so the same calibration.
    env[env_var("worker_batch")] = str(n + 10)
    env[env_var("worker_batch_within_s")] = "10"
    worker = _start(env, tmp_path / "worker.log")
    try:
        def scored() -> bool:
            return len(read_all(isolated, isolated.scores_topic, timeout_s=5)) >= n

        wait_until(scored, 120, "worker scored every event")
        # Findings follow the batch's scores at once; the updates a tick makes (replay's
        # comes at the end) within the housekeeping timer's 10 s.
        time.sleep(12)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    live = [msgspec.json.decode(m.value()) for m in read_all(isolated, isolated.alerts_topic)]

    settings = Settings.from_env({}, directory_file=str(directory), worker_batch=n + 10,
                                 home=isolated.home)  # fmt: skip
    res = replay(settings, events, tmp_path / "replay")
    lines = (tmp_path / "replay" / "alerts.jsonl").read_text().splitlines()
    offline = [json.loads(x) for x in lines]
    # The worker's housekeeping closes quiet incidents on a timer; replay closes them at the end.
    live_open = sorted(_key(f) for f in live if f["activity_id"] != 3)
    offline_open = sorted(_key(f) for f in offline if f["activity_id"] != 3)
    assert res.scored == n
    assert live_open, "the simulated campaigns raised no finding at all"
    assert live_open == offline_open
