"""The worker's per-event path without a broker: records handed to the hot loop, writes captured.

The integration tests run the same worker against the real broker (restart, changelog,
rebalance); these check the wiring record by record: decode or dead-letter, re-key, score,
alert, signals, state written through to the changelog with the offsets it includes.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import faust.topics
import msgspec
import pytest
from joserfc.jwk import KeySet

from pipeline.config import Settings
from pipeline.quarantine.commands import subject_of, verify
from pipeline.scores.explanations import RuleHit, Signal
from pipeline.simulate.malformed import bad_samples, valid_logon
from pipeline.stream.app import HotClients, create_app
from pipeline.stream.hot import Record
from pipeline.stream.offsets import unwrap
from pipeline.stream.store import MARKER

Sent = list[tuple[str, bytes | None, bytes | None, dict[str, bytes]]]


class FakeProducer:
    """The state changelog's producer: every record kept; ``refuse`` fails their delivery."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.records: list[tuple[str, int, bytes, bytes | None]] = []
        self._pending: list[Any] = []

    def produce(self, topic: str, value: bytes | None = None, key: bytes = b"",
                partition: int = -1, on_delivery: Any = None) -> None:  # fmt: skip
        self.records.append((topic, partition, key, value))
        self._pending.append((on_delivery, partition))

    def flush(self, timeout: float = 0.0) -> int:
        pending, self._pending = self._pending, []
        for cb, p in pending:
            msg = type("M", (), {"partition": lambda self, p=p: p})()
            cb("KafkaError{BROKER_NOT_AVAILABLE}" if self.refuse else None, msg)
        return 0

    def poll(self, timeout: float = 0.0) -> int:
        return 0


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[list[tuple[str, int, int]]] = []

    def commit(self, offsets: list[Any], asynchronous: bool = True) -> None:
        self.commits.append(sorted((tp.topic, tp.partition, tp.offset) for tp in offsets))

    def close(self) -> None:
        pass


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    """Every output written through faust's producer (dead letters, alerts, re-keyed...)."""
    out: Sent = []

    async def send(self: Any, key: Any = None, value: Any = None, partition: Any = None,
                   timestamp: Any = None, headers: Any = None, **_: Any) -> Any:  # fmt: skip
        out.append((self.get_topic_name(), key, value, dict(headers or [])))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    monkeypatch.setattr(faust.topics.Topic, "send", send)
    return out


def _settings(tmp_path: Path, snapshot_s: float = 0.0) -> Settings:
    return Settings.from_env(
        {}, worker_datadir=str(tmp_path), worker_batch_within_s=0.01, app_id="unit-worker",
        home=str(tmp_path / "home"), quarantine_auto_min_severity=5,
        snapshot_interval_s=snapshot_s, emit_scores=snapshot_s > 0,
    )  # fmt: skip


def _app(tmp_path: Path, producer: FakeProducer | None = None,
         restore: Any = lambda p: iter(()), die: Any = None,
         snapshot_s: float = 0.0) -> Any:  # fmt: skip
    """The worker, writing state through (``snapshot_s`` > 0: in snapshots, and every score
    sent)."""
    clients = HotClients(FakeConsumer(), producer or FakeProducer(), restore)
    kw = {} if die is None else {"die": die}
    return create_app(_settings(tmp_path, snapshot_s), clients=clients, **kw)


class _Feed:
    """Records for one topic, offsets counted per partition."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.next: dict[int, int] = {}

    def __call__(self, key: bytes | None, value: bytes | None, partition: int = 0) -> Record:
        off = self.next.get(partition, 0)
        self.next[partition] = off + 1
        return Record(key, value, self.topic, partition, off, time.time())


def _dispatch(app: Any, records: list[Record]) -> None:
    asyncio.run(app.custos_hot.dispatch(records))


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


def test_events_are_scored_dead_lettered_rekeyed_and_their_state_written_through(
    tmp_path: Path, sent: Sent
) -> None:
    producer = FakeProducer()
    app = _app(tmp_path, producer)
    stats = app.custos_stats
    now = int(time.time() * 1000)
    bad = [s for s in bad_samples(now, tag="unit") if s.value is not None]
    feed = _Feed("identity.events")
    records = [feed(b"usr-1", _logon(f"ok-{i}", "usr-1", now - 1000 + i)) for i in range(5)]
    records += [feed(s.key, s.value) for s in bad]
    # A producer that keyed by something else: re-keyed, not scored here.
    records.append(feed(b"some-session", _logon("rekey-me", "usr-2", now)))
    _dispatch(app, records)
    assert stats.scored == 5 and stats.dead.total() == len(bad)
    dead = [m for m in sent if m[0] == "custos.deadletter"]
    assert sorted(m[3]["custos.reason"].decode() for m in dead) == sorted(s.reason for s in bad)
    assert {m[2] for m in dead} == {s.value for s in bad}  # original bytes, unchanged
    rekeyed = [m for m in sent if m[0] == "unit-worker-rekeyed"]
    assert [(k, json.loads(v or b"")["metadata"]["uid"]) for _, k, v, _ in rekeyed] == [
        (b"usr-2", "rekey-me")
    ]
    # usr-1's state went to the changelog, keyed by the identity, in its events' partition...
    assert {(t, p, k) for t, p, k, _ in producer.records} == {
        ("unit-worker-identity-state-changelog", 0, b"usr-1")
    }
    core, applied = unwrap(producer.records[-1][3] or b"")
    assert app.custos_detection.load_state(core).baseline.n == 5
    # ... with the input offsets it includes (exactly-once on restart, issue 12.3).
    assert applied == {(1, 0): 4}
    # Every record counts as ended, dead letters and re-keyed ones too: the next commit.
    assert app.custos_hot.positions == {("identity.events", 0): len(records)}


def test_a_record_re_read_after_a_restart_is_not_applied_again(
    tmp_path: Path, sent: Sent
) -> None:
    """The restored state names the offsets it includes: re-reading them changes nothing."""
    producer = FakeProducer()
    app = _app(tmp_path, producer)
    now = int(time.time() * 1000)
    feed = _Feed("identity.events")
    first = [feed(b"usr-1", _logon(f"ok-{i}", "usr-1", now - 1000 + i)) for i in range(3)]
    _dispatch(app, first)
    state = {k: v for _, _, k, v in producer.records}
    # A new worker restores partition 0 from that changelog, then re-reads the same records.
    again = _app(tmp_path / "b", FakeProducer(), restore=lambda p: iter(state.items()))
    again.custos_hot.on_assign(None, [type("TP", (), {"topic": "identity.events",
                                                      "partition": 0})()])  # fmt: skip
    assert len(again.custos_hot.store) == 1 and again.custos_hot.restored == 1
    _dispatch(again, first)
    assert again.custos_stats.scored == 0  # nothing applied twice
    _dispatch(again, [feed(b"usr-1", _logon("new", "usr-1", now))])
    assert again.custos_stats.scored == 1
    st = again.custos_detection.load_state(again.custos_hot.store["usr-1"])
    assert st.baseline.n == 4


def test_a_re_keyed_record_counts_under_the_record_it_was_first_read_from(
    tmp_path: Path, sent: Sent
) -> None:
    """Read back from the re-keyed topic, an event is marked under its origin (its header), so
    a second copy (re-keyed again after a crash) is not applied twice."""
    producer = FakeProducer()
    app = _app(tmp_path, producer)
    now = int(time.time() * 1000)
    feed = _Feed("identity.events")
    _dispatch(app, [feed(b"usr-1", _logon("a", "usr-1", now)),
                    feed(b"a-session", _logon("b", "usr-2", now))])  # fmt: skip
    (_, key, value, headers), = [m for m in sent if m[0] == "unit-worker-rekeyed"]
    assert headers == {"custos.source": b"1:0:1"}
    rekeyed = _Feed("unit-worker-rekeyed")
    copies = [rekeyed(key, value), rekeyed(key, value)]  # the second: re-keyed again
    for r in copies:
        r.headers = list(headers.items())
    _dispatch(app, copies)
    assert app.custos_stats.scored == 2  # usr-1's event and one copy of usr-2's
    states = {k: v for _, _, k, v in producer.records}
    assert unwrap(states[b"usr-2"] or b"")[1] == {(128 + 1, 0): 1}
    assert app.custos_hot.positions[("unit-worker-rekeyed", 0)] == 2


def test_a_refused_state_write_stops_the_worker_and_commits_nothing(
    tmp_path: Path, sent: Sent
) -> None:
    died: list[str] = []
    app = _app(tmp_path, FakeProducer(refuse=True), die=died.append)
    now = int(time.time() * 1000)
    feed = _Feed("identity.events")
    with pytest.raises(Exception, match="refused"):
        _dispatch(app, [feed(b"usr-1", _logon("ok", "usr-1", now))])
    assert died and "identity-state-changelog" in died[0] and "BROKER_NOT_AVAILABLE" in died[0]
    assert app.custos_hot.positions == {}  # the unit never ended: its offset is not committed


def test_a_rebalance_commits_what_ended_and_forgets_what_another_worker_owns(
    tmp_path: Path, sent: Sent
) -> None:
    app = _app(tmp_path)
    hot = app.custos_hot
    now = int(time.time() * 1000)
    feed = _Feed("identity.events")
    tp = lambda p: type("TP", (), {"topic": "identity.events", "partition": p})()  # noqa: E731
    hot.on_assign(None, [tp(0), tp(1)])
    _dispatch(app, [feed(b"usr-1", _logon("a", "usr-1", now), 0),
                    feed(b"usr-9", _logon("b", "usr-9", now), 1)])  # fmt: skip
    assert hot.store.owned() == {0, 1}
    hot.on_revoke(None, [tp(0), tp(1)])
    assert hot.consumer.commits[-1] == [("identity.events", 0, 1), ("identity.events", 1, 1)]
    hot.on_assign(None, [tp(1)])  # partition 0 went to another worker
    assert set(hot.store) == {"usr-9"} and hot.owned == {1}
    assert hot.positions == {("identity.events", 1): 1}


def test_detect_agent_publishes_an_ocsf_finding_for_a_critical_rule(
    tmp_path: Path, sent: Sent
) -> None:
    app = _app(tmp_path)
    now = int(time.time() * 1000)
    feed = _Feed("agent.events")
    _dispatch(app, [feed(b"agt-1", _call("fine", "agt-1", now - 2000, "agt-1")),
                    feed(b"agt-1", _call("misuse", "agt-1", now - 1000, "agt-2"))])  # fmt: skip
    assert app.custos_stats.alerts == 1
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

    _dispatch(app, [_Feed("unit-worker-signals")(b"agt-orch-9", msgspec.msgpack.encode(signal))])
    assert app.custos_stats.findings == 1
    [(_, key, value, _)] = [m for m in sent if m[0] == "custos.alerts"]
    finding = msgspec.json.decode(value or b"")
    assert key == b"agt-orch-9"
    assert finding["evidences"][0]["actor"]["user"]["uid"] == "agt-orch-9"
    assert [e["uid"] for e in finding["finding_info"]["related_events"]] == ["e-60"]


def test_a_refused_finding_stops_the_worker_before_state_commands_or_counts(
    tmp_path: Path, sent: Sent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12.1/12.2: results before state, delivery before commit, nothing silently lost."""
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
    producer = FakeProducer()
    app = _app(tmp_path, producer, die=died.append)
    now = int(time.time() * 1000)
    feed = _Feed("agent.events")
    with pytest.raises(Exception, match="MessageSizeTooLargeError"):  # after die(): a recorder
        _dispatch(app, [feed(b"agt-1", _call("misuse", "agt-1", now - 1000, "agt-2"))])
    assert died and "custos.alerts" in died[0] and "MessageSizeTooLargeError" in died[0]
    topics = [m[0] for m in sent]
    assert "custos.alerts" in topics
    assert "custos.quarantine" not in topics  # no command without its finding on record
    assert not producer.records  # state not written
    assert app.custos_hot.positions == {}  # nor the input counted as ended
    assert app.custos_stats.findings == 0 and app.custos_stats.scored == 0


def test_a_restored_open_incident_is_known_to_the_new_owner(tmp_path: Path, sent: Sent) -> None:
    """Its ticks must be able to close it even if the identity never sends another event."""
    producer = FakeProducer()
    app = _app(tmp_path, producer)
    now = int(time.time() * 1000)
    feed = _Feed("agent.events")
    _dispatch(app, [feed(b"agt-1", _call("misuse", "agt-1", now - 1000, "agt-2")),
                    feed(b"agt-3", _call("fine", "agt-3", now - 1000, "agt-3"))])  # fmt: skip
    assert "agt-1" in app.custos_detection.open_incidents
    state = {k: v for _, _, k, v in producer.records}
    again = _app(tmp_path / "b", FakeProducer(), restore=lambda p: iter(state.items()))
    tp = type("TP", (), {"topic": "agent.events", "partition": 0})()
    again.custos_hot.on_assign(None, [tp])
    assert again.custos_detection.open_incidents == {"agt-1"}
    # The incident is in agt-1's side part, written before its state (and restored with it).
    keys = [k for _, _, k, _ in producer.records]
    assert keys.index(b"agt-1\x00side") < keys.index(b"agt-1")
    assert set(again.custos_hot.store) == {"agt-1", "agt-1\x00side", "agt-3"}
    assert again.custos_hot.store.identities() == 2
    st = again.custos_detection.state_of("agt-1", again.custos_hot.store)
    assert st.risk.incident is not None and st.risk.incident.uid


def test_a_stop_during_consume_waits_for_it_before_closing_the_consumer(
    tmp_path: Path, sent: Sent
) -> None:
    """librdkafka's consumer must not be closed under a call in flight (another thread)."""
    calls: list[str] = []

    class SlowConsumer(FakeConsumer):
        def subscribe(self, topics: list[str], **_: Any) -> None:
            calls.append("subscribe")

        def consume(self, n: int, timeout: float) -> list[Any]:
            calls.append("consume")
            time.sleep(0.3)
            calls.append("consumed")
            return []

        def close(self) -> None:
            calls.append("close")

    clients = HotClients(SlowConsumer(), FakeProducer(), lambda p: iter(()))
    app = create_app(_settings(tmp_path), clients=clients)

    async def go() -> None:
        task = asyncio.ensure_future(app.custos_hot.run())
        # Stop while a consume is in flight: run() first compiles the kernels in a thread,
        # which takes longer than any fixed wait on a busy machine.
        deadline = time.monotonic() + 60
        while "consume" not in calls and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert calls[:3] == ["subscribe", "consume", "consumed"] and calls[-1] == "close"


def test_the_metrics_page_binds_loopback_unless_told_otherwise(tmp_path: Path) -> None:
    from pipeline.stream.app import faust_app

    assert faust_app(Settings.from_env({}), tmp_path).conf.web_bind == "127.0.0.1"
    pod = Settings.from_env({"CUSTOS_WORKER_WEB_BIND": "0.0.0.0"})
    assert faust_app(pod, tmp_path).conf.web_bind == "0.0.0.0"


def _hot(consumer: Any, tmp_path: Path, *, within_s: float) -> Any:
    """The hot loop of a worker reading through ``consumer`` (no restore, no broker)."""
    settings = Settings.from_env(
        {}, worker_datadir=str(tmp_path), worker_batch_within_s=within_s, app_id="unit-worker",
        home=str(tmp_path / "home"), snapshot_interval_s=0.0,
    )  # fmt: skip
    clients = HotClients(consumer, FakeProducer(), lambda p: iter(()))
    return create_app(settings, clients=clients).custos_hot


class _Msg:
    """A consumed record of identity.events[0] as confluent-kafka hands it over."""

    def __init__(self, offset: int, value: bytes, now: int) -> None:
        self.off, self.val, self.now = offset, value, now

    def error(self) -> None:
        return None

    def key(self) -> bytes:
        return b"usr-1"

    def value(self) -> bytes:
        return self.val

    def topic(self) -> str:
        return "identity.events"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self.off

    def timestamp(self) -> tuple[int, int]:
        return (1, self.now)

    def headers(self) -> None:
        return None


def test_records_read_before_a_revocation_in_the_same_batch_are_left_to_their_owner(
    tmp_path: Path, sent: Sent
) -> None:
    """A revocation inside a later consume slice: what the batch already held may belong to
    another worker now (it re-reads it from the offsets committed on revoke)."""
    now = int(time.time() * 1000)

    def Msg(offset: int) -> _Msg:
        return _Msg(offset, _logon(f"e-{offset}", "usr-1", now), now)

    slices: list[Any] = ["one", "revoke", "two"]

    class Rebalancing(FakeConsumer):
        def consume(self, n: int, timeout: float) -> list[Any]:
            step = slices.pop(0) if slices else "idle"
            if step == "one":
                return [Msg(0), Msg(1)]
            if step == "revoke":
                hot.on_revoke(self, [type("TP", (), {"topic": "identity.events",
                                                     "partition": 0})()])  # fmt: skip
                return []
            if step == "two":
                return [Msg(0)]  # re-delivered from the committed offset
            time.sleep(timeout)
            return []

    hot = _hot(Rebalancing(), tmp_path, within_s=0.5)
    got = asyncio.run(hot.take())
    assert [m.offset() for m in got] == [0]  # only what came after the revocation
    assert hot.generation == 1


def test_records_of_the_new_assignment_read_in_the_rebalancing_slice_are_read_again(
    tmp_path: Path, sent: Sent
) -> None:
    """Revocation and assignment inside one consume slice that also returns records of the
    new assignment: they are dropped with the rest, so the partition is read again from the
    first of them (before, its position had moved past them and they were never scored)."""
    now = int(time.time() * 1000)
    log = [_logon(f"e-{i}", "usr-1", now + i) for i in range(3)]

    def Msg(offset: int) -> _Msg:
        return _Msg(offset, log[offset], now)

    tp0 = type("TP", (), {"topic": "identity.events", "partition": 0})()
    seeks: list[tuple[str, int, int]] = []

    class Rebalancing(FakeConsumer):
        position = 0
        slices: list[str] = ["one", "rebalance"]  # noqa: RUF012

        def seek(self, tp: Any) -> None:
            seeks.append((tp.topic, tp.partition, tp.offset))
            self.position = tp.offset

        def consume(self, n: int, timeout: float) -> list[Any]:
            step = self.slices.pop(0) if self.slices else "fetch"
            if step == "one":
                hot.on_assign(self, [tp0])
                self.position = 2
                return [Msg(0), Msg(1)]
            if step == "rebalance":  # a worker joins: the same partition comes back at once,
                hot.on_revoke(self, [tp0])  # and its records come from the committed offset
                hot.on_assign(self, [tp0])
                self.position = 3
                return [Msg(0), Msg(1), Msg(2)]
            if self.position < len(log):
                got, self.position = [Msg(i) for i in range(self.position, len(log))], len(log)
                return got
            time.sleep(timeout)
            return []

    hot = _hot(Rebalancing(), tmp_path, within_s=0.3)
    got = asyncio.run(hot.take())
    assert seeks == [("identity.events", 0, 0)]
    assert [m.offset() for m in got] == [0, 1, 2]  # every record, once


class _Assigning(FakeConsumer):
    """A consumer whose group committed ``committed`` (topic, partition) → offset; keeps the
    offsets the worker assigns."""

    def __init__(self, committed: dict[tuple[str, int], int]) -> None:
        super().__init__()
        self.done = committed
        self.assigned: dict[tuple[str, int], int] = {}

    def committed(self, tps: list[Any], timeout: float = 0.0) -> list[Any]:
        for tp in tps:
            tp.offset = self.done.get((tp.topic, tp.partition), -1001)
        return tps

    def assign(self, tps: list[Any]) -> None:
        self.assigned = {(tp.topic, tp.partition): tp.offset for tp in tps}


def _tp(topic: str, partition: int = 0) -> Any:
    from confluent_kafka import TopicPartition

    return TopicPartition(topic, partition)


def test_snapshots_write_state_with_a_marker_and_a_restore_replays_quietly_up_to_the_commit(
    tmp_path: Path, sent: Sent
) -> None:
    """Snapshot mode: units write no state; a snapshot writes it, then the partition's marker
    (its input positions). A new owner starts at the marker, applies the records up to the
    group's committed offset to state only (their outputs went out before), and scores the
    rest as usual: every event in the state once, every score sent once."""
    producer = FakeProducer()
    app = _app(tmp_path, producer, snapshot_s=30.0)
    hot = app.custos_hot
    hot.on_assign(_Assigning({}), [_tp("identity.events")])
    assert [k for _, _, k, _ in producer.records] == [MARKER]  # at once: starts from here
    producer.records.clear()
    now = int(time.time() * 1000)
    feed = _Feed("identity.events")
    log = [feed(b"usr-1", _logon(f"ok-{i}", "usr-1", now - 1000 + i)) for i in range(9)]
    _dispatch(app, log[:3])
    # Nothing written: the state is in the core's memory, its offsets waiting beside it.
    assert producer.records == [] and app.custos_detection.unwritten == 1
    assert set(hot.store.pending) == {"usr-1"} and hot.store.applied("usr-1") == {(1, 0): 2}
    assert hot.snapshot() is None and hot.snapshots == 1
    assert [k for _, _, k, _ in producer.records] == [b"usr-1", MARKER]
    assert msgspec.msgpack.decode(producer.records[-1][3] or b"") == {"identity.events": 3}
    _dispatch(app, log[3:6])  # delivered and committed (C = 6), then a kill -9
    assert app.custos_stats.scored == 6 and len(producer.records) == 2
    changelog = {k: v for _, _, k, v in producer.records}

    sent.clear()
    again = _app(tmp_path / "b", FakeProducer(), snapshot_s=30.0,
                 restore=lambda p: iter(changelog.items()))  # fmt: skip
    consumer = _Assigning({("identity.events", 0): 6})
    again.custos_hot.on_assign(consumer, [_tp("identity.events")])
    assert consumer.assigned == {("identity.events", 0): 3}  # the marker's, not the commit's
    _dispatch(again, log[3:8])  # the replay from the marker on, and two new ones
    assert [k for t, k, _, _ in sent if t == "custos.scores"] == [b"usr-1"] * 2
    assert again.custos_stats.replayed == 3 and again.custos_stats.scored == 2
    st = again.custos_detection.state_of("usr-1", again.custos_hot.store)  # in memory
    assert st.baseline.n == 8
    assert again.custos_hot.quiet == {}  # past the commit: nothing quiet any more
    # A commit never goes back below what the group had committed.
    again.custos_hot.positions[("identity.events", 0)] = 4
    again.custos_hot.commit()
    assert again.custos_hot.consumer.commits[-1] == [("identity.events", 0, 6)]


def _snapshotting(tmp_path: Path) -> tuple[FakeProducer, Any, Any, int, _Feed]:
    """A worker in snapshot mode owning partition 0 of the identity topic, and its feed."""
    producer = FakeProducer()
    app = _app(tmp_path, producer, snapshot_s=30.0)
    hot = app.custos_hot
    hot.on_assign(_Assigning({}), [_tp("identity.events")])
    return producer, app, hot, int(time.time() * 1000), _Feed("identity.events")


def test_a_revocation_in_snapshot_mode_hands_over_current_state(
    tmp_path: Path, sent: Sent
) -> None:
    producer, app, hot, now, feed = _snapshotting(tmp_path)
    _dispatch(app, [feed(b"usr-1", _logon(f"ok-{i}", "usr-1", now + i)) for i in range(4)])
    producer.records.clear()
    hot.on_revoke(hot.consumer, [_tp("identity.events")])
    assert [k for _, _, k, _ in producer.records] == [b"usr-1", MARKER]
    assert msgspec.msgpack.decode(producer.records[-1][3] or b"") == {"identity.events": 4}
    assert hot.consumer.commits[-1] == [("identity.events", 0, 4)]
    core, applied = unwrap(producer.records[0][3] or b"")
    assert app.custos_detection.load_state(core).baseline.n == 4 and applied == {(1, 0): 3}


def test_a_write_through_worker_restoring_a_snapshot_replays_from_its_marker(
    tmp_path: Path, sent: Sent
) -> None:
    """Snapshots switched off after a kill -9: the records past the last snapshot are only in
    the dead worker's memory, so the marker still says where to read from."""
    producer = FakeProducer()
    app = _app(tmp_path, producer, snapshot_s=30.0)
    app.custos_hot.on_assign(_Assigning({}), [_tp("identity.events")])
    now = int(time.time() * 1000)
    feed = _Feed("identity.events")
    log = [feed(b"usr-1", _logon(f"ok-{i}", "usr-1", now - 1000 + i)) for i in range(5)]
    _dispatch(app, log[:2])
    assert app.custos_hot.snapshot() is None
    _dispatch(app, log[2:4])  # committed, never snapshotted
    changelog = {k: v for _, _, k, v in producer.records}
    again = _app(tmp_path / "b", FakeProducer(), restore=lambda p: iter(changelog.items()))
    consumer = _Assigning({("identity.events", 0): 4})
    again.custos_hot.on_assign(consumer, [_tp("identity.events")])
    assert consumer.assigned == {("identity.events", 0): 2}
    _dispatch(again, log[2:])
    assert again.custos_stats.replayed == 2 and again.custos_stats.scored == 1
    st = again.custos_detection.load_state(again.custos_hot.store["usr-1"])
    assert st.baseline.n == 5


def test_snapshot_mode_keeps_states_in_the_core_and_re_read_events_never_change_them(
    tmp_path: Path, sent: Sent
) -> None:
    """The core holds changed states in memory until a snapshot. Events a restored state
    already includes (its snapshot was cut short after it: the marker is older) teach the
    shared models only: they must not change the state the core holds, which is ahead."""
    producer, app, hot, now, feed = _snapshotting(tmp_path)
    log = [feed(b"usr-1", _logon(f"ok-{i}", "usr-1", now - 1000 + i)) for i in range(8)]
    _dispatch(app, log[:3])
    assert hot.snapshot() is None
    old_marker = producer.records[-1]
    _dispatch(app, log[3:6])
    assert hot.snapshot() is None  # the state now includes 0..5; keep only the older marker
    changelog = {k: v for _, _, k, v in producer.records if k != MARKER}
    changelog[MARKER] = old_marker[3]

    again = _app(tmp_path / "b", FakeProducer(), snapshot_s=30.0,
                 restore=lambda p: iter(changelog.items()))  # fmt: skip
    again.custos_hot.on_assign(_Assigning({("identity.events", 0): 6}), [_tp("identity.events")])
    _dispatch(again, log[3:8])  # 3..5 re-read (in the state already), 6 and 7 new
    det = again.custos_detection
    assert det.state_of("usr-1", again.custos_hot.store).baseline.n == 8  # not 11, not 5
    assert det.unwritten == 1
    # Partitions lost (no chance to write): the core forgets the unwritten state too.
    again.custos_hot.on_lost(again.custos_hot.consumer, [_tp("identity.events")])
    assert det.unwritten == 0 and again.custos_hot.store.pending == {}
