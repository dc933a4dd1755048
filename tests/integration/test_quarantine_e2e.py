"""The whole loop on the real broker, each part its own process:

compromised agent's event → worker (finding + signed contain) → ``custos respond`` → credential
broker (``custos broker``) revokes and blocks → the agent's next call is refused → final ack.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from pipeline.config import Settings, env_var
from pipeline.kafka.clients import make_producer, read_all
from pipeline.ops.localhost import call_json, free_port, healthy, wait_until

AGENT = "agt-e2e-001"


def _env(settings: Settings, tmp: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    values = {
        "bootstrap": settings.bootstrap_servers, "home": str(tmp / "home"),
        "identity_topic": settings.identity_topic, "agent_topic": settings.agent_topic,
        "deadletter_topic": settings.deadletter_topic, "alerts_topic": settings.alerts_topic,
        "scores_topic": settings.scores_topic, "quarantine_topic": settings.quarantine_topic,
        "approvals_topic": settings.approvals_topic, "acks_topic": settings.acks_topic,
        "rejections_topic": settings.agent_topic, "worker_partitions": "3",
        "models_topic": settings.models_topic, "reports_topic": settings.reports_topic,
        "agent_models_topic": settings.agent_models_topic,
        "feedback_topic": settings.feedback_topic,
        "worker_batch_within_s": "0.05", "broker_state_dir": str(tmp / "broker"),
        **extra,
    }  # fmt: skip
    for name, value in values.items():
        env[env_var(name)] = value
    return env


def _wait(pred: Any, timeout: float, what: str) -> Any:
    return wait_until(pred, timeout, what, step=0.05)


def _call(uid: str, t: int, cred: dict[str, Any]) -> bytes:
    return msgspec.json.encode({
        "class_uid": 6003, "category_uid": 6, "activity_id": 2, "time": t, "status_id": 1,
        "metadata": {"uid": uid, "version": "1.8.0", "product": {"name": "e2e"}},
        "actor": {"user": {"uid": AGENT, "type_id": 99}, "session": {"uid": "task-1"}},
        "api": {"operation": "crm.read", "service": {"name": "crm"}},
        "unmapped": {"identity_kind": "agent", "credential": cred},
    })  # fmt: skip


def test_compromised_agent_loses_its_credentials_and_the_ack_proves_it(
    isolated: Settings, tmp_path: Path
) -> None:
    broker_port = free_port()
    env = _env(isolated, tmp_path, broker_port=str(broker_port), worker_web_port=str(free_port()),
               app_id=f"e2e-{os.getpid()}-{int(time.time())}",
               responder_group=f"e2e-responders-{os.getpid()}-{int(time.time())}")  # fmt: skip
    logs = {name: open(tmp_path / f"{name}.log", "wb") for name in ("broker", "worker", "respond")}
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(name: str, *args: str) -> None:
        procs[name] = subprocess.Popen([sys.executable, "-m", "pipeline", *args], env=env,
                                       stdout=logs[name], stderr=subprocess.STDOUT)  # fmt: skip

    def tail() -> str:
        return "\n".join(f"--- {n}\n{(tmp_path / f'{n}.log').read_text()[-2000:]}" for n in logs)

    try:
        start("broker", "broker")
        base = f"http://127.0.0.1:{broker_port}"
        _wait(lambda: healthy(base), 30, "broker up")
        token = (tmp_path / "broker" / "api-token").read_text().strip()
        start("worker", "worker")  # writes the command-signing JWKS the responder trusts
        _wait(lambda: (tmp_path / "home" / "keys" / "commands.jwks.json").exists(), 60, "worker")
        start("respond", "respond")

        status, issued = call_json("POST", f"{base}/v1/credentials", token,
                               {"agent": AGENT, "task": "task-1", "step": 1,
                                "scope": ["crm.read"], "ceiling": 1})  # fmt: skip
        assert status == 201, issued
        use = {"agent": AGENT, "task": "task-1", "step": 1, "operation": "crm.read"}
        assert call_json("POST", f"{base}/v1/access", issued["credential"], use)[0] == 200

        # The compromise: AGENT calls with a credential issued to another agent.
        producer = make_producer(isolated)
        now = int(time.time() * 1000)
        own = {"uid": issued["jti"], "issued_to": AGENT, "task_uid": "task-1", "step": 1,
               "expires_at": issued["expires_at"] * 1000}  # fmt: skip
        producer.produce(
            isolated.agent_topic, key=AGENT.encode(), value=_call("ok-1", now - 500, own)
        )
        stolen = {"uid": "cred-of-agt-x", "issued_to": "agt-x", "task_uid": "task-1", "step": 1}
        producer.produce(isolated.agent_topic, key=AGENT.encode(),
                         value=_call("attack-1", now, stolen))  # fmt: skip
        assert producer.flush(30) == 0
        t_attack = time.monotonic()

        def refused() -> dict[str, Any] | None:
            code, body = call_json("POST", f"{base}/v1/access", issued["credential"], use)
            return body if code == 403 else None

        denial = _wait(refused, 120, "the agent's credential refused: " + tail())
        revoked_after = time.monotonic() - t_attack
        assert denial["reason"] in ("revoked", "holder_blocked")

        def final_ack() -> dict[str, Any] | None:
            for m in read_all(isolated, isolated.acks_topic, timeout_s=3):
                doc = msgspec.json.decode(m.value())
                if doc["body"]["openc2"]["response"]["status"] == 200:
                    return doc  # type: ignore[no-any-return]
            return None

        ack = _wait(final_ack, 60, "final ack")
        statuses = [msgspec.json.decode(m.value())["body"]["openc2"]["response"]["status"]
                    for m in read_all(isolated, isolated.acks_topic, timeout_s=3)]  # fmt: skip
        assert statuses[:2] == [102, 200]
        got = ack["body"]["openc2"]["response"]["results"]["x-custos"]
        assert got["identity"] == AGENT
        assert issued["jti"] in got["adapters"]["custos-broker"]["revoked"]
        # Blocked: no new credential either; and the refused call is itself an input event.
        again = {"agent": AGENT, "task": "task-2", "step": 1, "scope": []}
        assert call_json("POST", f"{base}/v1/credentials", token, again)[0] == 403
        records = read_all(isolated, isolated.agent_topic, timeout_s=3)
        events = [msgspec.json.decode(m.value()) for m in records]
        assert any(e.get("unmapped", {}).get("rejection") == "revoked" for e in events)
        print(f"\nevent -> credential refused: {revoked_after * 1000:.0f} ms")
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()


def test_below_the_auto_severity_a_human_approves_then_releases(
    isolated: Settings, tmp_path: Path
) -> None:
    broker_port = free_port()
    env = _env(isolated, tmp_path, broker_port=str(broker_port), worker_web_port=str(free_port()),
               app_id=f"e2e-ap-{os.getpid()}-{int(time.time())}",
               responder_group=f"e2e-ap-responders-{os.getpid()}-{int(time.time())}",
               quarantine_auto_min_severity="6")  # fmt: skip  # everything waits for a human
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> None:
        log = open(tmp_path / f"{args[0]}.log", "ab")
        procs.append(subprocess.Popen([sys.executable, "-m", "pipeline", *args], env=env,
                                      stdout=log, stderr=subprocess.STDOUT))  # fmt: skip

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "pipeline", "quarantine", *args], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    try:
        start("broker")
        base = f"http://127.0.0.1:{broker_port}"
        _wait(lambda: healthy(base), 30, "broker up")
        token = (tmp_path / "broker" / "api-token").read_text().strip()
        start("worker")
        _wait(lambda: (tmp_path / "home" / "keys" / "commands.jwks.json").exists(), 60, "worker")
        start("respond")
        status, issued = call_json("POST", f"{base}/v1/credentials", token,
                               {"agent": AGENT, "task": "task-1", "step": 1,
                                "scope": ["crm.read"]})  # fmt: skip
        assert status == 201
        use = {"agent": AGENT, "task": "task-1", "step": 1, "operation": "crm.read"}
        producer = make_producer(isolated)
        stolen = {"uid": "cred-of-agt-x", "issued_to": "agt-x"}
        producer.produce(isolated.agent_topic, key=AGENT.encode(),
                         value=_call("attack-ap", int(time.time() * 1000), stolen))  # fmt: skip
        assert producer.flush(30) == 0

        pending = _wait(lambda: [line for line in cli("pending").splitlines() if AGENT in line],
                        90, "a pending quarantine")  # fmt: skip
        command_id = pending[0].split()[0]
        time.sleep(1.0)
        # Nothing happened yet: the agent still works.
        assert call_json("POST", f"{base}/v1/access", issued["credential"], use)[0] == 200
        assert "approved" in cli("approve", command_id, "--by", "analyst:alice")
        _wait(lambda: call_json("POST", f"{base}/v1/access", issued["credential"], use)[0] == 403,
              60, "refused after approval")  # fmt: skip
        again = {"agent": AGENT, "task": "task-2", "step": 1, "scope": ["crm.read"]}
        assert call_json("POST", f"{base}/v1/credentials", token, again)[0] == 403

        cli("release", AGENT, "--command", command_id, "--by", "analyst:alice",
            "--reason", "false positive: approved test traffic")  # fmt: skip
        _wait(lambda: call_json("POST", f"{base}/v1/credentials", token, again)[0] == 201,
              60, "issuance again after the release")  # fmt: skip
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()


def test_a_quarantine_that_cannot_be_carried_out_is_dead_lettered_and_alerted(
    isolated: Settings, tmp_path: Path
) -> None:
    """The credential broker is down: retries, then 503, the command in the dead-letter topic
    with its original bytes, and a Critical finding - never dropped silently."""
    from pipeline.control.signing import command_key
    from pipeline.kafka.topics import TopicSpec, apply_topics
    from pipeline.quarantine.commands import contain, sign

    dlq = f"{isolated.quarantine_topic}.dlq"
    apply_topics(isolated, [TopicSpec(dlq, 1, 1, {})])
    env = _env(isolated, tmp_path, broker_port=str(free_port()),  # nothing listens there
               responder_group=f"e2e-fail-{os.getpid()}-{int(time.time())}",
               responder_attempts="3", responder_backoff_s="0.05",
               quarantine_deadletter_topic=dlq)  # fmt: skip
    home = tmp_path / "home"
    key = command_key(home / "keys" / "commands.jwk", home / "keys" / "commands.jwks.json")
    (tmp_path / "broker").mkdir()
    (tmp_path / "broker" / "api-token").write_text("unused-token\n")
    signed = sign(contain(AGENT, finding_uid="f-fail", reason="test", duration_ms=60_000,
                          now_ms=int(time.time() * 1000), sender="e2e"), key)  # fmt: skip
    producer = make_producer(isolated)
    producer.produce(isolated.quarantine_topic, key=AGENT.encode(), value=signed)
    producer.produce(isolated.quarantine_topic, key=AGENT.encode(), value=b'{"forged": true}')
    assert producer.flush(30) == 0
    log = open(tmp_path / "respond.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "respond"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)  # fmt: skip
    try:

        def two_dead() -> list[Any] | None:
            got = read_all(isolated, dlq, timeout_s=2)
            return got if len(got) >= 2 else None

        dead = _wait(two_dead, 90, "two dead letters")
        alerts = _wait(lambda: read_all(isolated, isolated.alerts_topic, timeout_s=2), 30, "alert")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    reasons = sorted(dict(m.headers() or [])["custos.reason"].decode() for m in dead)
    assert reasons == ["quarantine_failed", "unsigned"]
    assert {m.value() for m in dead} == {signed, b'{"forged": true}'}  # original bytes
    finding = msgspec.json.decode(alerts[0].value())
    assert finding["severity_id"] == 5 and AGENT in finding["message"]
    statuses = sorted(msgspec.json.decode(m.value())["body"]["openc2"]["response"]["status"]
                      for m in read_all(isolated, isolated.acks_topic, timeout_s=3))  # fmt: skip
    assert statuses == [102, 401, 503]


def test_responder_killed_mid_flight_answers_every_command_once_and_truthfully(
    isolated: Settings, tmp_path: Path
) -> None:
    """kill -9 of ``custos respond`` while it works through 120 quarantines (issue 12.3, 12.7):
    after a restart every command has exactly one final 200, every credential is revoked, and
    each final answer reports that credential as revoked (not as "not found")."""
    from pipeline.control.signing import command_key
    from pipeline.quarantine.commands import contain, sign

    n = 120
    broker_port = free_port()
    env = _env(isolated, tmp_path, broker_port=str(broker_port),
               responder_group=f"e2e-kill-{os.getpid()}-{int(time.time())}")  # fmt: skip
    logs = {name: open(tmp_path / f"{name}.log", "ab") for name in ("broker", "respond")}

    def start(name: str, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "pipeline", *args], env=env,
                                stdout=logs[name], stderr=subprocess.STDOUT)  # fmt: skip

    broker = start("broker", "broker")
    responder: subprocess.Popen[bytes] | None = None
    try:
        base = f"http://127.0.0.1:{broker_port}"
        _wait(lambda: healthy(base), 30, "broker up")
        token = (tmp_path / "broker" / "api-token").read_text().strip()
        home = tmp_path / "home"
        key = command_key(home / "keys" / "commands.jwk", home / "keys" / "commands.jwks.json")
        creds: dict[str, str] = {}
        producer = make_producer(isolated)
        now = int(time.time() * 1000)
        for i in range(n):
            agent = f"agt-kill-{i:02d}"
            ask = {"agent": agent, "task": "t-1", "step": 1, "scope": ["x"]}
            code, got = call_json("POST", f"{base}/v1/credentials", token, ask)
            assert code == 201, got
            creds[agent] = got["jti"]
            msg = contain(agent, finding_uid=f"f-kill-{i}", reason="test", duration_ms=3_600_000,
                          now_ms=now, sender="e2e", credentials=(got["jti"],))  # fmt: skip
            producer.produce(isolated.quarantine_topic, key=agent.encode(), value=sign(msg, key))
        assert producer.flush(30) == 0
        # Kill once some, not all, are answered (each command: HTTP calls, a stored answer,
        # a synchronous commit).
        responder = start("respond", "respond")

        def finals() -> list[dict[str, Any]]:
            docs = [msgspec.json.decode(m.value())
                    for m in read_all(isolated, isolated.acks_topic, timeout_s=2)]  # fmt: skip
            return [d for d in docs if d["body"]["openc2"]["response"]["status"] != 102]

        _wait(lambda: len(finals()) >= 10, 90, "first answers")
        responder.send_signal(signal.SIGKILL)
        responder.wait(30)
        killed_at = len(finals())
        responder = start("respond", "respond")
        _wait(lambda: len({d["headers"]["request_id"] for d in finals()}) >= n, 120,
              "every command answered")  # fmt: skip
        time.sleep(2)
        answers = finals()
    finally:
        for p in (responder, broker):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
    by_request: dict[str, list[dict[str, Any]]] = {}
    for d in answers:
        by_request.setdefault(d["headers"]["request_id"], []).append(d)
    print(f"responder kill: {n} commands, {killed_at} answered before the kill, "
          f"{len(answers)} final answers after the restart")  # fmt: skip
    assert killed_at < n, "the kill came after the last answer: nothing was in flight"
    assert len(by_request) == n
    for rid, got in by_request.items():
        statuses = {d["body"]["openc2"]["response"]["status"] for d in got}
        assert statuses == {200}, (rid, statuses)
        results = got[-1]["body"]["openc2"]["response"]["results"]["x-custos"]
        broker_result = results["adapters"]["custos-broker"]
        assert broker_result["revoked"] == [creds[results["identity"]]], broker_result
        assert broker_result["not_found"] == []
        # A redelivered command gets the same stored answer, never a second, different one.
        assert all(d["body"] == got[0]["body"] for d in got), rid
