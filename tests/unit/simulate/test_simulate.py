"""The traffic simulator: contract, determinism, ordering, habits, attack labels, sinks."""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from pipeline.config import Settings
from pipeline.errors import KafkaError
from pipeline.simulate import (
    SCENARIOS,
    JsonlSink,
    KafkaSink,
    LabelRow,
    MemorySink,
    ParquetSink,
    Simulation,
    build_population,
    iter_events,
    open_sink,
    read_labels,
    simulate,
)
from pipeline.simulate.catalogue import agent_config_hash, catalogue

SETTINGS = Settings()
START = 1_699_920_000_000  # 2023-11-14 00:00 UTC, a Tuesday
HOUR = 3_600_000


def _ident(ev: dict[str, Any]) -> str:
    return str(ev["user"]["uid"] if ev["class_uid"] == 3002 else ev["actor"]["user"]["uid"])


@dataclasses.dataclass
class Run:
    sim: Simulation
    messages: list[tuple[str, bytes, bytes, int]]
    events: list[dict[str, Any]]
    labels: list[LabelRow]


@pytest.fixture(scope="module")
def run() -> Run:
    """A day and an hour of 400 identities with one campaign per scenario (drift needs a day)."""
    sim = Simulation(
        SETTINGS,
        identities=400,
        duration_s=25 * 3600,
        seed=11,
        start_ms=START,
        campaigns_per_scenario=1,
    )
    messages = list(sim.events())
    gc.disable()  # ~150k nested dicts: the cyclic GC would dominate decoding time
    try:
        events = [msgspec.json.decode(v) for _, _, v, _ in messages]
    finally:
        gc.enable()
    return Run(sim, messages, events, sim.label_rows())


# ---- the input contract ----------------------------------------------------------------------


def test_every_event_follows_the_contract(run: Run) -> None:
    sim = run.sim
    assert len(run.events) > 10_000
    seen_uids: set[str] = set()
    for (topic, key, _value, t), ev in zip(run.messages, run.events, strict=True):
        cls, act = ev["class_uid"], ev["activity_id"]
        assert cls in (3002, 6003)
        assert ev["category_uid"] == cls // 1000
        assert ev["type_uid"] == cls * 100 + act
        assert ev["severity_id"] in (1, 2) and ev["status_id"] in (1, 2)
        assert ev["time"] == t and sim.start_ms <= t < sim.end_ms
        meta = ev["metadata"]
        assert meta["version"] == "1.8.0" and meta["product"]["name"] == "custos-simulator"
        assert meta["uid"] not in seen_uids
        seen_uids.add(meta["uid"])
        kind = ev["unmapped"]["identity_kind"]
        assert kind in ("human", "service", "agent")
        src = ev["src_endpoint"]
        assert src["ip"] and len(src["location"]["country"]) == 2
        assert -90 <= src["location"]["lat"] <= 90 and -180 <= src["location"]["long"] <= 180
        assert isinstance(src["autonomous_system"]["number"], int)
        assert key.decode() == _ident(ev)
        if cls == 3002:
            assert topic == SETTINGS.identity_topic
            assert ev["user"]["uid"] and "type_id" in ev["user"]
            assert ev["service"]["name"] and ev["auth_protocol"]
            assert act in (1, 2, 3, 4, 99)
        else:
            assert topic == SETTINGS.agent_topic
            assert ev["actor"]["user"]["uid"] and "type_id" in ev["actor"]["user"]
            assert ev["api"]["operation"] and ev["api"]["service"]["name"]
            assert act in (1, 2, 3, 4, 99)
            assert "traffic" not in ev  # not an API Activity attribute (OCSF 1.8)
            assert ev["http_response"]["length"] >= 0 and ev["http_request"]["length"] >= 0
            assert ev["http_response"]["code"] in (200, 403)
            assert ev["metadata"]["profiles"] == ["data_classification"]
            for res in ev.get("resources", []):
                assert res["uid"] and res["type"]
                for c in res.get("data_classifications", []):
                    assert c["confidentiality_id"] in (1, 2, 3, 4, 5, 6)
        if kind == "agent" and cls == 6003:
            ext = ev["unmapped"]
            cred = ext["credential"]
            assert set(cred) == {"uid", "issued_to", "task_uid", "step", "expires_at"}
            assert cred["task_uid"] == ev["actor"]["session"]["uid"]
            assert ext["model"]["digest"].startswith("sha256:")
            assert len(ext["model"]["digest"]) == len("sha256:") + 64
            assert ext["environment"] and ext["rationale"] and ext["delegated_by"]


def test_events_pass_the_ingest_decoder(run: Run) -> None:
    schemas = pytest.importorskip("pipeline.events.schemas")
    dec = schemas.EventDecoder.from_settings(SETTINGS)
    for _, key, value, _ in run.messages[::7]:
        ev = dec.decode(value, now_ms=run.sim.end_ms)
        assert ev.identity_uid == key.decode()


def test_agents_work_in_chains_with_step_credentials(run: Run) -> None:
    agents = [e for e in run.events if e["unmapped"]["identity_kind"] == "agent"]
    api = [e for e in agents if e["class_uid"] == 6003]
    assert len(api) > 0.8 * len(agents)  # agents mostly call tools
    labelled = {r.identity_uid for r in run.labels}
    benign = [e for e in api if _ident(e) not in labelled]
    for e in benign:
        cred = e["unmapped"]["credential"]
        assert cred["issued_to"] == _ident(e)
        assert e["time"] < cred["expires_at"] <= e["time"] + 130_000
    delegated_by_agent = [e for e in benign if e["unmapped"]["delegated_by"].startswith("agt-")]
    assert delegated_by_agent, "orchestrators hand tasks to downstream agents"
    delegations = [e for e in benign if e["api"]["operation"] == "tasks.delegate"]
    assert delegations and all(e["resources"][0]["type"] == "agent" for e in delegations)
    models: dict[str, set[str]] = defaultdict(set)
    for e in benign:
        models[_ident(e)].add(e["unmapped"]["model"]["digest"])
    assert all(len(d) == 1 for d in models.values()), "one stable model per agent"
    for e in agents:  # every agent event (sign-ins too) says what configuration it runs with
        uid, ext = _ident(e), e["unmapped"]
        if uid not in labelled:
            assert ext["tool_manifest_hash"] == agent_config_hash(uid, "tools")
            assert ext["system_prompt_hash"] == agent_config_hash(uid, "prompt")
    others = (e for e in run.events if e["unmapped"]["identity_kind"] != "agent")
    assert not any("tool_manifest_hash" in e["unmapped"] for e in others)


# ---- determinism and ordering ---------------------------------------------------------------


def _digest(seed: int) -> str:
    h = hashlib.sha256()
    for topic, key, value, _ in iter_events(
        SETTINGS, identities=300, duration_s=2 * 3600, seed=seed, start_ms=START + 9 * HOUR
    ):
        h.update(topic.encode() + b"|" + key + b"|" + value + b"\n")
    return h.hexdigest()


def test_same_seed_same_bytes_different_seed_different() -> None:
    assert _digest(5) == _digest(5)
    assert _digest(5) != _digest(6)


def test_output_is_in_event_time_order(run: Run) -> None:
    times = [t for _, _, _, t in run.messages]
    assert times == sorted(times)


def test_default_window_is_in_the_past() -> None:
    sim = Simulation(SETTINGS, identities=50, duration_s=1800, seed=1, attacks=False)
    now = time.time() * 1000
    assert sim.end_ms <= now and sim.start_ms % HOUR == 0
    assert sim.end_ms - sim.start_ms == 1_800_000


# ---- habits ------------------------------------------------------------------------------------


def test_humans_keep_their_hours_and_home(run: Run) -> None:
    pop, cat = run.sim.population, catalogue()
    attacked = {r.identity_uid for r in run.labels}
    in_hours = home = total = 0
    countries: dict[str, Counter[str]] = defaultdict(Counter)
    for ev in run.events:
        uid = _ident(ev)
        if not uid.startswith("usr-") or uid in attacked:
            continue
        i = int(uid[4:])
        local = ev["time"] // 60_000 + int(cat.geo_tz_min[pop.geo[i]])
        since = (local % 1440 - int(pop.work_start[i])) % 1440
        weekday = (local // 1440 + 3) % 7
        in_hours += since < int(pop.work_len[i]) and weekday < 5
        home += ev["src_endpoint"]["location"]["country"] == cat.geo_country[pop.geo[i]]
        countries[uid][ev["src_endpoint"]["location"]["country"]] += 1
        total += 1
    assert total > 1000
    assert in_hours / total > 0.85
    assert home / total > 0.99
    assert all(len(c) == 1 for c in countries.values())


def test_services_run_around_the_clock_and_peers_look_alike(run: Run) -> None:
    hours: Counter[int] = Counter()
    ops: dict[str, Counter[str]] = defaultdict(Counter)
    for ev in run.events:
        uid = _ident(ev)
        if uid.startswith("svc-") and ev["time"] < START + 24 * HOUR:
            hours[(ev["time"] // HOUR) % 24] += 1
        if ev["class_uid"] == 6003 and uid.startswith("usr-"):
            ops[uid][ev["api"]["service"]["name"] + "." + ev["api"]["operation"]] += 1
    assert len(hours) == 24 and min(hours.values()) > 0.5 * max(hours.values())
    # Each human uses a small favourite set out of the whole catalogue.
    n_ops = len(catalogue().op_name)
    busy = [c for c in ops.values() if sum(c.values()) >= 30]
    assert busy and all(len(c) < n_ops / 3 for c in busy)


def test_a_million_identities_are_arrays_not_objects() -> None:
    pop = build_population(1_000_000, seed=3)
    assert pop.n == 1_000_000
    assert pop.n_human + pop.n_service + pop.n_agent == pop.n
    total_bytes = 0
    for f in dataclasses.fields(pop):
        value = getattr(pop, f.name)
        if f.name == "traits":  # profile-only habits: None for the default population
            assert value is None
            continue
        assert isinstance(value, (int, np.ndarray)), f.name
        if isinstance(value, np.ndarray):
            assert value.dtype != object, f.name
            assert len(value) <= pop.n
            total_bytes += value.nbytes
    for name in ("kind", "group", "geo", "asn", "prefix", "api_rate", "ceiling", "model"):
        assert len(getattr(pop, name)) == pop.n
    assert total_bytes < 150_000_000
    assert pop.uid(999_999).endswith("0999999")


# ---- attacks and labels ------------------------------------------------------------------------


def test_every_scenario_is_labelled_and_in_the_stream(run: Run) -> None:
    assert {r.scenario for r in run.labels} == set(SCENARIOS)
    by_uid = {ev["metadata"]["uid"]: ev for ev in run.events}
    for row in run.labels:
        first, last = by_uid[row.first_event_uid], by_uid[row.last_event_uid]
        assert _ident(first) == row.identity_uid == _ident(last)
        assert first["time"] == row.first_time_ms <= row.last_time_ms == last["time"]
        window = [
            e
            for e in run.events
            if _ident(e) == row.identity_uid and row.first_time_ms <= e["time"] <= row.last_time_ms
        ]
        assert 1 <= row.event_count <= len(window)


def _events_of(run: Run, row: LabelRow) -> list[dict[str, Any]]:
    return [
        e
        for e in run.events
        if _ident(e) == row.identity_uid and row.first_time_ms <= e["time"] <= row.last_time_ms
    ]


def _rows(run: Run, scenario: str) -> list[LabelRow]:
    rows = [r for r in run.labels if r.scenario == scenario]
    assert rows, scenario
    return rows


def test_scenarios_look_like_their_description(run: Run) -> None:
    pop, cat = run.sim.population, catalogue()
    # 1. a foreign sign-in on a network the identity never uses, minutes after one from home
    travel = 0
    for row in _rows(run, "stolen_credentials"):
        i = int(row.identity_uid[4:])
        home = cat.geo_country[pop.geo[i]]
        first = next(e for e in run.events if e["metadata"]["uid"] == row.first_event_uid)
        assert first["src_endpoint"]["location"]["country"] != home
        assert first["src_endpoint"]["autonomous_system"]["number"] != int(
            cat.asn_number[pop.asn[i]]
        )
        travel += any(
            e["class_uid"] == 3002
            and _ident(e) == row.identity_uid
            and e["src_endpoint"]["location"]["country"] == home
            and 0 < row.first_time_ms - e["time"] <= 21 * 60_000
            for e in run.events
        )
    assert travel >= 1
    # 2. bulk reads of confidential data and large uploads, with injected rationales
    for row in _rows(run, "prompt_injection_exfil"):
        evs = [e for e in _events_of(run, row) if e["class_uid"] == 6003]
        assert max(e["http_request"]["length"] for e in evs) > 5_000_000
        assert any(
            c["confidentiality_id"] in (2, 3, 4, 6)
            for e in evs
            for r in e.get("resources", [])
            for c in r.get("data_classifications", [])
        )
        assert any("instruction" in e["unmapped"]["rationale"].lower() for e in evs)
    # 3. admin APIs, some denied
    admin_ops = {cat.op_name[o] for o in np.flatnonzero(cat.op_admin)}
    for row in _rows(run, "privilege_escalation"):
        evs = [e for e in _events_of(run, row) if e["class_uid"] == 6003]
        assert any(e["api"]["operation"] in admin_ops and e["status_id"] == 2 for e in evs)
        assert any(e["api"]["operation"] in admin_ops and e["status_id"] == 1 for e in evs)
    # 4. an orchestrator drawing in agents that now name it as their delegator
    rows = _rows(run, "lateral_movement")
    assert len({r.campaign_id for r in rows}) < len(rows)  # several identities per campaign
    orchestrators = {r.identity_uid for r in rows}
    assert any(
        e["unmapped"].get("delegated_by") in orchestrators
        for r in rows
        for e in _events_of(run, r)
        if e["class_uid"] == 6003
    )
    # 5. a credential used by someone else or after it expired
    for row in _rows(run, "credential_reuse"):
        evs = [e for e in _events_of(run, row) if e["class_uid"] == 6003]
        assert any(
            e["unmapped"]["credential"]["issued_to"] != row.identity_uid
            or e["time"] > e["unmapped"]["credential"]["expires_at"]
            for e in evs
        )
    # 6. one agent, two environments
    for row in _rows(run, "cloned_agent"):
        envs = {e["unmapped"]["environment"] for e in _events_of(run, row)}
        assert len(envs) == 2
    # 7. a new digest for the same model name and version
    for row in _rows(run, "model_swap"):
        mine = [e for e in run.events if _ident(e) == row.identity_uid]
        before = {e["unmapped"]["model"]["digest"] for e in mine if e["time"] < row.first_time_ms}
        after = {e["unmapped"]["model"]["digest"] for e in _events_of(run, row)}
        names = {(e["unmapped"]["model"]["name"], e["unmapped"]["model"]["version"]) for e in mine}
        assert len(after) == 1 and len(names) == 1
        assert not before or before.isdisjoint(after)
        # ... and the rebuilt deployment runs another tool manifest (sometimes another prompt)
        tools = {e["unmapped"]["tool_manifest_hash"] for e in _events_of(run, row)}
        assert tools == {agent_config_hash(row.identity_uid, "tools", changed=True)}
        prompts = {e["unmapped"]["system_prompt_hash"] for e in _events_of(run, row)}
        assert len(prompts) == 1
    # 8. volumes creeping up
    assert _rows(run, "slow_drift")


def test_labels_never_leak_into_events(run: Run) -> None:
    words = [b"scenario", b"campaign", b"cmp-", *(s.encode() for s in SCENARIOS)]
    for _, _, value, _ in run.messages:
        assert not any(w in value for w in words)


def test_no_attacks_means_no_labels() -> None:
    sim = Simulation(
        SETTINGS, identities=100, duration_s=600, seed=2, start_ms=START, attacks=False
    )
    assert sum(1 for _ in sim.events()) > 0
    assert sim.label_rows() == []


# ---- simulate() and sinks ---------------------------------------------------------------------


def test_simulate_to_jsonl_with_labels(tmp_path: Path) -> None:
    out, labels = tmp_path / "events.jsonl", tmp_path / "labels.jsonl"
    report = simulate(
        SETTINGS,
        identities=300,
        duration_s=3 * 3600,
        seed=4,
        start_ms=START + 8 * HOUR,
        sink=open_sink(SETTINGS, out),
        labels_path=labels,
    )
    lines = out.read_bytes().splitlines()
    assert len(lines) == report.events == sum(report.per_topic.values())
    assert report.per_topic[SETTINGS.identity_topic] > 0 and report.per_topic[SETTINGS.agent_topic]
    rows = read_labels(labels)
    assert rows == list(report.labels) and report.campaigns == len({r.campaign_id for r in rows})
    assert report.campaigns >= 5 and report.events_per_s > 0
    uids = {json.loads(line)["metadata"]["uid"] for line in lines}
    assert all(r.first_event_uid in uids and r.last_event_uid in uids for r in rows)


def test_parquet_sink_flattens_columns(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "events.parquet"
    sink = ParquetSink(path, row_group=500)
    report = simulate(
        SETTINGS,
        identities=100,
        duration_s=1800,
        seed=4,
        start_ms=START + 10 * HOUR,
        sink=sink,
        labels_path=None,
        attacks=False,
    )
    table = pq.read_table(path)
    assert table.num_rows == report.events > 500
    assert table.column_names == ["uid", "time", "class_uid", "identity_uid", "topic", "event"]
    row = table.slice(0, 1).to_pylist()[0]
    ev = json.loads(row["event"])
    assert row["uid"] == ev["metadata"]["uid"] and row["time"] == ev["time"]
    assert row["class_uid"] == ev["class_uid"] and row["identity_uid"] == _ident(ev)


def test_jsonl_and_memory_sinks(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "x.jsonl")
    sink.write("t", b"k", b"{}")
    sink.close()
    assert (tmp_path / "x.jsonl").read_bytes() == b"{}\n"
    with pytest.raises(ValueError):
        open_sink(SETTINGS, tmp_path / "x.csv")
    mem = MemorySink()
    report = simulate(
        SETTINGS,
        identities=50,
        duration_s=300,
        seed=1,
        start_ms=START + 10 * HOUR,
        sink=mem,
        labels_path=None,
        attacks=False,
    )
    assert mem.closed and len(mem.messages) == report.events


class FakeProducer:
    """Refuses every third message with BufferError, like a full librdkafka queue."""

    def __init__(self, undelivered: int = 0) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.polls = 0
        self.calls = 0
        self.undelivered = undelivered

    def produce(self, topic: str, value: bytes, key: bytes) -> None:
        self.calls += 1
        if self.calls % 3 == 0:
            raise BufferError("queue full")
        self.sent.append((topic, key, value))

    def poll(self, timeout: float = 0) -> int:
        self.polls += 1
        return 0

    def flush(self, timeout: float = 0) -> int:
        return self.undelivered


def test_kafka_sink_retries_full_queue_and_flushes() -> None:
    producer = FakeProducer()
    sink = KafkaSink(SETTINGS, producer=producer, poll_every=10)
    report = simulate(
        SETTINGS,
        identities=60,
        duration_s=600,
        seed=3,
        start_ms=START + 10 * HOUR,
        sink=sink,
        labels_path=None,
    )
    assert len(producer.sent) == report.events == sink.produced
    assert producer.polls > 0
    for topic, key, value in producer.sent:
        ev = json.loads(value)
        assert key.decode() == _ident(ev)
        assert topic == (
            SETTINGS.identity_topic if ev["class_uid"] == 3002 else SETTINGS.agent_topic
        )
    failing = KafkaSink(SETTINGS, producer=FakeProducer(undelivered=2))
    with pytest.raises(KafkaError):
        failing.close()


def test_rate_paces_output() -> None:
    began = time.perf_counter()
    report = simulate(
        SETTINGS,
        identities=200,
        duration_s=600,
        seed=3,
        start_ms=START + 10 * HOUR,
        rate=2_000,
        sink=MemorySink(),
        labels_path=None,
        attacks=False,
    )
    assert report.events > 200
    assert time.perf_counter() - began >= 0.9 * (report.events - 200) / 2_000
