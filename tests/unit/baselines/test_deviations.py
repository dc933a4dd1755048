"""Unit tests for deviations of an event from a baseline (pipeline.baselines.deviations)."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from pipeline.baselines.baselines import BaselineModel
from pipeline.baselines.features import extract
from pipeline.baselines.layout import DEVIATION_INDEX, DEVIATIONS
from pipeline.events.schemas import Event, Resource
from pipeline.scores.explanations import Contribution
from tests.unit.baselines.test_baselines import (
    DASH,
    DAY,
    HOUR,
    MB,
    MONDAY,
    _agent,
    _observe_learn,
    d,
    ev,
    learned,
    office_worker,
)

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


# --- empty states, purity, robustness ---------------------------------------------------------


def test_empty_state_deviates_nowhere_and_is_well_defined() -> None:
    m = BaselineModel()
    f = extract(
        ev(MONDAY, bytes_out=2**63 - 1, country="BR", resources=(Resource("x", "o", 4),) * 30)
    )
    dev, why = m.deviations(m.new_state(), f)
    assert dev.tolist() == [0.0] * len(DEVIATIONS)
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


# --- tasks, hours, drift, sensitivity distance ------------------------------------------------


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


def test_drift_is_judged_per_day_so_a_mix_of_sizes_neither_hides_nor_fakes_it() -> None:
    """A service mixing 2 KB and 2 MB calls (log sd ~2.8): a 5 %/day ramp of every call is lost
    in that spread event by event, not in its daily mean. A busy but stationary identity with
    a mix that shifts from day to day (+-3 % in its share of big calls) stays quiet."""
    rng = random.Random(9)

    def run(growth: float, big_share: float) -> tuple[float, str, list[int]]:
        m, s = BaselineModel(), BaselineModel().new_state()
        top, text, reported = 0.0, "", []
        for k in range(14 * 1500):  # 1,500 calls a day for 14 days
            day = k / 1500
            share = big_share * (1.0 + 0.03 * math.sin(day * 2.1))
            base = 2_000_000 if rng.random() < share else 2_000
            size = int(base * math.exp(rng.gauss(0, 0.3)) * (1 + growth) ** day)
            e = ev(MONDAY + k * 57_600, k, bytes_out=size)
            f = extract(e)
            m.observe(s, f)
            if m.drift_report(s) is not None:
                reported.append(int(day))
            dev, why = m.deviations(s, f)
            if dev[DEVIATION_INDEX["drift"]] > top:
                top = dev[DEVIATION_INDEX["drift"]]
                text = next((c.text for c in why if c.feature == "drift"), text)
            m.learn_one(s, f)
        return top, text, reported

    assert run(0.0, 0.2)[0::2] == (0.0, [])
    top, text, reported = run(0.05, 0.2)
    assert top > 0.9
    assert "day after day above its long-run typical" in text, text
    # Reported once per day that closed above the line, on that day's first event.
    assert reported and reported == sorted(set(reported)) and reported[-1] == 13


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
    assert dev[cp] > 0.5 and "first write to counterparty `iban:ATTACKER`" in why[0].text
    # A Bloom filter: a few new payees may look known (false positives), most must not.
    flagged = [m.deviations(s, extract(pay(502 + j, f"NEW{j}")))[0][cp] > 0.5 for j in range(40)]
    assert sum(flagged) >= 34
    # An identity that pays someone new half the time: a new payee is nothing special.
    m2, s2 = BaselineModel(), BaselineModel().new_state()
    for k in range(400):
        m2.learn_one(s2, extract(pay(k, f"P{k // 2 if k % 2 else 0}")))
    assert m2.deviations(s2, extract(pay(501, "ATTACKER")))[0][cp] < 0.05
