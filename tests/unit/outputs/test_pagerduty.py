"""PagerDuty Events API v2: the event each Custos finding becomes, checked on what a local
receiver got, and the sender's reading of PagerDuty's answers."""

from __future__ import annotations

import json

import pytest

from pipeline.outputs.base import Delivery
from pipeline.outputs.pagerduty import MAX_EVENT_BYTES, PagerDutyOutput, build_event
from pipeline.scores.explanations import Contribution
from tests.unit.outputs.receivers import MISUSE, ODD_HOUR, HttpReceiver, alert

OK = (202, b'{"status":"success","message":"Event processed","dedup_key":"f-1"}')


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"action": "create"}, "trigger"),
        # Custos's In Progress is the policy's own update (more evidence), not a person: the
        # page stays open and is re-triggered on the same key.
        ({"action": "update"}, "trigger"),
        ({"action": "update", "status_id": 3, "is_alert": False}, "acknowledge"),  # suppressed
        ({"action": "close"}, "resolve"),
        ({"action": "close", "status_id": 4, "is_alert": False}, "resolve"),
        ({"action": "create", "status_id": 3, "is_alert": False}, None),  # never paged
    ],
)
def test_each_finding_maps_to_its_event_action(kwargs: dict[str, object], expected: str) -> None:
    a = alert(rules=[MISUSE], **kwargs)  # type: ignore[arg-type]
    event = build_event(a, routing_key="rk")
    assert (event or {}).get("event_action") == expected
    if event is not None:
        assert event["dedup_key"] == a.finding["finding_info"]["uid"] == "f-1"
        assert ("payload" in event) == (expected == "trigger")


@pytest.mark.parametrize(("severity_id", "pd"),
                         [(1, "info"), (2, "warning"), (3, "warning"), (4, "error"),
                          (5, "critical"), (6, "critical")])  # fmt: skip
def test_severity_follows_the_ocsf_severity(severity_id: int, pd: str) -> None:
    event = build_event(alert(severity_id=severity_id), routing_key="rk")
    assert event is not None and event["payload"]["severity"] == pd


def test_the_trigger_reaches_the_receiver_with_every_field() -> None:
    a = alert(rules=[MISUSE], contributions=[ODD_HOUR])
    with HttpReceiver([OK]) as r:
        out = PagerDutyOutput("rk-123", url=r.url + "/v2/enqueue",
                              console_url="https://console.example/")  # fmt: skip
        [job] = out.build([a])
        assert out.send(job) == Delivery("ok", "pagerduty: 202")
    [req] = r.requests
    assert req.path == "/v2/enqueue" and req.headers["Content-Type"] == "application/json"
    sent = json.loads(req.body)
    assert sent["routing_key"] == "rk-123" and sent["event_action"] == "trigger"
    assert sent["dedup_key"] == "f-1"
    p = sent["payload"]
    assert p["summary"].startswith("Zero Trust rule credential_misuse: agent agt-7: ")
    assert p["source"] == "agt-7" and p["severity"] == "error" and p["component"] == "agent"
    assert p["timestamp"] == "2023-11-14T22:13:20.123Z"  # T0 ms, UTC
    assert p["class"] == "Zero Trust Rule" and p["group"] == "custos"
    d = p["custom_details"]
    assert d["identity"] == {"uid": "agt-7", "kind": "agent"}
    assert d["rules"] == [{"rule": "credential_misuse", "severity_id": 5,
                           "text": "credential of bob used by agt-7"}]  # fmt: skip
    assert d["risk"] == {"score": 62, "level": "Medium", "current": 55.0, "peak": 62.4}
    assert d["explanation"] == ["credential of bob used by agt-7", "active at 03:00"]
    assert sent["links"] == [{"href": "https://console.example/findings/f-1",
                              "text": "Finding in the Custos console"}]  # fmt: skip


def test_limits_summary_and_event_size() -> None:
    huge = [Contribution(f"feat{i}", "zscore", 0.5, "x", "y", "z" * 4000) for i in range(300)]
    a = alert(identity="i" * 3000, contributions=huge)
    [job] = PagerDutyOutput("rk").build([a])
    sent = json.loads(job.body)
    assert len(job.body) <= MAX_EVENT_BYTES < len(a.raw)
    assert len(sent["payload"]["summary"]) == 1024 and sent["payload"]["summary"].endswith("...")
    assert sent["payload"]["custom_details"]["truncated"] is True
    assert sent["dedup_key"] == "f-1"


def test_min_severity_holds_back_triggers_only() -> None:
    out = PagerDutyOutput("rk", min_severity_id=5)
    jobs = out.build([alert(severity_id=4), alert(action="close", severity_id=4)])
    assert [json.loads(j.body)["event_action"] for j in jobs] == ["resolve"]


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (OK, "ok"),
        ((400, b'{"status":"invalid event","message":"Event object is invalid",'
               b'"errors":["\'payload.summary\' is missing"]}'), "failed"),
        ((400, b'{"status":"invalid event","errors":["Invalid routing key"]}'), "retry"),
        ((429, b""), "retry"),
        ((500, b"oops"), "retry"),
        ((503, b""), "retry"),
    ],
)  # fmt: skip
def test_the_sender_reads_pagerdutys_answers(answer: tuple[int, bytes], status: str) -> None:
    with HttpReceiver([answer]) as r:
        out = PagerDutyOutput("rk", url=r.url)
        [job] = out.build([alert()])
        assert out.send(job).status == status


def test_no_answer_is_retry() -> None:
    with HttpReceiver() as r:
        url = r.url
    [job] = PagerDutyOutput("rk", url=url, timeout_s=2).build([alert()])
    assert PagerDutyOutput("rk").send(job).status == "retry"
