"""Unit tests for explanation text of deviations (pipeline.baselines.explain)."""

from __future__ import annotations

from pipeline.baselines.features import extract
from tests.unit.baselines.test_baselines import (
    DASH,
    DAY,
    HOUR,
    MONDAY,
    d,
    ev,
    learned,
    office_worker,
)

# --- explanation text -------------------------------------------------------------------------


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


def test_weekend_activity_of_a_weekday_worker() -> None:
    events = office_worker()
    m, s, _ = learned(events)
    saturday_night = MONDAY + 5 * DAY + 23 * HOUR  # first Saturday of the stream's week
    dev, why = m.deviations(s, extract(ev(saturday_night + 28 * DAY, 1)))
    assert d(dev, "off_hours") > 0.8
    (c,) = [c for c in why if c.feature == "off_hours"]
    assert c.text == f"Sat 23:00 UTC — identity active mostly 09{DASH}17 UTC on weekdays"
