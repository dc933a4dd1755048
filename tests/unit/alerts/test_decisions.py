"""Unit tests for what the alerting policy emits (pipeline.alerts.decisions)."""

from __future__ import annotations

import msgspec

from pipeline.alerts.decisions import ACTIVITY_IDS, finding_uid, inventory_decision
from pipeline.alerts.state import STATUS_NEW
from pipeline.scores.explanations import RuleHit

HIT = RuleHit("model_inventory", 2, "first sighting of gpt-x 1")


def test_inventory_decision_is_one_informational_create_keyed_by_the_fact() -> None:
    d = inventory_decision(HIT, key="sha256:ab", identity_uid="agt-1", identity_kind="agent",
                           time_ms=5, event_uid="e-1")  # fmt: skip
    assert d.action == "create" and d.activity_id == ACTIVITY_IDS["create"]
    assert d.status_id == STATUS_NEW and not d.is_alert and not d.quarantine and not d.contain
    assert d.risk == d.peak_risk == 0.0 and d.rules == (HIT,) and d.related_events == ("e-1",)
    # The same fact seen first by another worker or identity gets the same finding.
    other = inventory_decision(HIT, key="sha256:ab", identity_uid="agt-2", identity_kind="agent",
                               time_ms=9, event_uid="e-7")  # fmt: skip
    assert d.finding_uid == other.finding_uid == finding_uid("inventory", "sha256:ab")


def test_flatten_puts_the_overdue_close_first() -> None:
    d = inventory_decision(HIT, key="k", identity_uid="a", identity_kind="agent", time_ms=5,
                           event_uid="e-1")  # fmt: skip
    closed = msgspec.structs.replace(d, action="close", activity_id=ACTIVITY_IDS["close"])
    assert d.flatten() == (d,)
    both = msgspec.structs.replace(d, closed=closed)
    assert [x.action for x in both.flatten()] == ["close", "create"]
