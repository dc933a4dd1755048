"""Unit tests for merging baseline states (pipeline.baselines.merge)."""

from __future__ import annotations

import pytest

from pipeline.baselines.features import CATEGORICAL, extract
from tests.unit.baselines.test_baselines import (
    DAY,
    HOUR,
    MB,
    MONDAY,
    ev,
    learned,
    office_worker,
)

# --- merge ------------------------------------------------------------------------------------


def test_merge_of_time_ordered_halves_matches_sequential_learning() -> None:
    events = office_worker(weeks=4)
    half = len(events) // 2
    m, whole, _ = learned(events)
    _, a, _ = learned(events[:half], m)
    _, b, _ = learned(events[half:], m)
    merged = m.merge(a, b)
    assert list(m.merge(b, a).mean) == list(merged.mean)  # order of the arguments does not matter
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
