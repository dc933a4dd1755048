"""The AgentDojo evaluation world: deterministic, contract-valid, consistently labelled."""

from __future__ import annotations

import json
import time
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

from pipeline.events.schemas import EventDecoder, encode_event_dict
from pipeline.simulate.labels import read_event_labels, read_labels
from pipeline.simulate.worlds import KINDS, World, build_world, write_world
from pipeline.simulate.worlds.agentdojo import DEFAULT_START_MS, catalogue


@lru_cache(maxsize=4)
def _world(seed: int = 0, agents: int = 20, days: float = 2.0, campaigns: int = 45) -> World:
    return build_world(agents=agents, days=days, seed=seed, campaigns=campaigns)


def test_same_seed_same_world_other_seed_differs() -> None:
    a = _world(0)
    b = build_world(agents=20, days=2.0, seed=0, campaigns=45)
    assert a.events == b.events
    assert a.labels == b.labels
    assert a.event_labels == b.event_labels
    c = _world(1)
    assert [e["metadata"]["uid"] for e in c.events] != [e["metadata"]["uid"] for e in a.events]
    assert c.labels != a.labels


def test_every_event_decodes_and_is_sorted() -> None:
    w = _world(0)
    dec = EventDecoder(max_future_skew_ms=10**13)
    times = []
    uids = set()
    for ev in w.events:
        e = dec.decode(encode_event_dict(ev))
        times.append(e.time_ms)
        uids.add(e.uid)
        if e.class_uid == 6003:
            assert e.identity_kind == "agent"
            assert e.operation and e.service and e.session_uid
            assert e.model is not None and e.delegated_by
            assert e.credential is not None and e.credential.issued_to == e.identity_uid
            assert e.credential.expires_at is not None and e.credential.expires_at >= e.time_ms
    assert times == sorted(times)
    assert len(uids) == len(w.events)
    assert DEFAULT_START_MS <= times[0] and times[-1] < DEFAULT_START_MS + 2 * 86_400_000


def test_labels_match_event_labels() -> None:
    w = _world(0)
    by_uid = {ev["metadata"]["uid"]: ev for ev in w.events}
    per_campaign: dict[str, list[str]] = {}
    for el in w.event_labels:
        assert el.event_uid in by_uid
        per_campaign.setdefault(el.campaign_id, []).append(el.event_uid)
    assert {r.campaign_id for r in w.labels} == set(per_campaign)
    for row in w.labels:
        uids = per_campaign[row.campaign_id]
        evs = sorted((by_uid[u] for u in uids), key=lambda e: e["time"])
        assert row.event_count == len(uids)
        assert row.first_event_uid == uids[0] and row.last_event_uid == uids[-1]
        assert row.first_time_ms == evs[0]["time"] and row.last_time_ms == evs[-1]["time"]
        assert all(e["actor"]["user"]["uid"] == row.identity_uid for e in evs)


def test_all_campaign_kinds_present() -> None:
    w = _world(0)
    assert len(w.labels) == 45
    assert Counter(r.scenario for r in w.labels) == dict.fromkeys(KINDS, 9)
    bulk = [r for r in w.labels if r.scenario == "bulk_read_then_send"]
    assert all(16 <= r.event_count <= 61 for r in bulk)


def test_campaign_window_and_kinds_at_full_length() -> None:
    w = build_world(agents=30, days=14.0, seed=2, campaigns=10)
    day = 86_400_000
    assert len(w.labels) == 10
    for r in w.labels:
        assert DEFAULT_START_MS + 3 * day <= r.first_time_ms < DEFAULT_START_MS + 13 * day + day
    by_uid = {ev["metadata"]["uid"]: ev for ev in w.events}
    pay = [r for r in w.labels if r.scenario == "injected_payment"]
    camp_events: dict[str, list[dict[str, Any]]] = {}
    for el in w.event_labels:
        camp_events.setdefault(el.campaign_id, []).append(by_uid[el.event_uid])
    for r in pay:  # the attacker IBAN was never paid by the victim before
        pays = [
            e
            for e in camp_events[r.campaign_id]
            if e["api"]["operation"] in ("send_money", "update_scheduled_transaction")
        ]
        assert pays
        target = pays[0]["resources"][-1]["uid"]
        earlier = {
            res["uid"]
            for ev in w.events
            if ev.get("actor", {}).get("user", {}).get("uid") == r.identity_uid
            and ev["time"] < r.first_time_ms
            and ev["api"]["operation"] == "send_money"
            for res in ev["resources"]
        }
        assert target.startswith("iban:") and target not in earlier


def test_small_world_is_fast_and_bounded() -> None:
    t0 = time.perf_counter()
    w = build_world(agents=20, days=2.0, seed=5)
    assert time.perf_counter() - t0 < 5.0
    assert 0 < len(w.events) < 40_000
    assert w.identities >= 20 and w.days == 2.0


def test_catalogue_header_and_size() -> None:
    cat = catalogue()
    assert "ethz-spylab/agentdojo" in cat["source"]["repository"]
    assert cat["source"]["licence"].startswith("MIT")
    assert set(cat["tools"]) == {"workspace", "travel", "banking", "slack"}
    for suite, tasks in cat["user_tasks"].items():
        for calls in tasks.values():
            assert set(calls) <= set(cat["tools"][suite])
    path = Path(__file__).parents[3] / "pipeline/simulate/worlds/agentdojo_catalogue.json"
    assert path.stat().st_size < 150_000


def test_write_world_round_trips(tmp_path: Path) -> None:
    w = _world(0)
    paths = write_world(w, tmp_path / "out")
    lines = paths["events"].read_bytes().splitlines()
    assert len(lines) == len(w.events)
    assert json.loads(lines[0]) == w.events[0]
    assert read_labels(paths["labels"]) == w.labels
    assert read_event_labels(paths["event_labels"]) == w.event_labels


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        build_world(agents=0)
