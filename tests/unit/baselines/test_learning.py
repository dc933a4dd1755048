"""Unit tests for learning events into a baseline state (pipeline.baselines.learning)."""

from __future__ import annotations

import math
import random

import pytest
from river import stats

from pipeline.baselines.baselines import BaselineModel
from pipeline.baselines.features import NUMERIC_INDEX, extract
from tests.unit.baselines.test_baselines import (
    HOUR,
    MB,
    MONDAY,
    _agent,
    d,
    ev,
    learned,
)

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


# --- time and counts --------------------------------------------------------------------------


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


# --- tasks ------------------------------------------------------------------------------------


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
