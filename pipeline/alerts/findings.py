"""OCSF 1.8 Detection Finding (class 2004): every finding Custos publishes is built here.

:func:`build_finding` builds one from a policy :class:`Decision`; :func:`build_failure_finding`
one about Custos itself, an action of its own that did not complete (a failed quarantine).

One incident is one finding: ``create`` (activity 1, status New), ``update`` (2, In Progress)
and ``close`` (3, Resolved) share ``finding_info.uid``; a suppressed identity's findings carry
status Suppressed (3) and ``is_alert`` false. Contribution and rule texts are reused verbatim.
What OCSF has no field for (quarantine, rules, agent rationales) goes under ``unmapped.custos``.

>>> from pipeline.scores.explanations import RuleHit, Score
>>> from pipeline.alerts.policy import RiskPolicy
>>> from pipeline.alerts.state import RiskState
>>> hit = RuleHit("credential_misuse", 5, "credential of bob used by alice")
>>> d = RiskPolicy().decide(RiskState(), Score("e-1", "alice", "human", 0, 0.1, 0.0, rules=(hit,)))
>>> f = build_finding(d, product_version="0.1.0")
>>> f["type_uid"], f["status_id"], f["finding_info"]["analytic"]["type_id"], f["risk_score"]
(200401, 1, 1, 100)
>>> finding_key(d)
b'alice'
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from pipeline.alerts.decisions import Decision

__all__ = [
    "CATEGORY_UID",
    "CLASS_UID",
    "OCSF_VERSION",
    "build_failure_finding",
    "build_finding",
    "encode_finding",
    "finding_key",
]

CLASS_UID: Final = 2004
CATEGORY_UID: Final = 2
OCSF_VERSION: Final = "1.8.0"

_ACTIVITY: Final = {1: "Create", 2: "Update", 3: "Close"}
_STATUS: Final = {1: "New", 2: "In Progress", 3: "Suppressed", 4: "Resolved"}
_SEVERITY: Final = {
    0: "Unknown",
    1: "Informational",
    2: "Low",
    3: "Medium",
    4: "High",
    5: "Critical",
    6: "Fatal",
}
_RISK_LEVEL: Final = {0: "Info", 1: "Low", 2: "Medium", 3: "High", 4: "Critical"}
# identity kind -> OCSF user (type_id, type). OCSF has no AI-agent user type: 99 Other. A
# delegator no directory describes is of a kind Custos does not know: OCSF's 0 Unknown.
_USER_TYPE: Final = {"human": (1, "User"), "service": (4, "Service"), "agent": (99, "Agent"),
                     "unknown": (0, "Unknown")}  # fmt: skip
_MESSAGE_MAX: Final = 300  # one line in a SIEM list view
# Per-emission event uid namespace (metadata.uid): deterministic, so a replay deduplicates.
_EVENT_NS: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://custos.invalid/finding-event")
_ENCODER: Final = msgspec.json.Encoder()


def _metadata(event_uid: str, product_version: str) -> dict[str, Any]:
    return {
        "uid": event_uid,
        "version": OCSF_VERSION,
        "product": {"name": "Custos", "vendor_name": "Custos", "version": product_version},
    }


def _user(d: Decision) -> dict[str, Any]:
    type_id, type_name = _USER_TYPE.get(d.identity_kind, (99, d.identity_kind or "Other"))
    return {"uid": d.identity_uid, "type": type_name, "type_id": type_id}


def _title(d: Decision) -> str:
    who = f"{d.identity_kind} {d.identity_uid}"
    if d.rules:
        return f"Zero Trust rule {', '.join(r.rule for r in d.rules)}: {who}"
    return f"Behavioural anomaly: {who}"


def _message(d: Decision, risk_score: int) -> str:
    level = _RISK_LEVEL.get(d.risk_level_id, "Unknown")
    head = f"{d.identity_kind} {d.identity_uid}: risk {risk_score} ({level})"
    if d.action == "close":
        text = f"incident resolved ({d.reason})"
    else:
        first = d.rules[0].text if d.rules else d.contributions[0].text if d.contributions else ""
        text = first or d.reason
        if d.quarantine:
            head += ", quarantine recommended"
        if d.ask_first:
            head += " (waits for an analyst: its last automatic quarantine ended unconfirmed)"
    line = f"{head} - {text}".replace("\n", " ")
    return line if len(line) <= _MESSAGE_MAX else line[: _MESSAGE_MAX - 3] + "..."


def _anomaly_analysis(d: Decision) -> dict[str, Any]:
    """Observed vs baseline per contribution; a rule's evidence values are observations too."""
    anomalies: list[dict[str, Any]] = []
    baselines: list[dict[str, Any]] = []
    for c in d.contributions:
        anomalies.append(
            {
                "observation_parameter": c.feature,
                "observation_type": c.kind,
                "observations": [{"value": c.observed}],
                "observed_pattern": c.text,
            }
        )
        baselines.append(
            {
                "observation_parameter": c.feature,
                "observation_type": c.kind,
                "observations": [{"value": c.baseline}],
            }
        )
    for r in d.rules:
        for key, value in r.evidence.items():
            anomalies.append(
                {
                    "observation_parameter": key,
                    "observation_type": f"rule:{r.rule}",
                    "observations": [{"value": "" if value is None else str(value)}],
                    "observed_pattern": r.text,
                }
            )
    return {
        "analysis_targets": [{"name": d.identity_uid, "type": _user(d)["type"]}],
        "anomalies": anomalies,
        "baselines": baselines,
    }


def build_finding(decision: Decision, *, product_version: str) -> dict[str, Any]:
    """The OCSF 1.8 Detection Finding for one decision, as a JSON-ready dict.

    ``risk_score``/``risk_level_id``/``severity_id`` describe the incident's peak risk; the
    current, decayed risk is in ``unmapped.custos.risk``. ``metadata.uid`` is unique per
    emission and deterministic (finding uid + activity + update count).
    """
    d = decision
    activity = d.activity_id
    risk_score = max(0, min(100, round(d.peak_risk)))
    rule_fired = bool(d.rules)
    event_uid = uuid.uuid5(_EVENT_NS, f"{d.finding_uid}:{activity}:{d.counters.updates}")
    finding_info: dict[str, Any] = {
        "uid": d.finding_uid,
        "title": _title(d),
        "desc": "; ".join([r.text for r in d.rules] + [c.text for c in d.contributions])
        or d.reason,
        "analytic": {
            "type_id": 1 if rule_fired else 2,
            "type": "Rule" if rule_fired else "Behavioral",
            "name": (
                "Custos Zero Trust rules: " + ", ".join(r.rule for r in d.rules)
                if rule_fired
                else "Custos behavioural baseline"
            ),
        },
        "related_events": [{"uid": uid} for uid in d.related_events],
        "first_seen_time": d.first_seen_ms,
        "last_seen_time": d.last_seen_ms,
        "types": (["Zero Trust Rule"] if rule_fired else [])
        + (["Behavioral Anomaly"] if d.contributions else []),
    }
    return {
        "class_uid": CLASS_UID,
        "class_name": "Detection Finding",
        "category_uid": CATEGORY_UID,
        "category_name": "Findings",
        "activity_id": activity,
        "activity_name": _ACTIVITY[activity],
        "type_uid": CLASS_UID * 100 + activity,
        "type_name": f"Detection Finding: {_ACTIVITY[activity]}",
        "time": d.time_ms,
        "severity_id": d.severity_id,
        "severity": _SEVERITY.get(d.severity_id, "Unknown"),
        "status_id": d.status_id,
        "status": _STATUS.get(d.status_id, "Unknown"),
        "is_alert": d.is_alert,
        "confidence_score": max(0, min(100, round(d.confidence * 100))),
        "risk_score": risk_score,
        "risk_level_id": d.risk_level_id,
        "risk_level": _RISK_LEVEL.get(d.risk_level_id, "Unknown"),
        "message": _message(d, risk_score),
        "metadata": _metadata(str(event_uid), product_version),
        "finding_info": finding_info,
        "evidences": [{"actor": {"user": _user(d)}}],
        "anomaly_analyses": [_anomaly_analysis(d)],
        "unmapped": {
            "custos": {
                "action": d.action,
                "reason": d.reason,
                "quarantine": d.quarantine,
                # Its contain command waits on the approvals topic (RiskPolicy ask_window_s).
                "quarantine_asks_first": d.ask_first,
                "risk": round(d.risk, 2),
                "peak_risk": round(d.peak_risk, 2),
                "identity_kind": d.identity_kind,
                "rules": [
                    {
                        "rule": r.rule,
                        "severity_id": r.severity_id,
                        "text": r.text,
                        "evidence": r.evidence,
                    }
                    for r in d.rules
                ],
                "rationales": list(d.rationales),
                "contributions": [c.text for c in d.contributions],
                "counters": msgspec.structs.asdict(d.counters),
                "suppressed_by": d.suppressed_by,
            }
        },
    }


def build_failure_finding(
    *,
    finding_uid: str,
    identity_uid: str,
    title: str,
    message: str,
    desc: str,
    types: Sequence[str],
    related_events: Sequence[str],
    time_ms: int,
    event_uid: str,
    product_version: str,
    unmapped: dict[str, Any],
) -> dict[str, Any]:
    """A Critical alert (create, status New, risk 100) that an action of Custos failed.

    Such a failure must never pass silently, so it is a finding of its own rather than an
    update of the incident (``related_events`` links that one). The caller supplies the ids
    (``event_uid`` per emission, ``finding_uid`` per failure): this stays a pure function.

    >>> f = build_failure_finding(finding_uid="f-1", identity_uid="agt-1", title="t",
    ...     message="m", desc="d", types=["Quarantine failure"], related_events=["f-0"],
    ...     time_ms=0, event_uid="e-1", product_version="0.1.0", unmapped={})
    >>> f["type_uid"], f["severity"], f["finding_info"]["related_events"]
    (200401, 'Critical', [{'uid': 'f-0'}])
    """
    activity, severity_id, risk_level_id = 1, 5, 4
    return {
        "class_uid": CLASS_UID,
        "category_uid": CATEGORY_UID,
        "activity_id": activity,
        "type_uid": CLASS_UID * 100 + activity,
        "time": time_ms,
        "severity_id": severity_id,
        "severity": _SEVERITY[severity_id],
        "status_id": 1,
        "is_alert": True,
        "risk_level_id": risk_level_id,
        "risk_score": 100,
        "message": message,
        "metadata": _metadata(event_uid, product_version),
        "finding_info": {
            "uid": finding_uid,
            "title": title,
            "desc": desc,
            "types": list(types),
            "related_events": [{"uid": uid} for uid in related_events],
        },
        "evidences": [{"actor": {"user": {"uid": identity_uid}}}],
        "unmapped": unmapped,
    }


def encode_finding(finding: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON of a finding dict (the Kafka message value).

    >>> encode_finding({"class_uid": 2004})
    b'{"class_uid":2004}'
    """
    return _ENCODER.encode(finding)


def finding_key(decision: Decision) -> bytes:
    """Kafka message key of a finding: the identity uid (one identity's findings stay ordered)."""
    return decision.identity_uid.encode("utf-8")
