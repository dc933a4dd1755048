"""Unit tests for the OCSF Detection Finding builder (pipeline.alerts.findings, STANDARDS §2)."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Literal

import msgspec
import pytest
from msgspec import Meta

from pipeline.alerts.decisions import Decision
from pipeline.alerts.findings import build_finding, encode_finding, finding_key
from pipeline.alerts.policy import RiskPolicy
from pipeline.alerts.state import RiskState, Suppression
from pipeline.responders.base import Command
from pipeline.responders.responder import failure_finding, response
from pipeline.scores.explanations import Contribution, RuleHit, Score

T0 = 1_760_000_000_000
S = 1000
VERSION = "0.1.0"

# --- A typed mirror of the fields STANDARDS §2 requires or recommends --------------------------
# Decoding a finding with these (no defaults: every field must be present) checks presence and
# types at once; forbid_unknown_fields is off because the finding may carry more.

Percent = Annotated[int, Meta(ge=0, le=100)]
TimeMs = Annotated[int, Meta(ge=0)]


class Observation(msgspec.Struct):
    value: str


class Anomaly(msgspec.Struct):
    observation_parameter: str
    observation_type: str
    observations: list[Observation]
    observed_pattern: str


class Baseline(msgspec.Struct):
    observation_parameter: str
    observations: list[Observation]


class Target(msgspec.Struct):
    name: str


class AnomalyAnalysis(msgspec.Struct):
    analysis_targets: list[Target]
    anomalies: list[Anomaly]
    baselines: list[Baseline]


class User(msgspec.Struct):
    uid: str
    type: str


class Actor(msgspec.Struct):
    user: User


class Evidence(msgspec.Struct):
    actor: Actor


class Analytic(msgspec.Struct):
    type_id: Literal[1, 2, 3, 4]
    name: str


class Related(msgspec.Struct):
    uid: str


class FindingInfo(msgspec.Struct):
    uid: Annotated[str, Meta(min_length=1)]
    title: str
    desc: str
    analytic: Analytic
    related_events: list[Related]
    first_seen_time: TimeMs
    last_seen_time: TimeMs
    types: list[str]


class Product(msgspec.Struct):
    name: Literal["Custos"]
    vendor_name: Literal["Custos"]
    version: str


class Metadata(msgspec.Struct):
    uid: str
    version: Literal["1.8.0"]
    product: Product


class RuleOut(msgspec.Struct):
    rule: str
    severity_id: int
    text: str


class CustosExt(msgspec.Struct):
    quarantine: bool
    rules: list[RuleOut]
    rationales: list[str]
    contributions: list[str]


class Unmapped(msgspec.Struct):
    custos: CustosExt


class DetectionFinding(msgspec.Struct):
    class_uid: Literal[2004]
    category_uid: Literal[2]
    activity_id: Literal[1, 2, 3]
    type_uid: Literal[200401, 200402, 200403]
    time: TimeMs
    severity_id: Literal[1, 2, 3, 4, 5]
    status_id: Literal[1, 2, 3, 4]
    is_alert: bool
    confidence_score: Percent
    risk_score: Percent
    risk_level_id: Literal[0, 1, 2, 3, 4]
    message: Annotated[str, Meta(pattern=r"\A[^\n]+\Z")]
    metadata: Metadata
    finding_info: FindingInfo
    evidences: Annotated[list[Evidence], Meta(min_length=1)]
    anomaly_analyses: list[AnomalyAnalysis]
    unmapped: Unmapped


def validate(finding: dict[str, object]) -> DetectionFinding:
    return msgspec.json.decode(encode_finding(finding), type=DetectionFinding)


# --- OCSF 1.8 itself: Detection Finding's required attributes, and the types and enums of the
# optional ones Custos fills (absent is fine, present must fit). Every finding Custos publishes,
# the policy's and the responder's "quarantine failed", must decode with these.

Unset = msgspec.UnsetType
UNSET = msgspec.UNSET


class OcsfProduct(msgspec.Struct):
    name: str | Unset = UNSET
    vendor_name: str | Unset = UNSET
    version: str | Unset = UNSET


class OcsfMetadata(msgspec.Struct):
    product: OcsfProduct
    version: Literal["1.8.0"]
    uid: str | Unset = UNSET


class OcsfRelated(msgspec.Struct):
    uid: str


class OcsfFindingInfo(msgspec.Struct):
    uid: Annotated[str, Meta(min_length=1)]
    title: str | Unset = UNSET
    desc: str | Unset = UNSET
    types: list[str] | Unset = UNSET
    related_events: list[OcsfRelated] | Unset = UNSET


class OcsfUser(msgspec.Struct):
    uid: str | Unset = UNSET
    type_id: Literal[0, 1, 2, 3, 4, 99] | Unset = UNSET


class OcsfActor(msgspec.Struct):
    user: OcsfUser | Unset = UNSET


class OcsfEvidence(msgspec.Struct):
    actor: OcsfActor | Unset = UNSET


class OcsfDetectionFinding(msgspec.Struct):
    activity_id: Literal[0, 1, 2, 3, 99]
    category_uid: Literal[2]
    class_uid: Literal[2004]
    metadata: OcsfMetadata
    severity_id: Literal[0, 1, 2, 3, 4, 5, 6, 99]
    time: TimeMs
    type_uid: Literal[200400, 200401, 200402, 200403, 200499]
    finding_info: OcsfFindingInfo
    status_id: Literal[0, 1, 2, 3, 4, 5, 6, 99] | Unset = UNSET
    is_alert: bool | Unset = UNSET
    confidence_score: Percent | Unset = UNSET
    risk_score: Percent | Unset = UNSET
    risk_level_id: Literal[0, 1, 2, 3, 4, 99] | Unset = UNSET
    message: str | Unset = UNSET
    evidences: list[OcsfEvidence] | Unset = UNSET
    unmapped: dict[str, object] | Unset = UNSET


def validate_ocsf(finding: dict[str, object]) -> OcsfDetectionFinding:
    f = msgspec.json.decode(encode_finding(finding), type=OcsfDetectionFinding)
    assert f.type_uid == f.class_uid * 100 + f.activity_id
    return f


# --- Fixtures ----------------------------------------------------------------------------------

BYTES_OUT = Contribution(
    "bytes_out", "zscore", 0.9, "48.0 MB", "typical 1.2 MB ± 0.4 MB",
    "bytes_out 48.0 MB vs typical 1.2 MB ± 0.4 MB",
)  # fmt: skip
NEW_HOST = Contribution(
    "dst_hostname", "first_seen", 0.7, "paste.example", "never seen for this agent",
    "first call to paste.example",
)  # fmt: skip
MISUSE = RuleHit(
    "credential_misuse", 5, "credential issued to agent-a used by agent-b",
    {"issued_to": "agent-a", "step": 3, "expires_at": None},
)  # fmt: skip


def incident() -> list[Decision]:
    """create (behavioural) -> update (rule) -> close, for one agent."""
    p = RiskPolicy(close_after_s=600)
    st = RiskState()
    out: list[Decision] = []
    events = [
        Score("e-1", "agent-b", "agent", T0, 0.95, 4.0, (BYTES_OUT,), rationale="upload report"),
        Score("e-2", "agent-b", "agent", T0 + S, 0.9, 3.5, (NEW_HOST, BYTES_OUT)),
        Score("e-3", "agent-b", "agent", T0 + 2 * S, 0.4, 1.0, rules=(MISUSE,)),
    ]
    for sc in events:
        d = p.decide(st, sc)
        if d is not None:
            out.append(d)
    closed = p.tick(st, T0 + 48 * 3600 * S)
    assert closed is not None
    out.append(closed)
    return out


# --- Tests -------------------------------------------------------------------------------------


def test_every_required_and_recommended_field_is_present_and_typed() -> None:
    decisions = incident()
    assert [d.action for d in decisions] == ["create", "update", "close"]
    for d in decisions:
        f = validate(build_finding(d, product_version=VERSION))
        assert f.type_uid == 200400 + f.activity_id
        assert f.metadata.product.version == VERSION
        assert f.evidences[0].actor.user.uid == "agent-b"
        assert f.evidences[0].actor.user.type == "Agent"
        assert f.anomaly_analyses[0].analysis_targets[0].name == "agent-b"
        assert f.finding_info.first_seen_time == T0
        assert f.finding_info.last_seen_time >= f.finding_info.first_seen_time


def test_policy_findings_are_ocsf_detection_findings() -> None:
    for d in incident():
        validate_ocsf(build_finding(d, product_version=VERSION))


def test_the_responders_quarantine_failure_is_an_ocsf_detection_finding() -> None:
    cmd = Command("contain", "r-1", "c-1", "agent-b", "f-1", "credential misuse", ("cred-1",),
                  T0, None, False)  # fmt: skip
    final = response("r-1", 503, "custos-broker: connection refused", sender="responder",
                     to="custos-worker", now_ms=T0 + S)  # fmt: skip
    raw = failure_finding(cmd, final, T0 + S, VERSION)
    f = validate_ocsf(raw)
    assert (f.activity_id, f.severity_id, f.status_id, f.is_alert) == (1, 5, 1, True)
    assert f.metadata.product.version == VERSION
    assert f.evidences and f.evidences[0].actor and f.evidences[0].actor.user
    assert f.evidences[0].actor.user.uid == "agent-b"
    assert f.finding_info.related_events == [OcsfRelated("f-1")]  # the incident it failed
    assert f.message == "quarantine of agent-b failed (503): custos-broker: connection refused"
    # Deterministic per request: a redelivered failure is the same finding.
    assert failure_finding(cmd, final, T0 + 2 * S, VERSION)["finding_info"] == raw["finding_info"]
    unlinked = failure_finding(dataclasses.replace(cmd, finding_uid=None), final, T0, VERSION)
    assert validate_ocsf(unlinked).finding_info.related_events == []
    # The mirror does refuse what OCSF refuses: no finding uid, another class.
    with pytest.raises(msgspec.ValidationError):
        validate_ocsf({**raw, "finding_info": {"title": "x"}})
    with pytest.raises(msgspec.ValidationError):
        validate_ocsf({**raw, "class_uid": 2001})


def test_one_incident_is_one_finding_uid_with_create_update_close() -> None:
    fs = [build_finding(d, product_version=VERSION) for d in incident()]
    assert len({f["finding_info"]["uid"] for f in fs}) == 1
    assert [(f["activity_id"], f["status_id"]) for f in fs] == [(1, 1), (2, 2), (3, 4)]
    assert [f["type_uid"] for f in fs] == [200401, 200402, 200403]
    # metadata.uid is unique per emitted finding event, and deterministic on replay.
    assert len({f["metadata"]["uid"] for f in fs}) == 3
    again = [build_finding(d, product_version=VERSION) for d in incident()]
    assert [f["metadata"]["uid"] for f in fs] == [f["metadata"]["uid"] for f in again]


def test_behavioural_finding_reuses_texts_as_observed_vs_baseline() -> None:
    create = incident()[0]
    f = build_finding(create, product_version=VERSION)
    assert f["finding_info"]["analytic"] == {
        "type_id": 2,
        "type": "Behavioral",
        "name": "Custos behavioural baseline",
    }
    assert f["finding_info"]["related_events"] == [{"uid": "e-1"}, {"uid": "e-2"}]
    analysis = f["anomaly_analyses"][0]
    by_param = {a["observation_parameter"]: a for a in analysis["anomalies"]}
    assert by_param["bytes_out"]["observed_pattern"] == BYTES_OUT.text
    assert by_param["bytes_out"]["observations"] == [{"value": "48.0 MB"}]
    assert by_param["dst_hostname"]["observation_type"] == "first_seen"
    baselines = {b["observation_parameter"]: b for b in analysis["baselines"]}
    assert baselines["bytes_out"]["observations"] == [{"value": "typical 1.2 MB ± 0.4 MB"}]
    custos = f["unmapped"]["custos"]
    assert custos["contributions"] == [BYTES_OUT.text, NEW_HOST.text]
    assert custos["rationales"] == ["upload report"] and custos["rules"] == []
    assert f["is_alert"] is True and custos["quarantine"] is False
    assert f["confidence_score"] == 95 and f["risk_score"] == round(create.peak_risk)
    assert "\n" not in f["message"] and BYTES_OUT.text in f["message"]


def test_rule_finding_is_a_rule_analytic_with_quarantine_and_evidence() -> None:
    update = incident()[1]
    f = build_finding(update, product_version=VERSION)
    assert f["finding_info"]["analytic"]["type_id"] == 1
    assert "credential_misuse" in f["finding_info"]["analytic"]["name"]
    assert "credential_misuse" in f["finding_info"]["title"]
    assert MISUSE.text in f["finding_info"]["desc"] and MISUSE.text in f["message"]
    assert f["severity_id"] == 5 and f["risk_level_id"] == 4 and f["risk_score"] == 100
    assert f["confidence_score"] == 100
    custos = f["unmapped"]["custos"]
    assert custos["quarantine"] is True and "quarantine" in f["message"]
    assert custos["rules"] == [{"rule": MISUSE.rule, "severity_id": 5, "text": MISUSE.text,
                                "evidence": dict(MISUSE.evidence)}]  # fmt: skip
    assert custos["rules"][0]["evidence"]["issued_to"] == "agent-a"  # the facts, for analysts
    anomalies = f["anomaly_analyses"][0]["anomalies"]
    rule_obs = [a for a in anomalies if a["observation_type"] == "rule:credential_misuse"]
    assert {a["observation_parameter"]: a["observations"][0]["value"] for a in rule_obs} == {
        "issued_to": "agent-a",
        "step": "3",
        "expires_at": "",
    }


def test_a_contain_that_asks_first_says_so_in_the_finding() -> None:
    update = msgspec.structs.replace(incident()[1], ask_first=True)
    f = build_finding(update, product_version=VERSION)
    assert f["unmapped"]["custos"]["quarantine_asks_first"] is True
    assert "waits for an analyst" in f["message"]
    plain = build_finding(incident()[1], product_version=VERSION)
    assert plain["unmapped"]["custos"]["quarantine_asks_first"] is False
    assert "waits for an analyst" not in plain["message"]


def test_close_finding_is_resolved_and_keeps_the_incident_severity() -> None:
    close = incident()[2]
    f = build_finding(close, product_version=VERSION)
    assert f["activity_id"] == 3 and f["status_id"] == 4 and f["status"] == "Resolved"
    assert f["severity_id"] == 5 and f["risk_score"] == 100
    assert f["unmapped"]["custos"]["risk"] < 10
    assert "resolved" in f["message"]


def test_suppressed_identity_finding_is_not_an_alert() -> None:
    p = RiskPolicy(suppressions=[Suppression(identity="agent-b", reason="pen test")])
    d = p.decide(RiskState(), Score("e-9", "agent-b", "agent", T0, 0.1, 0.0, rules=(MISUSE,)))
    assert d is not None
    f = validate(build_finding(d, product_version=VERSION))
    assert f.status_id == 3 and f.is_alert is False and f.unmapped.custos.quarantine is False
    raw = build_finding(d, product_version=VERSION)
    assert raw["unmapped"]["custos"]["suppressed_by"] == "pen test"


@pytest.mark.parametrize(("kind", "type_id", "type_name"), [
    ("human", 1, "User"), ("service", 4, "Service"), ("agent", 99, "Agent"),
    ("unknown", 0, "Unknown"),  # a delegator no directory describes
])  # fmt: skip
def test_identity_kinds_map_to_ocsf_user_types(kind: str, type_id: int, type_name: str) -> None:
    d = RiskPolicy().decide(RiskState(), Score("e", "x", kind, T0, 0.1, 0.0, rules=(MISUSE,)))
    assert d is not None
    validate(build_finding(d, product_version=VERSION))  # the OCSF 1.8 schema too
    user = build_finding(d, product_version=VERSION)["evidences"][0]["actor"]["user"]
    assert user == {"uid": "x", "type": type_name, "type_id": type_id}


def test_encode_and_key() -> None:
    d = incident()[0]
    f = build_finding(d, product_version=VERSION)
    data = encode_finding(f)
    assert json.loads(data) == f and b" " not in data[:20]
    assert finding_key(d) == b"agent-b"


def test_long_text_is_cut_to_one_short_message_line() -> None:
    long = RuleHit("clone", 5, "line one\n" + "x" * 1000)
    d = RiskPolicy().decide(RiskState(), Score("e", "y", "agent", T0, 0.1, 0.0, rules=(long,)))
    assert d is not None
    msg = build_finding(d, product_version=VERSION)["message"]
    assert len(msg) <= 300 and "\n" not in msg and msg.endswith("...")
