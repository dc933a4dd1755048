"""Unit tests for BaselineModel's configuration, lifecycle and cold start
(pipeline.baselines.baselines), and the helpers the other tests of pipeline.baselines share:
events, an office worker, learning a stream."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import msgspec
import pytest

from pipeline.baselines.baselines import (
    BaselineModel,
    blend,
    blend_contributions,
    own_weight,
    peer_group_key,
)
from pipeline.baselines.features import extract
from pipeline.baselines.layout import DEVIATION_INDEX, DEVIATIONS, BaselineState
from pipeline.events.schemas import Event, Resource
from pipeline.scores.explanations import Contribution

MONDAY = 1_767_571_200_000  # Monday 2026-01-05 00:00 UTC
HOUR = 3_600_000
DAY = 24 * HOUR
MB = 1_000_000
DASH = "\u2013"  # en dash, as in "09-17 UTC"


def ev(t: int, i: int = 0, **kw: Any) -> Event:
    base: dict[str, Any] = {
        "uid": f"e-{i}",
        "class_uid": 6003,
        "activity_id": 2,
        "time_ms": t,
        "identity_uid": "alice",
        "identity_kind": "human",
        "country": "DE",
        "asn": 3320,
        "src_ip": "203.0.113.7",
        "service": "crm",
        "operation": "crm.read",
        "bytes_out": MB,
        "bytes_in": 20_000,
        "status_id": 1,
    }
    base.update(kw)
    return Event(**base)


def office_worker(weeks: int = 4, per_day: int = 30, seed: int = 1) -> list[Event]:
    """A 9-17 weekday identity: ~1.2 MB out, DE, a few crm operations."""
    rng = random.Random(seed)
    out: list[Event] = []
    for day in range(weeks * 7):
        if day % 7 >= 5:
            continue
        for _ in range(per_day):
            t = MONDAY + day * DAY + 9 * HOUR + rng.randrange(8 * HOUR)
            out.append(
                ev(
                    t,
                    len(out),
                    operation=rng.choice(["crm.read", "crm.read", "crm.list", "crm.update"]),
                    bytes_out=int(1.2 * MB * math.exp(rng.gauss(0, 0.3))),
                    bytes_in=int(20_000 * math.exp(rng.gauss(0, 0.3))),
                    src_ip=f"203.0.113.{rng.randrange(1, 20)}",
                )
            )
    out.sort(key=lambda e: e.time_ms)
    return out


def learned(
    events: list[Event], model: BaselineModel | None = None
) -> tuple[BaselineModel, BaselineState, list[list[float]]]:
    """Learn every event; also return the deviations each event got before it was learned."""
    m = model or BaselineModel()
    s = m.new_state()
    devs = []
    for e in events:
        f = extract(e)
        devs.append(m.deviations(s, f)[0])
        m.learn_one(s, f)
    return m, s, devs


def d(dev: list[float], name: str) -> float:
    return dev[DEVIATION_INDEX[name]]


def _agent(t: int, i: int, task: str, nbytes: int, res: str = "r-1", **kw: Any) -> Event:
    return ev(t, i, identity_uid="agt-1", identity_kind="agent", session_uid=task,
              bytes_in=nbytes, bytes_out=None, resources=(Resource(res, "file", 1),),
              **kw)  # fmt: skip


def _observe_learn(m: BaselineModel, s: BaselineState, e: Event) -> list[float]:
    f = extract(e)
    m.observe(s, f)
    dev = m.deviations(s, f)[0]
    m.learn_one(s, f)
    return dev


# --- model configuration ----------------------------------------------------------------------


def test_hyperparameters_live_in_the_constructor() -> None:
    m = BaselineModel(half_life_events=500, cat_slots=8, scope="peer")
    params = m.get_params()
    assert params["half_life_events"] == 500 and params["cat_slots"] == 8
    assert repr(m).startswith("BaselineModel(half_life_events=500")
    for bad in (
        {"half_life_events": 0},
        {"half_life_events": 10**6},
        {"cat_slots": 0},
        {"rare_share": 0.0},
        {"scope": "team"},
    ):
        with pytest.raises(ValueError):
            BaselineModel(**bad)


# --- lifecycle --------------------------------------------------------------------------------


def test_ttl_expiry() -> None:
    m = BaselineModel(ttl_ms=30 * DAY)
    s = m.new_state()
    assert m.expired(s, MONDAY)  # never learned anything
    m.learn_one(s, extract(ev(MONDAY)))
    assert not m.expired(s, MONDAY + 30 * DAY)
    assert m.expired(s, MONDAY + 30 * DAY + 1)
    m.learn_one(s, extract(ev(MONDAY + 29 * DAY)))
    assert not m.expired(s, MONDAY + 31 * DAY)


def test_evidence_counts_learned_events() -> None:
    m, s, _ = learned([ev(MONDAY + k, k) for k in range(7)])
    assert m.evidence(s) == 7.0


# --- peer groups and cold start ---------------------------------------------------------------


def test_peer_group_key() -> None:
    e = ev(MONDAY, identity_kind="agent")
    assert peer_group_key(e) == f"agent:svc:{e.service}" if e.service else "agent:default"
    assert peer_group_key(msgspec.structs.replace(e, service=None)) == "agent:default"
    assert peer_group_key(extract(e), "agent/coding") == "agent:agent/coding"


def test_own_weight_moves_from_peer_to_own() -> None:
    m = BaselineModel(warmup_events=50)
    s = m.new_state()
    weights = []
    for k in range(200):
        weights.append(own_weight(s, 50))
        m.learn_one(s, extract(ev(MONDAY + k * 60_000, k)))
    assert weights[0] == 0.0
    assert all(a < b for a, b in itertools.pairwise(weights))
    assert weights[50] > 0.94 and weights[-1] > 0.999
    assert m.own_weight(s) == own_weight(s, 50)
    assert own_weight(s, 0) == 1.0


def test_blend() -> None:
    assert blend([1.0, 0.0], [0.0, 1.0], 1.0).tolist() == [1.0, 0.0]
    assert blend([1.0, 0.0], [0.0, 1.0], 0.0).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError):
        blend([1.0], [1.0, 2.0], 0.5)


def test_new_identity_is_scored_against_its_peer_group_from_the_first_event() -> None:
    model = BaselineModel()
    peer_model = BaselineModel(cat_slots=16, scope="peer")
    peer = peer_model.new_state()
    # The group: 50 office workers in DE.
    for seed in range(50):
        for e in office_worker(weeks=1, per_day=4, seed=seed):
            f = extract(e)
            peer_model.learn_one(peer, f, rate=1.0)

    own = model.new_state()
    t = MONDAY + 14 * DAY + 10 * HOUR

    def score(e: Event) -> tuple[list[float], list[Contribution], float]:
        f = extract(e)
        rate = model.current_rate(own, f)
        own_dev, own_why = model.deviations(own, f)
        peer_dev, peer_why = peer_model.deviations(peer, f, rate)
        w = model.own_weight(own)
        dev = blend(own_dev, peer_dev, w)
        return dev, blend_contributions(own_why, peer_why, dev, w), w

    dev, why, w = score(ev(t, 1, country="BR"))
    assert w == 0.0
    assert d(dev, "country") > 0.9  # no history of its own, still scored
    assert why[0].feature == "country" and why[0].kind == "peer"
    assert why[0].text == "country BR never seen in peer group (usually DE)"
    assert d(score(ev(t, 2))[0], "country") < 0.01

    # This identity works from FR: after its warm-up, its own baseline decides.
    for k in range(200):
        f = extract(ev(t + k * 60_000, 10 + k, country="FR"))
        peer_rate = model.current_rate(own, f)
        model.learn_one(own, f)
        peer_model.learn_one(peer, f, peer_rate)
    dev, why, w = score(ev(t + 300 * 60_000, 999, country="FR"))
    assert w > 0.99
    assert d(dev, "country") < 0.05


def test_peer_burst_uses_the_identitys_own_rate() -> None:
    model = BaselineModel()
    peer_model = BaselineModel(cat_slots=16, scope="peer")
    peer = peer_model.new_state()
    # A busy group (many identities, events every second overall), each identity slow.
    for k in range(3000):
        f = extract(ev(MONDAY + k * 1000, k, identity_uid=f"u{k % 100}"))
        peer_model.learn_one(peer, f, rate=1.0)
    own = model.new_state()
    t = MONDAY + 4000 * 1000
    dev: list[float] = []
    for k in range(50):  # a brand-new identity fires 50 requests in 50 s
        f = extract(ev(t + k * 1000, 10_000 + k))
        rate = model.current_rate(own, f)
        dev, _ = peer_model.deviations(peer, f, rate)
        model.learn_one(own, f)
    assert d(dev, "burst") > 0.8


def test_blend_contributions_keeps_the_dominant_side_and_blended_weights() -> None:
    own = [
        Contribution("country", "first_seen", 1.0, "BR", "usually DE", "own country"),
        Contribution("bytes_out", "zscore", 0.9, "1 MB", "typical 1 KB", "own bytes"),
    ]
    peer = [Contribution("country", "peer", 0.5, "BR", "usually FR", "peer country")]
    blended = [0.0] * len(DEVIATIONS)
    blended[DEVIATION_INDEX["country"]] = 0.8
    blended[DEVIATION_INDEX["bytes_out"]] = 0.2
    out = blend_contributions(own, peer, blended, 0.6)
    assert [(c.text, c.weight) for c in out] == [("own country", 0.8)]  # bytes_out < 0.3
