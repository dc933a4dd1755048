"""Analyst feedback in the pure core: confirm, false positive (+ learn), release, suppress."""

from __future__ import annotations

import msgspec
import pytest

from pipeline.alerts.state import RiskState
from pipeline.control.feedback import Feedback, decode, encode
from pipeline.detection import HELD_MAX, Detection
from pipeline.errors import InvalidEvent
from pipeline.quarantine.commands import command_id_for
from pipeline.quarantine.policy import QuarantinePolicy
from tests.unit.test_detection import T0, _novel_ops, _warm


def _fb(action: str, n: int = 1, **kw: object) -> Feedback:
    kw.setdefault("at_ms", T0 + 10**7)
    return Feedback(uid=f"fb-{action}-{n}", action=action, identity="agt-1",  # type: ignore[arg-type]
                    by="analyst:alice", reason="checked with the owner",
                    **kw)  # type: ignore[arg-type]  # fmt: skip


def _with_incident() -> tuple[Detection, dict[str, bytes], str]:
    """agt-1 warm, then a stretch of novel operations: an incident with held events."""
    det, store = Detection(), {}
    _warm(det, store)
    out = det.process(_novel_ops(400) + _novel_ops(410) + _novel_ops(420), store)
    inc = det.state_of("agt-1", store).risk.incident
    assert inc is not None and not any(s.learned for s in out.scores)
    return det, store, inc.uid


def test_bad_feedback_is_an_invalid_event_with_a_reason() -> None:
    for raw in (b"nope", b'{"action": "explode"}', encode(_fb("confirm"))[:-1],
                b'{"uid":"u","action":"confirm","identity":"a","by":"b","reason":"r",'
                b'"at_ms":1,"learn_as_normal":true}'):  # fmt: skip
        with pytest.raises(InvalidEvent) as err:
            decode(raw)
        assert err.value.reason == "invalid_feedback"
    assert decode(encode(_fb("confirm"))) == _fb("confirm")


def test_confirm_makes_the_incident_quarantine_worthy_and_is_idempotent() -> None:
    det, store = Detection(), {}
    _warm(det, store)
    det.process(_novel_ops(400), store)
    inc = det.state_of("agt-1", store).risk.incident
    assert inc is not None and not inc.quarantine
    outcome, decisions = det.apply_feedback(_fb("confirm"), store)
    assert outcome.outcome == "applied"
    [d] = decisions
    assert d.quarantine and d.is_alert and "confirmed by analyst:alice" in d.reason
    assert QuarantinePolicy(duration_ms=60_000).commands(decisions, T0)  # a contain goes out
    again, nothing = det.apply_feedback(_fb("confirm"), store)
    assert again.outcome == "duplicate" and nothing == []


def test_false_positive_closes_and_learning_it_makes_the_novelty_normal() -> None:
    det, store, finding = _with_incident()
    before = det.state_of("agt-1", store)
    assert 0 < len(before.held) <= HELD_MAX
    outcome, [closed] = det.apply_feedback(_fb("false_positive", learn_as_normal=True), store)
    assert outcome.learned == len(before.held) and outcome.finding_uid == finding
    assert closed.action == "close" and "false positive" in closed.reason
    st = det.state_of("agt-1", store)
    assert st.risk.incident is None and st.risk.risk == 0.0 and st.held == []
    # The operation the analyst vouched for is no longer a first use.
    out = det.process(_novel_ops(500), store)
    assert not any(c.text.startswith("first use of operation")
                   for s in out.scores for c in s.contributions)  # fmt: skip


def test_false_positive_without_learning_keeps_the_novelty_novel() -> None:
    det, store, _ = _with_incident()
    outcome, _ = det.apply_feedback(_fb("false_positive"), store)
    assert outcome.learned == 0
    out = det.process(_novel_ops(500), store)
    assert any(c.text.startswith("first use of operation")
               for s in out.scores for c in s.contributions)  # fmt: skip


def test_release_cancels_the_incidents_command_and_mismatch_changes_nothing() -> None:
    det, store, finding = _with_incident()
    wrong, _ = det.apply_feedback(_fb("release", finding_uid="f-other"), store)
    assert wrong.outcome == "finding_mismatch"
    outcome, decisions = det.apply_feedback(_fb("release", 2), store)
    assert outcome.release_command == command_id_for(finding) and decisions == []
    assert det.state_of("agt-1", store).risk.incident is not None  # still watched


def test_a_suppression_silences_then_expires() -> None:
    det, store = Detection(), {}
    _warm(det, store)
    until = T0 + 480 * 30_000
    outcome, _ = det.apply_feedback(
        _fb("suppress", feature="operation", until_ms=until, at_ms=T0), store
    )
    assert outcome.outcome == "applied"
    quiet = det.process(_novel_ops(400), store)
    assert quiet.decisions == []
    assert det.state_of("agt-1", store).risk.incident is None or all(
        c.feature != "operation" for c in det.state_of("agt-1", store).risk.incident.contributions
    )
    loud = det.process([msgspec.structs.replace(e, operation="crm.purge")  # after it expired
                        for e in _novel_ops(600)], store)  # fmt: skip
    assert any(c.feature == "operation" for s in loud.scores for c in s.contributions)


def test_no_incident_is_answered_not_ignored() -> None:
    det, store = Detection(), {}
    _warm(det, store)
    outcome, decisions = det.apply_feedback(_fb("false_positive"), store)
    assert outcome.outcome == "no_incident" and decisions == []


def test_state_with_feedback_round_trips_and_old_states_still_decode() -> None:
    det, store, _ = _with_incident()
    det.apply_feedback(_fb("release"), store)
    st = Detection().state_of("agt-1", store)
    assert st.feedback == ["fb-release-1"] and st.held
    old = msgspec.msgpack.encode(msgspec.msgpack.decode(store["agt-1"])[:4])  # 4-part layout
    assert Detection().load_state(old).feedback == []


def test_a_state_written_before_side_parts_keeps_its_incident_and_moves_it_aside() -> None:
    """Before side parts, the incident sat in the risk and held events and feedback ids in a
    fifth element of the state: they still load, and the next write puts them aside."""
    det, store, _ = _with_incident()
    det.apply_feedback(_fb("release"), store)
    now = det.state_of("agt-1", store)
    version, base, rules, _risk = msgspec.msgpack.decode(store["agt-1"])
    old = {"agt-1": msgspec.msgpack.encode(
        (version, base, rules, now.risk.to_bytes(), (now.held, now.feedback)))}  # fmt: skip
    fresh = Detection()
    st = fresh.state_of("agt-1", old)
    assert st.risk.incident == now.risk.incident and st.feedback == ["fb-release-1"]
    assert st.held == now.held
    assert fresh.adopt("agt-1", old["agt-1"]) and "agt-1" in fresh.open_incidents
    fresh.apply_feedback(_fb("release", 2), old)  # any write
    again = Detection().state_of("agt-1", old)
    assert len(msgspec.msgpack.decode(old["agt-1"])) == 4  # held and feedback out...
    assert again.risk.incident is not None and again.held == now.held  # ...aside, with the
    assert again.feedback == ["fb-release-1", "fb-release-2"]  # incident (not in the state)
    assert RiskState.from_bytes(msgspec.msgpack.decode(old["agt-1"])[3]).incident is None
