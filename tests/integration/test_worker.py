"""The faust worker on the real broker: attack in → OCSF finding out; killed → resumes."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
from confluent_kafka import Consumer, TopicPartition
from joserfc.jwk import KeySet

from pipeline.config import Settings, env_var
from pipeline.kafka.clients import make_producer, read_all
from pipeline.kafka.topics import TopicSpec, apply_topics
from pipeline.ops.localhost import free_port
from pipeline.quarantine.commands import verify
from pipeline.simulate.malformed import bad_samples

AGENT = "agt-itest-001"
ORCH = "agt-itest-orch-1"  # the only orchestrator the directory lets hand AGENT tasks
STRANGER = "agt-itest-orch-9"


def _env(settings: Settings, datadir: Path, app_id: str) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in {
        "bootstrap": settings.bootstrap_servers,
        "identity_topic": settings.identity_topic,
        "agent_topic": settings.agent_topic,
        "deadletter_topic": settings.deadletter_topic,
        "alerts_topic": settings.alerts_topic,
        "scores_topic": settings.scores_topic,
        "quarantine_topic": settings.quarantine_topic,
        "approvals_topic": settings.approvals_topic,
        "models_topic": settings.models_topic,
        "reports_topic": settings.reports_topic,
        "agent_models_topic": settings.agent_models_topic,
        "feedback_topic": settings.feedback_topic,
        "worker_partitions": "3",
        "worker_datadir": str(datadir),
        "worker_web_port": str(free_port()),
        "app_id": app_id,
        "emit_scores": "true",
        "worker_batch_within_s": "0.05",
        "directory_file": str(_directory(datadir.parent)),
        "home": settings.home,  # command signing key and its JWKS
    }.items():
        env[env_var(name)] = str(value)
    return env


def _directory(folder: Path) -> Path:
    path = folder / "directory.jsonl"
    entries = [
        {"uid": AGENT, "kind": "agent", "peer_group": "agent/itest", "delegators": [ORCH]},
        {"uid": STRANGER, "kind": "agent", "peer_group": "agent/orchestrator"},
    ]
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return path


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "worker", "--loglevel", "info"],
        env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def _agent_call(
    uid: str, t: int, *, issued_to: str = AGENT, step: int = 1, delegated_by: str = ORCH
) -> dict[str, Any]:
    return {
        "class_uid": 6003, "category_uid": 6, "activity_id": 2, "type_uid": 600302,
        "severity_id": 1, "time": t, "status_id": 1,
        "metadata": {"uid": uid, "version": "1.8.0", "product": {"name": "itest"}},
        "actor": {"user": {"uid": AGENT, "type_id": 99}, "session": {"uid": "task-1"}},
        "api": {"operation": "crm.read", "service": {"name": "crm"}},
        "resources": [{"uid": "crm/accounts", "type": "table",
                       "data_classification": {"confidentiality_id": 1}}],
        "traffic": {"bytes_in": 2000, "bytes_out": 300},
        "src_endpoint": {"ip": "10.1.2.3"},
        "unmapped": {"identity_kind": "agent", "environment": "prod-eu",
                     "credential": {"uid": f"cred-{issued_to}-{step}", "issued_to": issued_to,
                                    "task_uid": "task-1", "step": step, "expires_at": t + 60_000},
                     "rationale": "reading the account list the task asked for",
                     "delegated_by": delegated_by},
    }  # fmt: skip


def _produce(settings: Settings, events: list[dict[str, Any]]) -> None:
    producer = make_producer(settings)
    for e in events:
        producer.produce(settings.agent_topic, key=AGENT.encode(), value=json.dumps(e).encode())
    assert producer.flush(30) == 0


def _wait_for(settings: Settings, topic: str, pred: Any, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for msg in read_all(settings, topic, timeout_s=5):
            doc = msgspec.json.decode(msg.value())
            if pred(doc):
                return doc
        time.sleep(1)
    raise AssertionError(f"nothing matching on {topic} within {timeout} s")


def _wait_committed(settings: Settings, group: str, n: int, timeout: float = 60) -> None:
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": group})
    try:
        parts = [TopicPartition(settings.agent_topic, p) for p in range(3)]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = consumer.committed(parts, timeout=10)
            if sum(max(tp.offset, 0) for tp in done) >= n:
                return
            time.sleep(0.5)
        raise AssertionError(f"group {group} did not commit {n} offsets")
    finally:
        consumer.close()


def test_worker_dead_letters_every_bad_input_class_and_keeps_going(
    isolated: Settings, tmp_path: Path
) -> None:
    now = int(time.time() * 1000)
    samples = bad_samples(now, tag="worker")
    topic = {"identity.events": isolated.identity_topic, "agent.events": isolated.agent_topic}
    producer = make_producer(isolated)
    for s in samples:
        producer.produce(topic[s.topic], key=s.key, value=s.value)
    assert producer.flush(30) == 0
    _produce(isolated, [_agent_call("after-bad", now - 1000)])

    env = _env(isolated, tmp_path / "data", f"itest-dlq-{os.getpid()}-{int(time.time())}")
    worker = _start(env, tmp_path / "worker.log")
    try:
        _wait_for(isolated, isolated.scores_topic, lambda d: d["event_uid"] == "after-bad")
        dead = read_all(isolated, isolated.deadletter_topic, expect=len(samples), timeout_s=30)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    reasons = sorted(dict(m.headers() or [])["custos.reason"].decode() for m in dead)
    assert reasons == sorted(s.reason for s in samples)
    by_offset_value = {m.value() for m in dead}
    assert {s.value if s.value is not None else b"" for s in samples} == by_offset_value


def test_attack_in_finding_out_and_restart_resumes_baselines(
    isolated: Settings, tmp_path: Path
) -> None:
    now = int(time.time() * 1000)
    start = now - 3_600_000
    normal = [_agent_call(f"n-{i}", start + i * 10_000) for i in range(300)]
    misuse = _agent_call("attack-1", start + 3_100_000, issued_to="agt-someone-else")
    lateral = _agent_call("lateral-1", start + 3_150_000, delegated_by=STRANGER)
    _produce(isolated, [*normal, misuse, lateral])

    log = tmp_path / "worker.log"
    app_id = f"itest-{os.getpid()}-{int(time.time())}"
    worker = _start(_env(isolated, tmp_path / "data-1", app_id), log)
    try:
        finding = _wait_for(
            isolated,
            isolated.alerts_topic,
            lambda d: any(e["uid"] == "attack-1" for e in d["finding_info"]["related_events"]),
        )
        # The agent's event reveals that STRANGER handed it a task: evidence about STRANGER,
        # routed through <app_id>-signals to the worker that owns STRANGER's partition.
        lateral_finding = _wait_for(
            isolated,
            isolated.alerts_topic,
            lambda d: d["evidences"][0]["actor"]["user"]["uid"] == STRANGER,
        )
        # Kill only once the group committed past every input: the restarted worker must then
        # not re-read them, so its baselines can only come from the table's changelog.
        _wait_committed(isolated, app_id, len(normal) + 2)
    finally:
        worker.send_signal(signal.SIGKILL)  # no clean shutdown: state must come from Kafka
        worker.wait(30)
    assert finding["class_uid"] == 2004 and finding["is_alert"] is True
    assert finding["evidences"][0]["actor"]["user"]["uid"] == AGENT
    assert "credential_misuse" in json.dumps(finding["unmapped"])
    assert "delegated_outside_team" in json.dumps(lateral_finding["unmapped"])
    # The Critical rule also quarantined AGENT: a signed contain command for that finding.
    jwks = KeySet.import_key_set(
        json.loads((Path(isolated.home) / "keys" / "commands.jwks.json").read_text())
    )
    commands = [
        verify(m.value(), jwks, now_ms=int(time.time() * 1000), max_age_ms=10**9)
        for m in read_all(isolated, isolated.quarantine_topic, timeout_s=10)
        if m.key() == AGENT.encode()
    ]
    assert any(
        c["body"]["openc2"]["request"]["args"]["x-custos"]["finding_uid"]
        == finding["finding_info"]["uid"]
        for c in commands
    )
    assert "lateral-1" in {e["uid"] for e in lateral_finding["finding_info"]["related_events"]}

    # A new data directory: the baselines can only come back from the changelog topic.
    _produce(isolated, [_agent_call("after-restart", start + 3_200_000)])
    worker = _start(_env(isolated, tmp_path / "data-2", app_id), log)
    try:
        score = _wait_for(
            isolated, isolated.scores_topic, lambda d: d["event_uid"] == "after-restart"
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    # A cold restart would score this against the peer group alone (peer_weight 1.0).
    assert score["peer_weight"] < 0.05, log.read_text()[-3000:]
    assert score["identity_uid"] == AGENT


def test_worker_keeps_and_stops_on_input_it_could_not_dead_letter(
    isolated: Settings, tmp_path: Path
) -> None:
    now = int(time.time() * 1000)
    sample = bad_samples(now, tag="crash")[0]
    producer = make_producer(isolated)
    producer.produce(isolated.identity_topic, key=sample.key, value=sample.value)
    assert producer.flush(30) == 0
    app_id = f"itest-crash-{os.getpid()}-{int(time.time())}"
    env = _env(isolated, tmp_path / "data", app_id)
    # The topic exists (the worker checks its outputs at start) but refuses every dead letter:
    # a record batch above its max.message.bytes, as a full disk or a revoked ACL would.
    refusing = f"{isolated.deadletter_topic}-refusing"
    apply_topics(isolated, [TopicSpec(refusing, 3, 1, {"max.message.bytes": "64"})])
    env[env_var("deadletter_topic")] = refusing
    env[env_var("worker_send_timeout_s")] = "5"
    worker = _start(env, tmp_path / "worker.log")
    try:
        code = worker.wait(90)
    except subprocess.TimeoutExpired:
        worker.kill()
        raise AssertionError("the worker kept running after a failed dead-letter write") from None
    assert code != 0
    # The record Kafka refused is on local disk, bytes intact, with its reason and source.
    lines = (tmp_path / "data" / "deadletter-spill.jsonl").read_text().splitlines()
    kept = [json.loads(line) for line in lines]
    assert [base64.b64decode(k["value_b64"]) for k in kept] == [sample.value]
    assert kept[0]["reason"] == sample.reason
    assert kept[0]["headers"]["custos.source.topic"] == isolated.identity_topic


def test_worker_refuses_to_start_without_an_output_topic(
    isolated: Settings, tmp_path: Path
) -> None:
    """A missing output topic used to leave the worker retrying metadata forever (1.47 million
    log lines in 12 minutes, 50 events/s scored); now it stops at once and says which."""
    env = _env(isolated, tmp_path / "worker", "itest-missing-topic")
    env[env_var("quarantine_topic")] = f"{isolated.quarantine_topic}-absent"
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pipeline", "worker"], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"{isolated.quarantine_topic}-absent" in done.stderr
    assert "custos topics apply" in done.stderr
    assert time.monotonic() - t0 < 60
