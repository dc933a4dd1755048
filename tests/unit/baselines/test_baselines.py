"""Unit tests for per-identity / peer baselines (pipeline.baselines.baselines)."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import msgspec
import pytest
from river import stats

from pipeline.baselines.baselines import (
    BaselineModel,
    blend,
    blend_contributions,
    own_weight,
    peer_group_key,
)
from pipeline.baselines.codec import STATE_VERSION, StateFormatError
from pipeline.baselines.features import CATEGORICAL, NUMERIC_INDEX, extract
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


# --- model configuration ----------------------------------------------------------------------


def test_deviation_dimensions() -> None:
    assert DEVIATIONS == (
        "bytes_out",
        "bytes_in",
        "n_resources",
        "sensitivity",
        "failure",
        "no_mfa",
        "chain_depth",
        "burst",
        "off_hours",
        "task_volume",
        "task_resources",
        "hour_volume",
        "drift",
        *CATEGORICAL,
    )


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


# --- exponentially weighted statistics --------------------------------------------------------


def test_ew_mean_and_variance_agree_with_river() -> None:
    half_life = 100
    m = BaselineModel(half_life_events=half_life)
    s = m.new_state()
    alpha = 1.0 - 0.5 ** (1.0 / half_life)
    mean, var = stats.EWMean(fading_factor=alpha), stats.EWVar(fading_factor=alpha)
    rng = random.Random(3)
    i = NUMERIC_INDEX["bytes_out"]
    for k in range(3000):
        f = extract(ev(MONDAY + k * 60_000, k, bytes_out=int(MB * math.exp(rng.gauss(0, 1)))))
        m.learn_one(s, f)
        mean.update(f.numeric[i])
        var.update(f.numeric[i])
    assert s.mean[i] == pytest.approx(mean.get(), rel=1e-9)
    assert s.var[i] == pytest.approx(var.get(), rel=1e-6)


def test_first_events_give_exact_mean_and_variance() -> None:
    # Bias-corrected weights: no pull towards 0 while the state is young.
    m = BaselineModel(half_life_events=1000)
    s = m.new_state()
    xs = [MB, 2 * MB, 4 * MB]
    for k, x in enumerate(xs):
        m.learn_one(s, extract(ev(MONDAY + k, k, bytes_out=x)))
    logs = [math.log1p(x) for x in xs]
    mu = sum(logs) / 3
    i = NUMERIC_INDEX["bytes_out"]
    assert s.mean[i] == pytest.approx(mu, rel=1e-3)
    assert s.var[i] == pytest.approx(sum((v - mu) ** 2 for v in logs) / 3, rel=2e-3)


# --- planted deviations -----------------------------------------------------------------------


def test_planted_deviation_scores_high_where_it_differs() -> None:
    events = office_worker()
    m, s, devs = learned(events)
    normal = devs[len(devs) // 2 :]  # the second half: a warm baseline
    next_monday_3am = MONDAY + 28 * DAY + 3 * HOUR + 14 * 60_000  # after the 4 weeks
    planted = ev(
        next_monday_3am,
        99_999,
        bytes_out=12 * MB,
        country="BR",
        operation="crm.export",
    )
    dev, why = m.deviations(s, extract(planted))
    for name in ("bytes_out", "country", "operation", "off_hours"):
        worst_normal = max(d(x, name) for x in normal)
        assert d(dev, name) > 0.6, name
        assert d(dev, name) > worst_normal + 0.3, (name, worst_normal)
    # Dimensions the planted event does not change stay quiet.
    for name in ("bytes_in", "failure", "asn", "service", "burst"):
        assert d(dev, name) < 0.3, name

    texts = {c.feature: c.text for c in why}
    assert texts["country"] == "country BR never seen (usually DE)"
    assert texts["operation"].startswith("first use of operation `crm.export` in ")
    assert texts["operation"].endswith(" days")
    assert texts["bytes_out"].startswith("bytes_out 12.0 MB vs typical 1.2 MB ± ")
    assert texts["off_hours"] == f"03:14 UTC — identity active mostly 09{DASH}17 UTC"
    assert [c.weight for c in why] == sorted((c.weight for c in why), reverse=True)
    assert len(why) <= m.max_contributions
    assert all(c.weight >= m.explain_threshold for c in why)
    kinds = {c.feature: c.kind for c in why}
    assert kinds == {
        "country": "first_seen",
        "operation": "first_seen",
        "bytes_out": "zscore",
        "off_hours": "off_hours",
    }


def test_normal_events_are_quiet() -> None:
    _, _, devs = learned(office_worker())
    warm = devs[len(devs) // 2 :]
    for name in DEVIATIONS:
        mean = sum(d(x, name) for x in warm) / len(warm)
        assert mean < 0.05, name


def test_volumes_are_learned_only_from_events_that_carry_them() -> None:
    # Mostly logons (no traffic), sometimes a ~1 MB API call.
    events = []
    for k in range(400):
        if k % 10:
            events.append(ev(MONDAY + k * 60_000, k, class_uid=3002, bytes_out=None, bytes_in=None))
        else:
            events.append(ev(MONDAY + k * 60_000, k))
    m, s, _ = learned(events)
    t = MONDAY + 500 * 60_000
    assert d(m.deviations(s, extract(ev(t, 1)))[0], "bytes_out") == 0.0
    assert d(m.deviations(s, extract(ev(t, 2, bytes_out=30 * MB)))[0], "bytes_out") > 0.8
    # An identity that never moved data has no volume baseline: no z-score from nothing.
    m2, s2, _ = learned(events[1:10])
    assert d(m2.deviations(s2, extract(ev(t, 3, bytes_out=30 * MB)))[0], "bytes_out") == 0.0


def test_first_seen_without_age_lists_what_is_known() -> None:
    events = [ev(MONDAY + 10 * HOUR + k * 60_000, k) for k in range(100)]  # one morning
    m, s, _ = learned(events)
    f = extract(ev(MONDAY + 12 * HOUR, 100, operation="crm.export"))
    dev, why = m.deviations(s, f)
    assert d(dev, "operation") > 0.95
    (c,) = [c for c in why if c.feature == "operation"]
    assert (
        c.text == "first use of operation `crm.export` (known: 1 operations, most used `crm.read`)"
    )
    assert (c.observed, c.baseline) == ("crm.export", "known: 1 operations, most used `crm.read`")


def test_first_seen_fades_with_repetition() -> None:
    events = office_worker(weeks=2)
    m, s, _ = learned(events)
    t = events[-1].time_ms
    scores = []
    for k in range(40):
        f = extract(ev(t + (k + 1) * 60_000, 10_000 + k, country="BR"))
        scores.append(d(m.deviations(s, f)[0], "country"))
        m.learn_one(s, f)
    assert scores[0] > 0.95
    assert scores[-1] < 0.05
    assert all(a >= b for a, b in itertools.pairwise(scores))  # monotone


def test_novelty_is_discounted_where_values_keep_changing() -> None:
    # An agent that reads a different object every time: a new resource is not news.
    events = [
        ev(MONDAY + k * 60_000, k, resources=(Resource(f"s3://bucket/{k}", "object", 2),))
        for k in range(300)
    ]
    m, s, _ = learned(events)
    f = extract(ev(MONDAY + 301 * 60_000, 301, resources=(Resource("s3://bucket/new", "o", 2),)))
    assert d(m.deviations(s, f)[0], "resource") < 0.01


def test_novelty_is_discounted_where_the_feature_is_usually_absent() -> None:
    events = [ev(MONDAY + k * 60_000, k) for k in range(300)]
    events += [ev(MONDAY + (300 + k) * 60_000, 300 + k, delegated_by="u-bob") for k in range(6)]
    m, s, _ = learned(events)
    f = extract(ev(MONDAY + 400 * 60_000, 400, delegated_by="u-eve"))
    usual_feature = extract(ev(MONDAY + 400 * 60_000, 400, country="BR"))
    assert d(m.deviations(s, f)[0], "delegator") < 0.5
    assert d(m.deviations(s, usual_feature)[0], "country") > 0.95


def test_burst_scores_a_request_rate_far_above_typical() -> None:
    # One event every ~10 minutes, then 60 events in one minute.
    events = [ev(MONDAY + k * 600_000, k) for k in range(300)]
    m, s, _ = learned(events)
    t = events[-1].time_ms + 600_000
    dev: list[float] = []
    why: list[Contribution] = []
    for k in range(60):
        f = extract(ev(t + k * 1000, 1000 + k))
        dev, why = m.deviations(s, f)
        m.learn_one(s, f)
    assert d(dev, "burst") > 0.75
    (c,) = [c for c in why if c.feature == "burst"]
    assert c.kind == "burst"
    assert c.text.endswith(" requests/min vs typical 1")
    assert 30 <= float(c.text.split()[0]) <= 60  # ~events in the last minute


def test_sensitivity_above_usual_maximum() -> None:
    events = [
        ev(MONDAY + k * 60_000, k, resources=(Resource(f"r{k % 3}", "doc", 2),)) for k in range(200)
    ]
    m, s, _ = learned(events)
    secret = extract(ev(MONDAY + 201 * 60_000, 201, resources=(Resource("r0", "doc", 3),)))
    usual = extract(ev(MONDAY + 201 * 60_000, 201, resources=(Resource("r0", "doc", 2),)))
    dev, why = m.deviations(s, secret)
    assert d(dev, "sensitivity") > 0.95
    assert d(m.deviations(s, usual)[0], "sensitivity") < 0.01
    (c,) = [c for c in why if c.feature == "sensitivity"]
    assert c.text == "sensitivity Secret above identity's usual maximum Confidential"


def test_failure_no_mfa_and_chain_outcomes() -> None:
    logons = [
        ev(MONDAY + k * 60_000, k, class_uid=3002, activity_id=1, is_mfa=True) for k in range(200)
    ]
    m, s, _ = learned(logons)
    t = MONDAY + 300 * 60_000
    no_mfa = m.deviations(s, extract(ev(t, 1, class_uid=3002, activity_id=1, is_mfa=False)))
    failed = m.deviations(s, extract(ev(t, 2, class_uid=3002, activity_id=1, status_id=2)))
    delegated = m.deviations(s, extract(ev(t, 3, delegated_by="u-x")))
    assert d(no_mfa[0], "no_mfa") > 0.95
    assert any(
        c.text == "logon without MFA — identity uses MFA on 100% of logons" for c in no_mfa[1]
    )
    assert d(failed[0], "failure") > 0.95
    assert d(delegated[0], "chain_depth") > 0.95
    # An identity that never uses MFA is not flagged for it.
    m2, s2, _ = learned(
        [ev(MONDAY + k * 60_000, k, class_uid=3002, activity_id=1, is_mfa=False) for k in range(50)]
    )
    no_mfa2 = m2.deviations(s2, extract(ev(t, 4, class_uid=3002, activity_id=1, is_mfa=False)))
    assert d(no_mfa2[0], "no_mfa") < 0.01


def test_weekend_activity_of_a_weekday_worker() -> None:
    events = office_worker()
    m, s, _ = learned(events)
    saturday_night = MONDAY + 5 * DAY + 23 * HOUR  # first Saturday of the stream's week
    dev, why = m.deviations(s, extract(ev(saturday_night + 28 * DAY, 1)))
    assert d(dev, "off_hours") > 0.8
    (c,) = [c for c in why if c.feature == "off_hours"]
    assert c.text == f"Sat 23:00 UTC — identity active mostly 09{DASH}17 UTC on weekdays"


# --- empty states, purity, robustness ---------------------------------------------------------


def test_empty_state_deviates_nowhere_and_is_well_defined() -> None:
    m = BaselineModel()
    f = extract(
        ev(MONDAY, bytes_out=2**63 - 1, country="BR", resources=(Resource("x", "o", 4),) * 30)
    )
    dev, why = m.deviations(m.new_state(), f)
    assert dev == [0.0] * len(DEVIATIONS)
    assert why == []


@pytest.mark.parametrize("n", [1, 2, 3, 10])
def test_young_states_give_finite_bounded_deviations(n: int) -> None:
    m = BaselineModel()
    s = m.new_state()
    for k in range(n):
        m.learn_one(s, extract(ev(MONDAY, k)))  # all in the same millisecond: zero variance
    for f in (
        extract(ev(MONDAY - DAY, 99, bytes_out=2**63 - 1, bytes_in=0)),  # out of order
        extract(ev(MONDAY, 99, country="BR", status_id=2, delegated_by="x")),
    ):
        dev, _ = m.deviations(s, f)
        assert all(0.0 <= x <= 1.0 and math.isfinite(x) for x in dev)


def test_deviations_do_not_change_the_state() -> None:
    m, s, _ = learned(office_worker(weeks=1))
    before = m.to_bytes(s)
    m.deviations(s, extract(ev(MONDAY + 30 * DAY, 1, country="BR", bytes_out=10**9)))
    assert m.to_bytes(s) == before


def test_out_of_order_events_do_not_move_time_back() -> None:
    m = BaselineModel()
    s = m.new_state()
    m.learn_one(s, extract(ev(MONDAY + HOUR, 1)))
    m.learn_one(s, extract(ev(MONDAY, 2)))
    assert s.last_ms == MONDAY + HOUR
    assert s.n == 2


def test_counts_halve_every_half_life() -> None:
    m = BaselineModel(half_life_events=100)
    s = m.new_state()
    for k in range(1000):
        m.learn_one(s, extract(ev(MONDAY + k * 60_000, k)))
    assert s.n == 1000
    assert s.recent == sum(s.hours) < 200
    assert max(s.slot_count) < 200
    assert max(s.present) < 200


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


# --- serialisation ----------------------------------------------------------------------------


def test_round_trip_is_exact_after_the_first_encoding() -> None:
    m, s, _ = learned(office_worker(weeks=2))
    blob = m.to_bytes(s)
    assert blob[0] == STATE_VERSION
    back = m.from_bytes(blob)
    assert m.to_bytes(back) == blob
    f = extract(ev(MONDAY + 30 * DAY + 3 * HOUR, 1, country="BR", bytes_out=20 * MB))
    d1, w1 = m.deviations(s, f)
    d2, w2 = m.deviations(back, f)
    assert d2 == pytest.approx(d1, abs=1e-4)
    assert [c.text for c in w1] == [c.text for c in w2]


def test_size_stays_under_1kb_with_many_distinct_long_values() -> None:
    m = BaselineModel()
    s = m.new_state()
    rng = random.Random(5)
    for k in range(5000):
        f = extract(
            ev(
                MONDAY + k * 37_000,
                k,
                country=rng.choice(["DE", "FR", "BR", "JP", "US", "IN", "CN", "ZA"]),
                asn=rng.randrange(2**32),
                src_ip=f"{rng.randrange(1, 223)}.{rng.randrange(256)}.{rng.randrange(256)}.1",
                service="ü" * rng.randrange(1, 100),
                operation=f"op-{k}-" + "x" * 200,
                resources=(Resource(f"s3://bucket/{'é' * 50}/{k}", "o", rng.choice([1, 3])),),
                delegated_by=f"user-{k}" * 10,
                model=None,
                environment=f"env-{k % 50}",
                auth_protocol=f"proto-{k % 9}",
                class_uid=rng.choice([3002, 6003]),
                is_mfa=rng.random() < 0.5,
            )
        )
        m.learn_one(s, f)
    size = len(m.to_bytes(s))
    # 12 categorical features (counterparty, combo), task / hour / drift aggregates and the
    # counterparty Bloom filter: the worst case grew past 1 KB; typical identities fill far
    # fewer slots.
    assert size <= m.max_bytes <= 1184
    assert size > 700  # the bound is meaningful: this state is nearly full
    assert m.to_bytes(m.from_bytes(m.to_bytes(s))) == m.to_bytes(s)


def test_foreign_bytes_raise_state_format_error() -> None:
    m, s, _ = learned(office_worker(weeks=1))
    blob = m.to_bytes(s)
    with pytest.raises(StateFormatError, match="version"):
        m.from_bytes(b"")
    with pytest.raises(StateFormatError, match="version 2"):
        m.from_bytes(bytes([2]) + blob[1:])
    with pytest.raises(StateFormatError, match="feature schema"):
        m.from_bytes(blob[:1] + bytes([99]) + blob[2:])
    with pytest.raises(StateFormatError):
        m.from_bytes(blob[:-3])
    with pytest.raises(StateFormatError, match="trailing"):
        m.from_bytes(blob + b"\x00")
    assert isinstance(StateFormatError("x"), ValueError)


def test_a_state_with_more_slots_keeps_its_most_used_values() -> None:
    big = BaselineModel(cat_slots=16)
    small = BaselineModel(cat_slots=4)
    events = [ev(MONDAY + k * 60_000, k, operation=f"op{k % 10}") for k in range(100)]
    events += [ev(MONDAY + (100 + k) * 60_000, 100 + k, operation="op3") for k in range(50)]
    _, s, _ = learned(events, big)
    s4 = small.from_bytes(big.to_bytes(s))
    values = small.known_values(s4, "operation")
    assert len(values) == 4
    assert values[0][1] == 60  # op3: 10 + 50
    assert s4.name_text[CATEGORICAL.index("operation")] == "op3"


# --- merge ------------------------------------------------------------------------------------


def test_merge_of_time_ordered_halves_matches_sequential_learning() -> None:
    events = office_worker(weeks=4)
    half = len(events) // 2
    m, whole, _ = learned(events)
    _, a, _ = learned(events[:half], m)
    _, b, _ = learned(events[half:], m)
    merged = m.merge(a, b)
    assert m.merge(b, a).mean == merged.mean  # order of the arguments does not matter
    assert merged.n == whole.n
    assert merged.mean == pytest.approx(whole.mean, rel=1e-9, abs=1e-12)
    assert merged.var == pytest.approx(whole.var, rel=1e-6, abs=1e-12)
    assert merged.rate_c == pytest.approx(whole.rate_c, rel=1e-9)
    for name in CATEGORICAL:
        assert {h for h, _, _ in m.known_values(merged, name)} == {
            h for h, _, _ in m.known_values(whole, name)
        }
    assert sum(merged.hours) == pytest.approx(sum(whole.hours), rel=0.02)
    f = extract(ev(MONDAY + 30 * DAY + 3 * HOUR, 1, country="BR", bytes_out=20 * MB))
    assert m.deviations(merged, f)[0] == pytest.approx(m.deviations(whole, f)[0], abs=0.02)


def test_merge_with_an_empty_state_copies_and_never_mutates() -> None:
    m, s, _ = learned(office_worker(weeks=1))
    before = m.to_bytes(s)
    copy = m.merge(m.new_state(), s)
    assert m.to_bytes(copy) == before
    m.learn_one(copy, extract(ev(MONDAY + 10 * DAY, 1)))
    assert m.to_bytes(s) == before
    m.merge(s, copy)
    assert m.to_bytes(s) == before


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
    assert blend([1.0, 0.0], [0.0, 1.0], 1.0) == [1.0, 0.0]
    assert blend([1.0, 0.0], [0.0, 1.0], 0.0) == [0.0, 1.0]
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


# --- tasks, hours, drift, sensitivity distance --------------------------------------------------


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


def test_bulk_through_usual_tools_within_one_task_is_a_task_deviation() -> None:
    """Each call is only a few times its usual size; the task as a whole is 30x its norm."""
    m, s = BaselineModel(), BaselineModel().new_state()
    t, i = MONDAY, 0
    for task in range(60):  # normal tasks: 3 calls of ~10 KB
        for _ in range(3):
            _observe_learn(m, s, _agent(t, i, f"t{task}", 10_000))
            t, i = t + 60_000, i + 1
    devs = []
    for _ in range(30):  # one task: 30 calls of 40 KB each (4x per call)
        f = extract(_agent(t, i, "bulk", 40_000))
        m.observe(s, f)
        devs.append(m.deviations(s, f)[0])
        t, i = t + 1000, i + 1
    assert devs[0][DEVIATION_INDEX["task_volume"]] < 0.5
    assert max(d[DEVIATION_INDEX["task_volume"]] for d in devs[:6]) > 0.9  # within its first calls
    assert max(d[DEVIATION_INDEX["bytes_in"]] for d in devs) < 0.99


def test_tainted_tasks_are_not_learned_and_two_tasks_may_interleave() -> None:
    m, s = BaselineModel(), BaselineModel().new_state()
    for j, task in enumerate(("a", "b", "a", "b", "c")):
        m.observe(s, extract(_agent(MONDAY + j, j, task, 1000)))
    assert s.agg[4] == 1.0  # a ended (2 calls): one completed task, b still running beside c
    m.taint(s)  # an event of c was held back: c must not teach its total
    for j, task in enumerate(("d", "e")):
        m.observe(s, extract(_agent(MONDAY + 10 + j, 10 + j, task, 1000)))
    assert s.agg[4] == pytest.approx(1.0 * 0.5 ** (1 / 100) + 1.0)  # b folded, c (tainted) not
    assert m.from_bytes(m.to_bytes(s)).agg == pytest.approx(s.agg)


def test_slow_drift_crosses_the_cusum_stationary_noise_does_not() -> None:
    rng = random.Random(4)

    def run(growth: float) -> float:
        m, s = BaselineModel(), BaselineModel().new_state()
        top = 0.0
        for k in range(4000):
            day = k / 300
            size = int(math.exp(rng.gauss(8, 0.7)) * (1 + growth) ** max(0.0, day - 1))
            d = _observe_learn(m, s, ev(MONDAY + k * 288_000, k, bytes_out=size))
            top = max(top, d[DEVIATION_INDEX["drift"]])
        return top

    assert run(0.0) == 0.0
    assert run(0.06) > 0.9


def test_sensitivity_far_above_the_usual_maximum_counts_more() -> None:
    m, s = BaselineModel(), BaselineModel().new_state()
    for k in range(300):
        m.learn_one(s, extract(ev(MONDAY + k * 60_000, k, resources=(Resource("r", "t", 6),))))

    def sens(cid: int) -> float:
        e = ev(MONDAY + DAY, 999, resources=(Resource("x", "t", cid),))
        return m.deviations(s, extract(e))[0][DEVIATION_INDEX["sensitivity"]]

    restricted, secret, top = sens(6), sens(3), sens(4)  # ranks 2 (usual), 3, 4
    assert restricted == 0.0 and 0.9 < secret < top
    assert -math.log(1 - top) - -math.log(1 - secret) == pytest.approx(1.5, abs=0.3)


def test_a_first_counterparty_stands_out_among_more_regulars_than_slots() -> None:
    """20 regular payees (more than the 6 slots remember) and then a new one."""
    m, s = BaselineModel(), BaselineModel().new_state()

    def pay(k: int, payee: str) -> Event:
        return ev(MONDAY + k * 600_000, k, activity_id=1, operation="send_money",
                  resources=(Resource(f"iban:{payee}", "bank_account", None),))  # fmt: skip

    for k in range(400):
        m.learn_one(s, extract(pay(k, f"REG{k % 20}")))
    cp = DEVIATION_INDEX["counterparty"]
    assert m.deviations(s, extract(pay(500, "REG7")))[0][cp] == 0.0
    dev, why = m.deviations(s, extract(pay(501, "ATTACKER")))
    assert dev[cp] > 0.5 and "first use of counterparty" in why[0].text
    # A Bloom filter: a few new payees may look known (false positives), most must not.
    flagged = [m.deviations(s, extract(pay(502 + j, f"NEW{j}")))[0][cp] > 0.5 for j in range(40)]
    assert sum(flagged) >= 34
    # An identity that pays someone new half the time: a new payee is nothing special.
    m2, s2 = BaselineModel(), BaselineModel().new_state()
    for k in range(400):
        m2.learn_one(s2, extract(pay(k, f"P{k // 2 if k % 2 else 0}")))
    assert m2.deviations(s2, extract(pay(501, "ATTACKER")))[0][cp] < 0.05
