"""Two workers in one consumer group: partitions move with their state; nothing lost or doubled.

Issue 14: scale-out runs on Kafka itself. A second worker joins while events arrive (the
group rebalances and hands it partitions), then the first is killed with SIGKILL mid-stream
(the survivor takes every partition and restores their identity state from the table's
changelog). Every produced event must be scored; only the unit in flight at the kill may be
scored twice; and no identity may start over: its own-baseline weight (``1 - peer_weight``)
only grows, event after event, whichever worker scored it.

Both ways of keeping identity state: written through, and in snapshots (every 3 s): then the
rebalance hands partitions over with a snapshot (the new owner replays nothing), and the kill
lands halfway between two (the survivor replays what the dead worker did since, quietly).
"""

from __future__ import annotations

import itertools
import signal
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import msgspec
import pytest

from pipeline.config import Settings, env_var
from pipeline.kafka.clients import read_all
from pipeline.ops.localhost import free_port
from tests.integration.test_restart import events_learned, halfway_between_snapshots, produce_paced
from tests.integration.test_worker import _env, _start

AGENTS = [f"agt-scale-{i:02d}" for i in range(24)]
N_EVENTS = 2_400
BATCH = 50


@pytest.mark.timeout(600)  # its own deadlines (below) fail first, with the survivor's log
@pytest.mark.parametrize("snapshot_s", [0.0, 3.0], ids=["write-through", "snapshots"])
def test_two_workers_share_partitions_and_a_killed_one_loses_nothing(
    isolated: Settings, tmp_path: Path, snapshot_s: float
) -> None:
    app_id = f"itest-scale-{int(time.time())}"
    envs = []
    for name in ("a", "b"):
        env = _env(isolated, tmp_path / name, app_id)  # one group, two data directories
        env[env_var("worker_batch")] = str(BATCH)
        env[env_var("directory_file")] = ""
        env[env_var("worker_web_port")] = str(free_port())
        env[env_var("snapshot_interval_s")] = str(snapshot_s)
        envs.append(env)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    start_ms = int(time.time() * 1000) - 3_600_000
    produced: list[str] = []

    def paced() -> None:  # ~120 events/s for 20 s: the join and the kill land while they arrive
        produce_paced(isolated, AGENTS, N_EVENTS, "s", start_ms, pause_s=0.33, out=produced)

    def scored() -> list[dict[str, object]]:
        return [msgspec.json.decode(m.value())
                for m in read_all(isolated, isolated.scores_topic, timeout_s=3)]  # fmt: skip

    feeder = threading.Thread(target=paced, daemon=True)
    a = _start(envs[0], logs[0])
    feeder.start()
    b = None
    try:
        deadline = time.monotonic() + 90
        while len(scored()) < N_EVENTS // 6:  # a is working
            assert time.monotonic() < deadline and a.poll() is None, logs[0].read_text()[-3000:]
            time.sleep(0.5)
        b = _start(envs[1], logs[1])  # joins the group: a rebalance while events arrive
        deadline = time.monotonic() + 90
        while "custos_scored" not in _metrics(envs[1]) or _scored_by(envs[1]) == 0:
            assert time.monotonic() < deadline and b.poll() is None, logs[1].read_text()[-3000:]
            time.sleep(0.5)
        # Handed over by a rebalance: a snapshot first, so nothing is replayed.
        assert _metrics(envs[1]).get("custos_replayed", 0.0) == 0
        if snapshot_s:
            halfway_between_snapshots(envs[0], a, logs[0])
        a.send_signal(signal.SIGKILL)  # mid-stream, while b owns part of the partitions
        a.wait(30)
        feeder.join(90)
        deadline = time.monotonic() + 240  # the survivor restores 3 partitions on 2 busy cores
        while missing := set(produced) - {str(s["event_uid"]) for s in scored()}:
            assert time.monotonic() < deadline and b.poll() is None, (
                f"{len(missing)} of {len(produced)} never scored, e.g. {sorted(missing)[:5]}; "
                + logs[1].read_text()[-1500:])  # fmt: skip
            time.sleep(1.0)
        # Every event is in its identity's state exactly once, whoever applied it.
        deadline = time.monotonic() + 30
        while (learned := events_learned(envs[1], AGENTS)) != N_EVENTS:
            assert time.monotonic() < deadline, (learned, N_EVENTS)
            time.sleep(1.0)
        replayed = _metrics(envs[1]).get("custos_replayed", 0.0)
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(60)
    rows = scored()
    uids = [str(s["event_uid"]) for s in rows]
    twice = {uid: n for uid, n in Counter(uids).items() if n > 1}
    print(f"produced {N_EVENTS}, scored {len(uids)} ({len(twice)} twice), replayed quietly "
          f"{replayed:.0f}")  # fmt: skip
    assert set(uids) == set(produced)  # nothing lost, by the move or by the kill
    assert len(twice) <= BATCH, sorted(twice)[:20]  # at most the unit in flight at the kill
    # Snapshots: the survivor replayed what the killed worker applied since its last one.
    assert (replayed > 0) == bool(snapshot_s)
    findings: Counter[str] = Counter()
    for m in read_all(isolated, isolated.alerts_topic, timeout_s=3):
        info = msgspec.json.decode(m.value())["finding_info"]
        related = {e["uid"] for e in info["related_events"]}
        findings[info["uid"]] += 1
        if findings[info["uid"]] > 1:  # sent again: only by the unit in flight at the kill
            assert related & set(twice), info["uid"]
    # No identity started over: its own baseline's weight never drops back.
    by_agent: dict[str, list[tuple[int, float]]] = defaultdict(list)
    first: set[str] = set()
    for s in rows:
        if s["event_uid"] in first:
            continue  # a re-scored unit repeats earlier weights
        first.add(str(s["event_uid"]))
        by_agent[str(s["identity_uid"])].append((int(s["time_ms"]), 1.0 - float(s["peer_weight"])))
    for agent, seq in by_agent.items():
        own = [w for _, w in sorted(seq)]
        drops = [(i, x, y) for i, (x, y) in enumerate(itertools.pairwise(own))
                 if y < x - 1e-9]  # fmt: skip
        assert not drops, (agent, drops[:3])


def _metrics(env: dict[str, str]) -> dict[str, float]:
    from pipeline.kafka.metrics import scrape

    return {k.removesuffix("_total"): v
            for k, v in scrape(int(env[env_var("worker_web_port")])).items()}  # fmt: skip


def _scored_by(env: dict[str, str]) -> float:
    return _metrics(env).get("custos_scored", 0.0)
