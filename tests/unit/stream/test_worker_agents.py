"""The faust agents in faust's ``test_context``: no broker, writes captured instead of sent.

The integration tests run the same worker against the real broker (restart, changelog); these
check the agents' wiring event by event: decode or dead-letter, re-key, score, alert, signals.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust.topics
import msgspec
import pytest
from joserfc.jwk import KeySet

from pipeline.config import Settings
from pipeline.quarantine.commands import subject_of, verify
from pipeline.scores.explanations import RuleHit, Signal
from pipeline.simulate.malformed import bad_samples, valid_logon
from pipeline.stream.app import create_app
from pipeline.stream.offsets import unwrap

Sent = list[tuple[str, bytes | None, bytes | None, dict[str, bytes]]]


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    """Every topic write (dead letters, alerts, re-keyed, signals, changelog) lands here."""
    out: Sent = []

    async def send(self: Any, key: Any = None, value: Any = None, partition: Any = None,
                   timestamp: Any = None, headers: Any = None, **_: Any) -> Any:  # fmt: skip
        out.append((self.get_topic_name(), key, value, dict(headers or [])))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def send_soon(self: Any, key: Any = None, value: Any = None, partition: Any = None,
                  timestamp: Any = None, headers: Any = None, **_: Any) -> Any:  # fmt: skip
        out.append((self.get_topic_name(), key, value, dict(headers or [])))  # table changelog
        return SimpleNamespace(message=SimpleNamespace(partition=partition or 0))

    monkeypatch.setattr(faust.topics.Topic, "send", send)
    monkeypatch.setattr(faust.topics.Topic, "send_soon", send_soon)
    return out


def _app(tmp_path: Path) -> Any:
    settings = Settings.from_env(
        {}, worker_datadir=str(tmp_path), worker_batch_within_s=0.01, app_id="unit-worker",
        home=str(tmp_path / "home"), quarantine_auto_min_severity=5,
    )  # fmt: skip
    return create_app(settings, store_url="memory://")


def _logon(event_uid: str, user: str, t: int) -> bytes:
    doc = valid_logon(event_uid, t)
    doc["user"] = {"uid": user, "type_id": 1}
    return json.dumps(doc).encode()


def _call(event_uid: str, agent: str, t: int, issued_to: str) -> bytes:
    return json.dumps({
        "class_uid": 6003, "category_uid": 6, "activity_id": 2, "type_uid": 600302,
        "severity_id": 1, "time": t, "status_id": 1,
        "metadata": {"uid": event_uid, "version": "1.8.0", "product": {"name": "unit"}},
        "actor": {"user": {"uid": agent, "type_id": 99}},
        "api": {"operation": "crm.read", "service": {"name": "crm"}},
        "unmapped": {"identity_kind": "agent",
                     "credential": {"uid": "c-1", "issued_to": issued_to}},
    }).encode()  # fmt: skip


async def _until(pred: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


def test_detect_agent_scores_dead_letters_and_rekeys(tmp_path: Path, sent: Sent) -> None:
    app = _app(tmp_path)
    stats = app.custos_stats
    now = int(time.time() * 1000)
    bad = [s for s in bad_samples(now, tag="unit") if s.value is not None]

    async def run() -> None:
        async with app.agents["detect"].test_context() as agent:
            for i in range(5):
                await agent.put(key=b"usr-1", value=_logon(f"ok-{i}", "usr-1", now - 1000 + i))
            for s in bad:
                await agent.put(key=s.key, value=s.value)
            # A producer that keyed by something else: re-keyed, not scored here.
            await agent.put(key=b"some-session", value=_logon("rekey-me", "usr-2", now))
            await _until(lambda: stats.scored == 5 and stats.dead.total() == len(bad))

    asyncio.run(run())
    dead = [m for m in sent if m[0] == "custos.deadletter"]
    assert sorted(m[3]["custos.reason"].decode() for m in dead) == sorted(s.reason for s in bad)
    assert {m[2] for m in dead} == {s.value for s in bad}  # original bytes, unchanged
    rekeyed = [m for m in sent if m[0] == "unit-worker-rekeyed"]
    assert [(k, json.loads(v or b"")["metadata"]["uid"]) for _, k, v, _ in rekeyed] == [
        (b"usr-2", "rekey-me")
    ]
    # usr-1's state went to the table (its changelog), keyed by the identity.
    changelog = [m for m in sent if m[0].endswith("identity-state-changelog")]
    assert changelog and {m[1] for m in changelog} == {b"usr-1"}
    core, applied = unwrap(changelog[-1][2] or b"")
    assert app.custos_detection.load_state(core).baseline.n >= 1
    # ... with the input offsets it includes (exactly-once on restart, issue 12.3).
    [(_source, offset)] = applied.items()  # the test context has its own topic name
    assert offset >= 4


def test_detect_agent_publishes_an_ocsf_finding_for_a_critical_rule(
    tmp_path: Path, sent: Sent
) -> None:
    app = _app(tmp_path)
    now = int(time.time() * 1000)

    async def run() -> None:
        async with app.agents["detect"].test_context() as agent:
            await agent.put(key=b"agt-1", value=_call("fine", "agt-1", now - 2000, "agt-1"))
            await agent.put(key=b"agt-1", value=_call("misuse", "agt-1", now - 1000, "agt-2"))
            await _until(lambda: app.custos_stats.alerts == 1)

    asyncio.run(run())
    [(_, key, value, _)] = [m for m in sent if m[0] == "custos.alerts"]
    finding = msgspec.json.decode(value or b"")
    assert key == b"agt-1" and finding["class_uid"] == 2004 and finding["activity_id"] == 1
    assert finding["evidences"][0]["actor"]["user"]["uid"] == "agt-1"
    assert "misuse" in {e["uid"] for e in finding["finding_info"]["related_events"]}
    assert "credential_misuse" in json.dumps(finding)
    # Critical: a signed contain command at once (no approval), verifiable with the JWKS.
    [(_, key, signed, _)] = [m for m in sent if m[0] == "custos.quarantine"]
    jwks = KeySet.import_key_set(
        json.loads((tmp_path / "home/keys/commands.jwks.json").read_text())
    )
    command = verify(signed or b"", jwks, now_ms=int(time.time() * 1000))
    request = command["body"]["openc2"]["request"]
    assert key == b"agt-1" and subject_of(command) == "agt-1" and request["action"] == "contain"
    assert request["args"]["x-custos"]["finding_uid"] == finding["finding_info"]["uid"]
    assert request["args"]["x-custos"]["credentials"] == ["c-1"]
    assert "agt-1 used credential c-1 issued to agt-2" in request["args"]["x-custos"]["reason"]
    assert not [m for m in sent if m[0] == "custos.approvals"]


def test_signals_agent_raises_risk_of_the_identity_the_signal_is_about(
    tmp_path: Path, sent: Sent
) -> None:
    app = _app(tmp_path)
    now = int(time.time() * 1000)
    hit = RuleHit("delegated_outside_team", 4, "agt-orch-9 handed a task to agt-1")
    signal = Signal("agt-orch-9", "agent", now, "e-60", "agt-1", hit)

    async def run() -> None:
        async with app.agents["signals"].test_context() as agent:
            await agent.put(key=b"agt-orch-9", value=msgspec.msgpack.encode(signal))
            await _until(lambda: app.custos_stats.findings == 1)

    asyncio.run(run())
    [(_, key, value, _)] = [m for m in sent if m[0] == "custos.alerts"]
    finding = msgspec.json.decode(value or b"")
    assert key == b"agt-orch-9"
    assert finding["evidences"][0]["actor"]["user"]["uid"] == "agt-orch-9"
    assert [e["uid"] for e in finding["finding_info"]["related_events"]] == ["e-60"]


def test_a_refused_finding_stops_the_worker_before_state_commands_or_counts(
    tmp_path: Path, sent: Sent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12.1/12.2: results before state, delivery before commit, nothing silently lost."""
    from pipeline.config import Settings

    async def send(self: Any, key: Any = None, value: Any = None, partition: Any = None,
                   timestamp: Any = None, headers: Any = None, **_: Any) -> Any:  # fmt: skip
        sent.append((self.get_topic_name(), key, value, dict(headers or [])))
        done = asyncio.get_running_loop().create_future()
        if self.get_topic_name() == "custos.alerts":  # what the broker answers a 5 MB record
            done.set_exception(RuntimeError("MessageSizeTooLargeError"))
        else:
            done.set_result(None)
        return done

    monkeypatch.setattr(faust.topics.Topic, "send", send)
    died: list[str] = []
    settings = Settings.from_env(
        {}, worker_datadir=str(tmp_path), worker_batch_within_s=0.01, app_id="unit-worker",
        home=str(tmp_path / "home"), quarantine_auto_min_severity=5,
    )  # fmt: skip
    app = create_app(settings, store_url="memory://", die=died.append)
    now = int(time.time() * 1000)

    async def run() -> None:
        async with app.agents["detect"].test_context() as agent:
            await agent.put(key=b"agt-1", value=_call("misuse", "agt-1", now - 1000, "agt-2"))
            await _until(lambda: bool(died))

    asyncio.run(run())  # the agent crashes after die() (here a recorder; in production exit)
    assert died and "custos.alerts" in died[0] and "MessageSizeTooLargeError" in died[0]
    topics = [m[0] for m in sent]
    assert "custos.alerts" in topics
    assert "custos.quarantine" not in topics  # no command without its finding on record
    assert not [t for t in topics if t.endswith("identity-state-changelog")]  # state not written
    assert app.custos_stats.findings == 0 and app.custos_stats.scored == 0
