"""Unit tests for the risk and alerting policy (pipeline.alerts.policy)."""

from __future__ import annotations

import itertools
import math
import time
import uuid
from pathlib import Path

import msgspec
import pytest

from pipeline.alerts.decisions import Decision, finding_uid
from pipeline.alerts.policy import RiskPolicy
from pipeline.alerts.state import (
    STATUS_IN_PROGRESS,
    STATUS_NEW,
    STATUS_RESOLVED,
    STATUS_SUPPRESSED,
    RiskState,
    Suppression,
)
from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.scores.explanations import Contribution, RuleHit, Score

T0 = 1_760_000_000_000
S = 1000  # ms per second
H = 3600 * S


def contrib(feature: str, weight: float = 0.8, kind: str = "zscore") -> Contribution:
    return Contribution(
        feature, kind, weight, "48.0 MB", "typical 1.2 MB ± 0.4 MB", f"{feature} 48.0 MB vs 1.2 MB"
    )


def score(
    t: int,
    s: float,
    *,
    uid: str = "alice",
    event: str | None = None,
    kind: str = "human",
    contributions: tuple[Contribution, ...] = (),
    rules: tuple[RuleHit, ...] = (),
    rationale: str | None = None,
) -> Score:
    return Score(
        event or f"e-{uid}-{t}",
        uid,
        kind,
        t,
        s,
        s * 3,
        contributions=contributions,
        rules=rules,
        rationale=rationale,
    )


CRITICAL = RuleHit("credential_misuse", 5, "credential issued to bob used by alice", {"to": "bob"})
HIGH = RuleHit("impossible_travel", 4, "DE -> JP in 20 min (9000 km)", {"km": 9000})


# --- Risk arithmetic ---------------------------------------------------------------------------


def test_score_above_floor_adds_gain_scaled_linearly() -> None:
    p = RiskPolicy()  # floor 0.6, gain 30
    st = RiskState()
    assert p.decide(st, score(T0, 0.8)) is None
    assert st.risk == pytest.approx(15.0)  # 30 * (0.8 - 0.6) / 0.4
    assert st.incident is not None and st.incident.status_id == 0  # candidate, no alert


def test_the_same_anomaly_repeated_counts_less_than_a_different_one() -> None:
    p = RiskPolicy(repeat_weight=0.25)  # floor 0.6, gain 30: a 1.0 score adds 30
    same, other = RiskState(), RiskState()
    net = (contrib("asn", 0.9), contrib("ip_prefix", 0.9))
    p.decide(same, score(T0, 1.0, contributions=net))
    p.decide(other, score(T0, 1.0, contributions=net))
    p.decide(same, score(T0, 1.0, contributions=net))  # the same new network again
    p.decide(other, score(T0, 1.0, contributions=(contrib("bytes_out", 0.9),)))
    assert same.risk == pytest.approx(30.0 + 0.25 * 30.0)
    assert other.risk == pytest.approx(60.0)
    # Half the weight on a known feature: half the discount.
    mixed = RiskState()
    p.decide(mixed, score(T0, 1.0, contributions=(contrib("asn", 0.9),)))
    p.decide(mixed, score(T0, 1.0, contributions=(contrib("asn", 0.5), contrib("failure", 0.5))))
    assert mixed.risk == pytest.approx(30.0 + 30.0 * (0.5 + 0.25 * 0.5))
    # The constructor default keeps plain accumulation.
    plain = RiskState()
    for _ in range(2):
        RiskPolicy().decide(plain, score(T0, 1.0, contributions=net))
    assert plain.risk == pytest.approx(60.0)


def test_decisions_carry_the_credentials_seen_in_the_evidence_bounded() -> None:
    p = RiskPolicy(max_credentials=3)
    st = RiskState()
    d = None
    for i in range(5):
        s = msgspec.structs.replace(score(T0 + i * S, 0.1, rules=(CRITICAL,)),
                                    credential_uid=f"cred-{i % 4}")  # fmt: skip
        d = p.decide(st, s) or d
    assert d is not None and d.quarantine and d.credentials == ("cred-0",)  # the create
    assert st.incident is not None
    assert st.incident.credentials == ["cred-2", "cred-3", "cred-0"]  # most recent last, bounded
    later = p.tick(st, T0 + 1900 * S)  # the held-back update carries them
    assert later is not None and later.credentials == ("cred-2", "cred-3", "cred-0")
    assert RiskState.from_bytes(st.to_bytes()) == st


def test_one_contain_per_incident_renewed_only_before_it_lapses_while_evidence_continues() -> None:
    p = RiskPolicy(update_interval_s=1800, quarantine_duration_s=3600, contain_renew_s=300,
                   half_life_s=3600, close_after_s=3600)  # fmt: skip
    st = RiskState()
    first = p.decide(st, score(T0, 0.1, rules=(CRITICAL,)))
    assert first is not None and first.action == "create" and first.contain
    # Re-detections inside the open quarantine are evidence, not commands (nor updates).
    for i in range(1, 40):
        d = p.decide(st, score(T0 + i * 60 * S, 0.1, rules=(CRITICAL,)))
        assert d is None or not d.contain, i
    assert p.due_ms(st) == T0 + 3300 * S  # renewal time: the cause is still there
    renew = p.tick(st, T0 + 3300 * S)
    assert renew is not None and renew.contain and renew.reason.startswith("quarantine renewed")
    # No evidence after the renewal: it is not renewed again, it lapses.
    assert st.incident is not None
    assert p.tick(st, T0 + 6600 * S) is None or not p.tick(st, T0 + 6600 * S).contain  # type: ignore[union-attr]


def test_released_incident_sends_no_contain_until_a_new_kind_of_rule() -> None:
    p = RiskPolicy(quarantine_duration_s=3600)
    st = RiskState()
    assert p.decide(st, score(T0, 0.1, rules=(CRITICAL,))).contain  # type: ignore[union-attr]
    p.release(st)
    for i in range(1, 10):
        d = p.decide(st, score(T0 + i * 600 * S, 0.1, rules=(CRITICAL,)))
        assert d is None or not d.contain
    other = RuleHit("clone", 5, "agent active outside its home environment")
    d = p.decide(st, score(T0 + 6000 * S, 0.1, rules=(other,)))
    assert d is not None and d.contain and "new rule clone" in d.reason


def test_noise_below_floor_adds_nothing_and_leaves_state_untouched() -> None:
    p = RiskPolicy()
    st = RiskState()
    before = st.to_bytes()
    for i in range(100):
        assert p.decide(st, score(T0 + i * S, 0.599, contributions=(contrib("x"),))) is None
    assert st.to_bytes() == before and st.rev == 0 and st.incident is None
    p.decide(st, score(T0, 0.6))  # exactly the floor: adds 0
    assert st.risk == 0.0 and st.incident is None


def test_risk_decays_with_the_configured_half_life_in_event_time() -> None:
    p = RiskPolicy(half_life_s=600)
    st = RiskState()
    p.decide(st, score(T0, 1.0))
    assert st.risk == 30.0
    assert p.risk_at(st, T0 + 600 * S) == 15.0
    assert p.risk_at(st, T0 + 1200 * S) == 7.5
    assert p.risk_at(st, T0 + 300 * S) == pytest.approx(30.0 / 2**0.5)
    assert p.risk_at(st, T0 - 600 * S) == 30.0  # never grows backwards
    p.decide(st, score(T0 + 600 * S, 1.0))
    assert st.risk == 45.0 and st.updated_ms == T0 + 600 * S


def test_out_of_order_event_adds_without_decaying_backwards() -> None:
    p = RiskPolicy()
    st = RiskState()
    p.decide(st, score(T0 + H, 0.8))
    p.decide(st, score(T0, 0.8))  # late event: added at the current time, no "undecay"
    assert st.risk == pytest.approx(30.0) and st.updated_ms == T0 + H
    assert st.incident is not None and st.incident.first_seen_ms == T0


def test_risk_is_capped_and_levels_map_to_ocsf() -> None:
    p = RiskPolicy()
    st = RiskState()
    for i in range(10):
        p.decide(st, score(T0 + i, 1.0))
    assert st.risk == 100.0
    assert [p.level_of(r) for r in (0, 19.9, 20, 39.9, 40, 60, 79.9, 80, 100)] == [
        0, 0, 1, 1, 2, 3, 3, 4, 4,
    ]  # fmt: skip
    assert [p.severity_of(r) for r in (0, 20, 40, 60, 80)] == [1, 2, 3, 4, 5]


# --- Alerts -------------------------------------------------------------------------------------


def test_two_strong_anomalies_alert_one_does_not() -> None:
    p = RiskPolicy()
    st = RiskState()
    assert p.decide(st, score(T0, 0.95, contributions=(contrib("bytes_out"),))) is None
    d = p.decide(st, score(T0 + 60 * S, 0.95, contributions=(contrib("country"),)))
    assert d is not None and d.action == "create" and d.activity_id == 1
    assert d.status_id == STATUS_NEW and d.is_alert and not d.quarantine
    assert d.risk_level_id == 2 and d.severity_id == 3
    # The lead-up event is part of the incident, and anchors its uid.
    assert d.related_events == (f"e-alice-{T0}", f"e-alice-{T0 + 60 * S}")
    assert d.finding_uid == finding_uid("alice", f"e-alice-{T0}")
    assert {c.feature for c in d.contributions} == {"bytes_out", "country"}


def test_critical_rule_alerts_immediately_and_is_quarantine_worthy() -> None:
    p = RiskPolicy()
    st = RiskState()
    d = p.decide(st, score(T0, 0.1, rules=(CRITICAL,)))
    assert d is not None and d.action == "create" and d.quarantine
    assert d.risk_level_id == 4 and d.severity_id == 5 and d.confidence == 1.0
    assert d.rules == (CRITICAL,) and d.contributions == ()
    # Even if rule_risk says 0, a Critical rule lifts risk to the quarantine threshold.
    p0 = RiskPolicy(rule_risk={5: 0.0})
    d0 = p0.decide(RiskState(), score(T0, 0.1, rules=(CRITICAL,)))
    assert d0 is not None and d0.action == "create" and d0.quarantine and d0.risk == 80.0


def test_high_rule_alone_does_not_alert_but_corroborated_does() -> None:
    p = RiskPolicy()
    st = RiskState()
    assert p.decide(st, score(T0, 0.1, rules=(HIGH,))) is None
    assert st.risk == 30.0
    d = p.decide(st, score(T0 + S, 0.8, contributions=(contrib("asn"),)))
    assert d is not None and d.action == "create" and not d.quarantine
    assert d.severity_id == 4  # the rule's fixed severity wins over the Medium risk level


def test_repeated_anomalies_give_one_create_then_rate_limited_updates() -> None:
    p = RiskPolicy(update_interval_s=300)
    st = RiskState()
    decisions: list[Decision] = []
    for i in range(360):  # one strongly anomalous event every 10 s for an hour
        d = p.decide(st, score(T0 + i * 10 * S, 0.7, contributions=(contrib("rate"),)))
        if d is not None:
            decisions.append(d)
    actions = [d.action for d in decisions]
    assert actions[0] == "create" and actions.count("create") == 1
    assert set(actions[1:]) == {"update"}
    assert len({d.finding_uid for d in decisions}) == 1
    # Level rises (Medium -> High -> Critical) bypass the limit; otherwise 300 s, then 600,
    # 1200, ... after each periodic update (an incident that goes on is not news each time).
    assert len(decisions) <= 1 + 3 + 3600 // 300
    gaps = [d.time_ms - prev.time_ms for prev, d in itertools.pairwise(decisions)
            if d.reason.startswith("new evidence")]  # fmt: skip
    assert len(gaps) == 3  # at 300, 600 and 1200 s after the previous one within the hour
    assert all(g >= 300 * S * 2**k for k, g in enumerate(gaps))
    assert [d.status_id for d in decisions[:2]] == [STATUS_NEW, STATUS_IN_PROGRESS]
    assert decisions[-1].counters.updates == len(decisions) - 1
    assert len(decisions[-1].related_events) == 20  # bounded
    assert decisions[-1].related_events[0] == f"e-alice-{T0}"  # the first is kept


def test_new_rule_bypasses_rate_limit_and_held_update_is_flushed_by_tick() -> None:
    p = RiskPolicy(update_interval_s=300)
    st = RiskState()
    assert p.decide(st, score(T0, 0.1, rules=(CRITICAL,))) is not None
    # The first behavioural evidence on a rule-only incident is a new kind: an update.
    d = p.decide(st, score(T0 + S // 2, 0.9, contributions=(contrib("bytes_out"),)))
    assert d is not None and d.reason == "new evidence: bytes_out"
    # More behaviour, same level (Critical), within the interval: held back.
    assert p.decide(st, score(T0 + S, 0.9, contributions=(contrib("asn"),))) is None
    d = p.decide(st, score(T0 + 2 * S, 0.1, rules=(HIGH,)))
    assert d is not None and d.action == "update" and "impossible_travel" in d.reason
    assert p.decide(st, score(T0 + 3 * S, 0.9, contributions=(contrib("country"),))) is None
    assert st.incident is not None and st.incident.pending
    assert p.due_ms(st) == T0 + 2 * S + 300 * S
    assert p.tick(st, T0 + 200 * S) is None
    flushed = p.tick(st, T0 + 302 * S)
    assert flushed is not None and flushed.action == "update"
    assert "country" in {c.feature for c in flushed.contributions}
    assert p.tick(st, T0 + 700 * S) is None  # nothing new: no more updates


def test_quiet_incident_closes_then_next_alert_gets_a_new_uid() -> None:
    p = RiskPolicy(half_life_s=600, close_after_s=1800)
    st = RiskState()
    first = p.decide(st, score(T0, 0.1, rules=(CRITICAL,)))
    assert first is not None
    # risk 100 falls below 10 after log2(10) half-lives, then 1800 s of quiet close it.
    due = T0 + math.ceil(600 * S * math.log2(100 / 10)) + 1800 * S
    assert p.due_ms(st) == due
    assert p.tick(st, due - 1) is None
    closed = p.tick(st, due)
    assert closed is not None and closed.action == "close" and closed.activity_id == 3
    assert closed.status_id == STATUS_RESOLVED and closed.finding_uid == first.finding_uid
    assert closed.risk < 10 and closed.peak_risk == 100.0 and closed.risk_level_id == 4
    assert st.incident is None and p.tick(st, due + H) is None
    again = p.decide(st, score(due + H, 0.1, rules=(CRITICAL,)))
    assert again is not None and again.action == "create"
    assert again.finding_uid != first.finding_uid


def test_quiet_period_restarts_when_risk_climbs_back() -> None:
    p = RiskPolicy(half_life_s=600, close_after_s=1800)
    st = RiskState()
    assert p.decide(st, score(T0, 0.1, rules=(CRITICAL,))) is not None
    due = p.due_ms(st)
    assert due is not None
    p.decide(st, score(due - 60 * S, 0.1, rules=(HIGH,)))  # +30 risk: quiet again later
    assert p.tick(st, due + 1) is None and st.incident is not None


def test_overdue_incident_is_closed_by_the_next_event_when_no_tick_ran() -> None:
    p = RiskPolicy()
    st = RiskState()
    first = p.decide(st, score(T0, 0.1, rules=(CRITICAL,)))
    assert first is not None
    later = T0 + 48 * H
    # A quiet event closes it...
    d = p.decide(st, score(later, 0.1))
    assert d is not None and d.action == "close" and d.finding_uid == first.finding_uid
    # ...and an alerting one closes it and opens the next, in that order.
    st2 = RiskState()
    p.decide(st2, score(T0, 0.1, rules=(CRITICAL,)))
    d2 = p.decide(st2, score(later, 0.1, rules=(CRITICAL,)))
    assert d2 is not None and d2.action == "create" and d2.closed is not None
    assert [x.action for x in d2.flatten()] == ["close", "create"]
    assert d2.closed.finding_uid == first.finding_uid != d2.finding_uid


def test_candidate_that_never_alerts_is_dropped_silently() -> None:
    p = RiskPolicy(close_after_s=60)
    st = RiskState()
    p.decide(st, score(T0, 0.8))  # 15 risk: candidate
    assert st.incident is not None
    rev = st.rev
    assert p.tick(st, T0 + 10 * H) is None
    assert st.incident is None and st.rev > rev


def test_contributions_deduplicated_by_feature_and_bounded() -> None:
    p = RiskPolicy(max_contributions=3)
    st = RiskState()
    p.decide(st, score(T0, 0.9, contributions=(contrib("a", 0.5), contrib("b", 0.4))))
    p.decide(st, score(T0 + 1, 0.9, contributions=(contrib("a", 0.9), contrib("c", 0.3))))
    p.decide(st, score(T0 + 2, 0.9, contributions=(contrib("d", 0.8), contrib("a", 0.1))))
    assert st.incident is not None
    assert [(c.feature, c.weight) for c in st.incident.contributions] == [
        ("a", 0.9),
        ("d", 0.8),
        ("b", 0.4),
    ]


def test_rationales_are_kept_bounded_and_truncated() -> None:
    p = RiskPolicy(max_rationales=2, max_rationale_chars=10)
    st = RiskState()
    for i, why in enumerate(["fetch report", "fetch report", "summarise", "x" * 50]):
        p.decide(st, score(T0 + i, 0.9, kind="agent", rationale=why))
    assert st.incident is not None
    assert st.incident.rationales == ["summarise", "x" * 10]


def test_rules_deduplicated_by_name_with_latest_evidence() -> None:
    p = RiskPolicy()
    st = RiskState()
    p.decide(st, score(T0, 0.1, rules=(HIGH,)))
    newer = RuleHit("impossible_travel", 4, "DE -> BR in 10 min", {"km": 10000})
    p.decide(st, score(T0 + 1, 0.1, rules=(newer,)))
    assert st.incident is not None and st.incident.rules == [newer]
    assert st.incident.counters.rule_hits == 2


# --- Suppression ------------------------------------------------------------------------------


def test_identity_suppression_emits_suppressed_findings_not_alerts() -> None:
    sup = Suppression(identity="alice", reason="red team exercise")
    p = RiskPolicy(suppressions=[sup])
    st = RiskState()
    d = p.decide(st, score(T0, 0.1, rules=(CRITICAL,)))
    assert d is not None and d.action == "create"
    assert d.status_id == STATUS_SUPPRESSED and not d.is_alert and not d.quarantine
    assert d.suppressed_by == "red team exercise" and d.risk == 100.0  # risk still tracked
    # Other identities are unaffected.
    other = p.decide(RiskState(), score(T0, 0.1, uid="bob", rules=(CRITICAL,)))
    assert other is not None and other.is_alert and other.quarantine


def test_identity_suppression_expiry_turns_the_finding_into_an_alert() -> None:
    sup = Suppression(identity="alice", until_ms=T0 + 60 * S)
    p = RiskPolicy(suppressions=[sup])
    st = RiskState()
    d = p.decide(st, score(T0, 0.1, rules=(CRITICAL,)))
    assert d is not None and d.status_id == STATUS_SUPPRESSED
    assert p.tick(st, T0 + 59 * S) is None
    u = p.tick(st, T0 + 60 * S)
    assert u is not None and u.action == "update" and u.reason == "suppression ended"
    assert u.status_id == STATUS_IN_PROGRESS and u.is_alert and u.quarantine


def test_feature_suppression_removes_that_contributions_risk() -> None:
    p = RiskPolicy(suppressions=[Suppression(identity="alice", feature="bytes_out")])
    st = RiskState()
    assert p.decide(st, score(T0, 1.0, contributions=(contrib("bytes_out"),))) is None
    assert st.risk == 0.0 and st.incident is None
    # Partly suppressed: only the unsuppressed share of the weight counts.
    both = (contrib("bytes_out", 0.6), contrib("country", 0.2))
    p.decide(st, score(T0 + S, 1.0, contributions=both))
    assert st.risk == pytest.approx(30.0 * 0.25)
    assert st.incident is not None
    assert [c.feature for c in st.incident.contributions] == ["country"]
    assert st.incident.counters.suppressed == 1
    # Bob is not covered by Alice's suppression.
    bob = RiskState()
    p.decide(bob, score(T0, 1.0, uid="bob", contributions=(contrib("bytes_out"),)))
    assert bob.risk == 30.0


def test_global_feature_suppression_and_rule_suppression_with_expiry() -> None:
    p = RiskPolicy(
        suppressions=[
            Suppression(feature="off_hours"),
            Suppression(feature="credential_misuse", until_ms=T0 + H),
        ]
    )
    st = RiskState()
    assert p.decide(st, score(T0, 1.0, contributions=(contrib("off_hours"),))) is None
    assert p.decide(st, score(T0 + 1, 0.1, rules=(CRITICAL,))) is None
    assert st.risk == 0.0
    d = p.decide(st, score(T0 + H, 0.1, rules=(CRITICAL,)))  # expired: alerts again
    assert d is not None and d.action == "create" and d.quarantine


# --- Configuration ----------------------------------------------------------------------------


def test_from_settings_reads_every_policy_setting_but_no_file(
    tmp_path: Path,
) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("- {identity: svc-backup}\n")
    env = {
        "CUSTOS_RISK_HALF_LIFE_S": "120",
        "CUSTOS_RISK_NOISE_FLOOR": "0.7",
        "CUSTOS_RISK_GAIN": "20",
        "CUSTOS_RISK_REPEAT_WEIGHT": "0.5",
        "CUSTOS_RISK_RULE_HIGH": "35",
        "CUSTOS_RISK_ALERT_THRESHOLD": "50",
        "CUSTOS_RISK_QUARANTINE_THRESHOLD": "90",
        "CUSTOS_RISK_CLOSE_THRESHOLD": "5",
        "CUSTOS_INCIDENT_CLOSE_AFTER_S": "600",
        "CUSTOS_FINDING_UPDATE_INTERVAL_S": "60",
        "CUSTOS_SUPPRESSIONS_FILE": str(f),
    }
    extra = Suppression(feature="off_hours")
    p = RiskPolicy.from_settings(Settings.from_env(env), suppressions=[extra])
    assert (p.half_life_s, p.noise_floor, p.gain, p.repeat_weight) == (120.0, 0.7, 20.0, 0.5)
    assert p.rule_risk == {3: 10.0, 4: 35.0, 5: 100.0}
    assert (p.alert_threshold, p.quarantine_threshold, p.close_threshold) == (50.0, 90.0, 5.0)
    assert (p.close_after_s, p.update_interval_s) == (600.0, 60.0)
    # The file is Detection.from_settings's to read (tests/unit/test_detection.py).
    assert p.suppressions == (extra,)
    d = RiskPolicy.from_settings(Settings())
    # The deployed default (Settings) is tuned with `custos evaluate`; see config.py.
    assert (d.half_life_s, d.noise_floor, d.alert_threshold, d.quarantine_threshold) == (
        3600.0,
        0.75,
        40.0,
        80.0,
    )
    assert d.suppressions == ()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"half_life_s": 0},
        {"noise_floor": 1.0},
        {"gain": -1},
        {"repeat_weight": 1.5},
        {"close_threshold": 50},
        {"alert_threshold": 90, "quarantine_threshold": 80},
        {"level_thresholds": (40, 20, 60, 80)},
        {"max_events": 1},
        {"max_rationales": 0},
        {"rule_risk": {5: -1}},
    ],
)
def test_invalid_hyperparameters_raise_config_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        RiskPolicy(**kwargs)  # type: ignore[arg-type]


# --- State ------------------------------------------------------------------------------------


def _full_state(p: RiskPolicy) -> RiskState:
    st = RiskState()
    cs = tuple(contrib(f"feature_{i}", 0.9 - i / 20) for i in range(8))
    for i in range(40):
        p.decide(
            st,
            score(
                T0 + i * S,
                0.95,
                kind="agent",
                uid="agent-" + "7" * 30,
                event=str(uuid.uuid4()),
                contributions=cs,
                rules=(CRITICAL, HIGH) if i % 2 else (),
                rationale=f"step {i}: " + "because " * 40,
            ),
        )
    return st


def test_state_round_trips_and_stays_small() -> None:
    p = RiskPolicy()
    idle = RiskState(risk=12.5, updated_ms=T0, rev=3)
    assert RiskState.from_bytes(idle.to_bytes()) == idle and len(idle.to_bytes()) <= 32
    # A typical open incident: a few events with UUID ids, three contributions.
    st = RiskState()
    cs = (contrib("bytes_out", 0.9), contrib("country", 0.7), contrib("asn", 0.5))
    for i in range(3):
        p.decide(st, score(T0 + i * S, 0.95, event=str(uuid.uuid4()), contributions=cs))
    assert st.incident is not None and st.incident.status_id != 0
    assert RiskState.from_bytes(st.to_bytes()) == st
    assert len(st.to_bytes()) <= 700
    # Everything at its bound: still a couple of KB at most.
    full = _full_state(p)
    assert full.incident is not None
    assert len(full.incident.events) == 20 and len(full.incident.contributions) == 5
    assert RiskState.from_bytes(full.to_bytes()) == full
    assert len(full.to_bytes()) <= 3000


def test_decoded_state_keeps_working() -> None:
    p = RiskPolicy()
    st = RiskState()
    p.decide(st, score(T0, 0.1, rules=(CRITICAL,)))
    st = RiskState.from_bytes(st.to_bytes())
    d = p.decide(st, score(T0 + 400 * S, 0.1, rules=(HIGH,)))
    assert d is not None and d.action == "update"


def test_rev_changes_only_when_state_changes() -> None:
    p = RiskPolicy()
    st = RiskState()
    p.decide(st, score(T0, 0.2))
    assert st.rev == 0
    p.decide(st, score(T0, 0.9))
    assert st.rev > 0


def test_noop_decide_is_fast() -> None:
    p = RiskPolicy(suppressions=[Suppression(identity="zed")])
    st = RiskState(risk=3.0, updated_ms=T0)
    sc = score(T0, 0.3, contributions=(contrib("a"),))
    n = 20_000
    start = time.perf_counter()
    for _ in range(n):
        p.decide(st, sc)
    per_call_us = (time.perf_counter() - start) / n * 1e6
    assert per_call_us < 5.0  # measured ~0.06 us; generous for slow CI machines


def test_an_incident_open_a_day_unconfirmed_habituates_and_its_evidence_is_learned() -> None:
    """The same anomaly for days without an analyst is a baseline that failed to learn."""
    p = RiskPolicy(habituate_after_s=86_400, habituate_suppress_s=7 * 86_400, repeat_weight=0.25)
    st = RiskState()
    sens = contrib("sensitivity", 0.95)
    decisions = []
    t = T0
    while t < T0 + 3 * 86_400 * S:  # hourly, the same cause
        d = p.decide(st, score(t, 0.95, contributions=(sens,), rules=(HIGH,)))
        decisions += list(d.flatten()) if d is not None else []
        t += H
    closes = [d for d in decisions if d.action == "close"]
    assert closes and closes[0].habituated and "habituated" in closes[0].reason
    assert closes[0].time_ms <= T0 + 86_400 * S + H
    updates = [d for d in decisions if d.action == "update"]
    assert len([d for d in decisions if d.action == "create"]) == 1  # no new incident after
    assert len(updates) <= 50  # 30-min cap over one day, at most
    assert not any(d.contain for d in decisions)  # High rule + behaviour: never contained
    # The suppressions are recorded on the identity and let the same anomaly be learned.
    assert {s.feature for s in st.suppressions} == {"sensitivity", "impossible_travel"}
    later = score(t, 0.95, contributions=(sens,))
    assert p.habituated(st, later) and p.decide(st, later) is None
    assert not p.habituated(st, score(t, 0.95, contributions=(contrib("country"),)))


def test_critical_and_confirmed_incidents_never_habituate() -> None:
    p = RiskPolicy(habituate_after_s=3600)
    st = RiskState()
    p.decide(st, score(T0, 0.1, rules=(CRITICAL,)))
    for i in range(1, 6):
        d = p.decide(st, score(T0 + i * H, 0.1, rules=(CRITICAL,)))
        assert d is None or not d.habituated
    st2 = RiskState()
    p.decide(st2, score(T0, 0.95, contributions=(contrib("bytes_out"),), rules=(HIGH,)))
    p.confirm(st2, T0 + S, "confirmed by alice")
    for i in range(1, 6):
        d = p.decide(st2, score(T0 + i * H, 0.95, contributions=(contrib("bytes_out"),)))
        assert d is None or not d.habituated
    assert st.incident is not None and st2.incident is not None


def test_renewals_double_the_quarantine_so_days_of_evidence_cost_few_commands() -> None:
    p = RiskPolicy(quarantine_duration_s=3600, contain_renew_s=300)
    st = RiskState()
    contains = []
    for i in range(48 * 6):  # a Critical rule every 10 minutes for two days
        d = p.decide(st, score(T0 + i * 600 * S, 0.1, rules=(CRITICAL,)))
        t = p.tick(st, T0 + i * 600 * S + 300 * S)
        contains += [x for x in (d, t) if x is not None and x.contain]
    durations = [c.contain_duration_ms // (3600 * S) for c in contains]
    assert durations[:4] == [1, 2, 4, 8] and len(contains) <= 6
    # Each renewal comes shortly before the previous command lapses.
    for prev, nxt in itertools.pairwise(contains):
        assert nxt.time_ms <= prev.time_ms + prev.contain_duration_ms
    from pipeline.quarantine.policy import QuarantinePolicy

    [cmd] = QuarantinePolicy(duration_ms=3_600_000).commands([contains[1]], now_ms=T0)
    assert cmd.message["body"]["openc2"]["request"]["args"]["duration"] == 2 * 3_600_000


def test_an_unconfirmed_incident_costs_two_contains_at_most_the_second_until_it_habituates(
) -> None:
    p = RiskPolicy(quarantine_duration_s=3600, contain_renew_s=300, habituate_after_s=86_400)
    st = RiskState()
    contains, closes = [], []
    for i in range(30 * 6):  # strong behavioural evidence every 10 minutes for 30 hours
        t = T0 + i * 600 * S
        d = p.decide(st, score(t, 0.99, contributions=(contrib("bytes_out"), contrib("hour"))))
        k = p.tick(st, t + 300 * S)
        for x in (d, k):
            for y in x.flatten() if x is not None else ():
                contains += [y] if y.contain else []
                closes += [y] if y.action == "close" else []
    assert len(contains) == 2, [c.reason for c in contains]
    first, second = contains
    assert first.contain_duration_ms == 3600 * S
    # The renewal covers the rest of the incident's unconfirmed life, not one more hour...
    habituates_at = first.first_seen_ms + 86_400 * S
    assert second.time_ms + second.contain_duration_ms == habituates_at
    # ...and the incident does close as habituated when that life ends.
    assert any(c.habituated for c in closes)


def _night(p: RiskPolicy, st: RiskState, day: int, *features: str) -> list[Decision]:
    """A nightly job: strong anomalies in ``features`` for ten minutes at 02:00, then quiet."""
    out: list[Decision] = []
    t0 = T0 + day * 24 * H + 2 * H
    for i in range(10):
        d = p.decide(st, score(t0 + i * 60 * S, 0.99,
                               contributions=tuple(contrib(f) for f in features)))  # fmt: skip
        out += d.flatten() if d is not None else ()
    d = p.tick(st, t0 + 12 * H)  # quiet by the morning
    out += d.flatten() if d is not None else ()
    return out


def test_the_same_evidence_recurring_after_an_unconfirmed_incident_is_learned_not_alerted() -> None:
    p = RiskPolicy(recur_window_s=8 * 86_400, habituate_suppress_s=7 * 86_400)
    st = RiskState()
    first = _night(p, st, 0, "hour_volume", "failure")
    assert [d.action for d in first if d.action == "create"] == ["create"] and first[0].is_alert
    assert first[-1].action == "close"
    assert st.incident is None and set(st.recurring) == {"hour_volume", "failure"}
    # The next night: the same evidence again. A suppressed finding that closes at once as
    # habituated - visible, never an alert, never a quarantine.
    again = _night(p, st, 1, "hour_volume")
    assert [d.action for d in again] == ["create", "close"]
    assert not any(d.is_alert or d.quarantine or d.contain for d in again)
    assert again[0].status_id == STATUS_SUPPRESSED and again[1].habituated
    assert "recurring" in again[0].reason and "closed unconfirmed 12 h ago" in again[0].reason
    # Its features are now habituated: events anomalous only there are learned.
    later = score(T0 + 3 * 24 * H, 0.99, contributions=(contrib("hour_volume"),))
    assert p.habituated(st, later)
    assert p.decide(st, later) is None
    assert RiskState.from_bytes(st.to_bytes()) == st


def test_a_recurrence_with_new_evidence_or_a_critical_rule_or_after_confirmation_alerts() -> None:
    p = RiskPolicy(recur_window_s=8 * 86_400)
    st = RiskState()
    _night(p, st, 0, "hour_volume")
    # A new kind of evidence joins: that is news.
    assert any(d.is_alert and d.action == "create" for d in _night(p, st, 1, "hour_volume",
                                                                    "country"))  # fmt: skip
    # A Critical rule always alerts, whatever recurred before.
    st2 = RiskState()
    _night(p, st2, 0, "hour_volume")
    d = p.decide(st2, score(T0 + 30 * H, 0.99, contributions=(contrib("hour_volume"),),
                            rules=(CRITICAL,)))  # fmt: skip
    assert d is not None and d.is_alert and d.action == "create" and d.quarantine
    # Confirmed by an analyst: the same evidence again is the attack again.
    st3 = RiskState()
    p.decide(st3, score(T0, 0.99, contributions=(contrib("hour_volume"),)))
    p.decide(st3, score(T0 + S, 0.99, contributions=(contrib("hour_volume"),)))
    p.confirm(st3, T0 + 2 * S, "confirmed by alice")
    p.tick(st3, T0 + 12 * H)
    assert st3.incident is None and st3.recurring == []
    assert any(d.is_alert and d.action == "create" for d in _night(p, st3, 1, "hour_volume"))
    # Past the window, it is an incident again.
    st4 = RiskState()
    _night(p, st4, 0, "hour_volume")
    assert any(d.is_alert and d.action == "create" for d in _night(p, st4, 9, "hour_volume"))


def test_a_rule_that_fires_again_after_an_unconfirmed_incident_alerts_again() -> None:
    """Recurrence learns behaviour, not facts: the same stranger delegation or impossible trip
    a day after an incident that closed unconfirmed is the attacker's second try."""
    p = RiskPolicy(recur_window_s=8 * 86_400, rule_risk={3: 10.0, 4: 40.0, 5: 100.0})
    st = RiskState()
    for day in (0, 1):
        t = T0 + day * 24 * H + 2 * H
        d = p.decide(st, score(t, 0.0, contributions=(), rules=(HIGH,)))
        assert d is not None and d.is_alert and d.action == "create", (day, d)
        assert not d.reason.startswith("habituated")
        p.tick(st, t + 12 * H)
        assert st.incident is None
    assert st.recurring == []  # a fact is not remembered as recurring behaviour
    # The baseline's own day-volume finding is behaviour: its recurrence is learned.
    drift = RuleHit("volume_drift", 4, "daily bytes_out drifting up", {})
    st2 = RiskState()
    for day, alerts in ((0, True), (1, False)):
        t = T0 + day * 24 * H + 2 * H
        d = p.decide(st2, score(t, 0.0, contributions=(), rules=(drift,)))
        assert d is not None and d.is_alert is alerts, (day, d)
        p.tick(st2, t + 12 * H)


def _contains(decisions: list[Decision]) -> list[bool]:
    """The ``ask_first`` flag of each contain command among ``decisions``."""
    return [d.ask_first for d in decisions if d.contain]


def test_after_an_unconfirmed_automatic_quarantine_the_next_contain_asks_an_analyst() -> None:
    """No benign identity is quarantined twice on the same unconfirmed guess: once an
    automatic quarantine ended without confirmation, contains wait for approval for
    ask_window_s - except Critical rules and confirmed incidents."""
    from pipeline.quarantine.policy import ASK_FIRST_NOTE, QuarantinePolicy

    p = RiskPolicy(recur_window_s=8 * 86_400, ask_window_s=14 * 86_400)
    q = QuarantinePolicy(duration_ms=3_600_000)
    st = RiskState()
    first = _night(p, st, 0, "hour_volume")
    assert _contains(first) == [False]  # the first one acts at once
    assert st.ask_until_ms == first[-1].time_ms + 14 * 86_400 * S
    # A new kind of evidence a night later: an alert and a quarantine-worthy incident, but its
    # one contain command waits for an analyst, and says why.
    second = _night(p, st, 1, "hour_volume", "country")
    assert any(d.is_alert and d.action == "create" for d in second)
    assert _contains(second) == [True]
    [cmd] = q.commands([d for d in second if d.contain], now_ms=T0)
    assert cmd.approval == "required"
    assert cmd.message["body"]["openc2"]["request"]["args"]["x-custos"]["approval"] == "required"
    assert ASK_FIRST_NOTE in cmd.message["body"]["openc2"]["request"]["args"]["x-custos"][
        "reason"]  # fmt: skip
    assert RiskState.from_bytes(st.to_bytes()) == st
    # A Critical rule contains at once whatever came before.
    d = p.decide(st, score(T0 + 3 * 24 * H, 0.2, rules=(CRITICAL,)))
    assert d is not None and d.contain and not d.ask_first
    assert q.commands([d], now_ms=T0)[0].approval == "automatic"
    p.tick(st, T0 + 4 * 24 * H)
    # Past the window (counted from the last unconfirmed quarantine), at once again.
    late = _night(p, st, 30, "bytes_out", "asn")
    assert _contains(late) == [False]


def test_a_confirmed_incident_lifts_the_ask_and_a_dismissed_quarantine_sets_it() -> None:
    p = RiskPolicy(ask_window_s=14 * 86_400)
    st = RiskState()
    _night(p, st, 0, "hour_volume")
    assert st.ask_until_ms > 0
    # Confirmed by an analyst: its command is that analyst's decision, and the identity's
    # next quarantines act at once again.
    for i in range(3):
        p.decide(st, score(T0 + 24 * H + i * S, 0.99, contributions=(contrib("country"),)))
    c = p.confirm(st, T0 + 24 * H + 5 * S, "confirmed by alice")
    assert c is not None and c.contain and not c.ask_first and st.ask_until_ms == 0
    p.tick(st, T0 + 3 * 24 * H)
    assert _contains(_night(p, st, 4, "bytes_out")) == [False]
    # Dismissed as a false positive after its automatic quarantine: the next one asks.
    st2 = RiskState()
    for i in range(10):
        p.decide(st2, score(T0 + i * S, 0.99, contributions=(contrib("bytes_out"),)))
    assert st2.incident is not None and st2.incident.contains == 1
    p.dismiss(st2, T0 + 20 * S, "false positive (bob)")
    assert st2.ask_until_ms == T0 + 20 * S + 14 * 86_400 * S
    assert _contains(_night(p, st2, 2, "country")) == [True]
    # Off (0): never asks.
    p0, st3 = RiskPolicy(ask_window_s=0), RiskState()
    _night(p0, st3, 0, "hour_volume")
    assert st3.ask_until_ms == 0 and _contains(_night(p0, st3, 1, "country")) == [False]
