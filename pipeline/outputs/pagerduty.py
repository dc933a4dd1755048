"""PagerDuty Events API v2: one alert per finding, deduplicated on ``finding_info.uid``.

Which event action a Custos finding is (``pipeline/alerts/findings.py`` builds them):

==========================================================  =================================
finding                                                     PagerDuty
==========================================================  =================================
activity 1 Create, status 1 New, ``is_alert``               ``trigger``
activity 2 Update, status 2 In Progress, ``is_alert``       ``trigger`` (same dedup_key)
activity 2 Update, status 3 Suppressed (not ``is_alert``)   ``acknowledge``
activity 3 Close, status 4 Resolved                         ``resolve``
activity 1 Create that is not ``is_alert`` (inventory,      nothing: no page
a suppressed identity's new incident)
==========================================================  =================================

Custos sets In Progress on every policy update (more evidence, a higher severity): it is not
a person's acknowledgement, so it re-triggers on the same dedup_key (PagerDuty folds it into the
open alert, keeps an acknowledged one acknowledged, and shows the new details) rather than
acknowledging a page nobody has seen. The only analyst decision a finding carries is a
suppression: that acknowledges. ``acknowledge`` and ``resolve`` of a key PagerDuty never saw
are accepted and change nothing, so a stateless sender may always send them.

Limits (PagerDuty's documentation): summary at most 1024 characters, dedup_key 255, the whole
event 512 KB; a larger event is sent with its custom details cut down. 202 = accepted; 400 =
this event is invalid (failed, except an invalid routing key: that is every event); 429 and
5xx = retry.

>>> from pipeline.outputs.base import Alert
>>> a = Alert.from_finding({"activity_id": 3, "status_id": 4, "is_alert": True,
...                         "finding_info": {"uid": "f-1"}})
>>> event_action(a), build_event(a, routing_key="k")
('resolve', {'routing_key': 'k', 'event_action': 'resolve', 'dedup_key': 'f-1'})
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal
from urllib.parse import quote

import msgspec

from pipeline.outputs.base import (
    Alert,
    Delivery,
    HttpRequest,
    HttpResponse,
    by_http_status,
    fit,
    send_http,
)

__all__ = ["EVENTS_URL", "MAX_EVENT_BYTES", "PagerDutyOutput", "build_event", "event_action",
           "interpret", "severity"]  # fmt: skip

EVENTS_URL: Final = "https://events.pagerduty.com/v2/enqueue"
MAX_EVENT_BYTES: Final = 512 * 1024
MAX_SUMMARY: Final = 1024
MAX_DEDUP_KEY: Final = 255
# OCSF severity_id (0 Unknown ... 6 Fatal) -> PagerDuty's four severities.
_SEVERITY: Final = {0: "info", 1: "info", 2: "warning", 3: "warning", 4: "error", 5: "critical",
                    6: "critical"}  # fmt: skip
_STATUS_SUPPRESSED: Final = 3
_STATUS_RESOLVED: Final = 4

Action = Literal["trigger", "acknowledge", "resolve"]


def severity(severity_id: int) -> str:
    """PagerDuty's severity for an OCSF ``severity_id``.

    >>> [severity(i) for i in (1, 3, 4, 5)]
    ['info', 'warning', 'error', 'critical']
    """
    return _SEVERITY.get(severity_id, "info")


def event_action(alert: Alert) -> Action | None:
    """The event action for a finding (the table above); None: nothing to send."""
    f = alert.finding
    if f.get("activity_id") == 3 or f.get("status_id") == _STATUS_RESOLVED:
        return "resolve"
    if f.get("is_alert") is False or f.get("status_id") == _STATUS_SUPPRESSED:
        return "acknowledge" if f.get("activity_id") == 2 else None
    return "trigger"


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _details(a: Alert, cut: int | None) -> dict[str, Any]:
    """custom_details; ``cut``: at most this many explanation lines of at most 1 KB each."""
    f = a.finding
    explanation = a.explanation if cut is None else [fit(t, 1024) for t in a.explanation[:cut]]
    rules = [{"rule": r.get("rule"), "severity_id": r.get("severity_id"),
              "text": r.get("text") if cut is None else fit(str(r.get("text", "")), 1024)}
             for r in (a.rules if cut is None else a.rules[:cut])]  # fmt: skip
    details: dict[str, Any] = {
        "finding_uid": a.uid,
        "identity": {"uid": a.identity, "kind": a.identity_kind},
        "rules": rules,
        "risk": {"score": f.get("risk_score"), "level": f.get("risk_level"),
                 "current": a.custos.get("risk"), "peak": a.custos.get("peak_risk")},
        "explanation": explanation,
        "status": f.get("status"),
        "quarantine": a.custos.get("quarantine"),
        "message": f.get("message"),
    }
    if cut is not None:
        details["truncated"] = True
    return details


def build_event(alert: Alert, *, routing_key: str, console_url: str = "",
                source: str = "", group: str = "custos") -> dict[str, Any] | None:  # fmt: skip
    """The Events API v2 event for one finding; None when it should not reach PagerDuty.

    ``source`` is the identity the finding is about unless set: for Custos the "affected
    system" is the identity. acknowledge and resolve carry only the key (PagerDuty needs no
    payload for them).
    """
    action = event_action(alert)
    if action is None:
        return None
    event: dict[str, Any] = {"routing_key": routing_key, "event_action": action,
                             "dedup_key": alert.uid[:MAX_DEDUP_KEY]}  # fmt: skip
    if action != "trigger":
        return event
    f = alert.finding
    types = alert.info.get("types") or []
    event["payload"] = {
        "summary": fit(f"{alert.title}: {f.get('message') or ''}".replace("\n", " "),
                       MAX_SUMMARY),
        "source": fit(source or alert.identity or "custos", 255),
        "severity": severity(alert.severity_id),
        "timestamp": _iso(alert.time_ms),
        "component": alert.identity_kind or "identity",
        "group": group,
        "class": str(types[0]) if types else "Detection Finding",
        "custom_details": _details(alert, None),
    }
    event["client"] = "Custos"
    if console_url:
        href = f"{console_url.rstrip('/')}/findings/{quote(alert.uid, safe='')}"
        event["client_url"] = href
        event["links"] = [{"href": href, "text": "Finding in the Custos console"}]
    return event


def encode_event(event: dict[str, Any]) -> bytes:
    """The event's JSON, cut down to PagerDuty's 512 KB: custom details shortened, then dropped
    to the finding uid."""
    body = msgspec.json.encode(event)
    if len(body) <= MAX_EVENT_BYTES or "payload" not in event:
        return body
    details = event["payload"]["custom_details"]
    for keep in ({**details, "explanation": [fit(t, 1024) for t in details["explanation"][:20]],
                  "rules": details["rules"][:20], "message": fit(str(details["message"]), 1024),
                  "truncated": True},
                 {"finding_uid": details["finding_uid"], "identity": details["identity"],
                  "truncated": True}):  # fmt: skip
        body = msgspec.json.encode({**event, "payload": {**event["payload"],
                                                         "custom_details": keep}})  # fmt: skip
        if len(body) <= MAX_EVENT_BYTES:
            break
    return body


def interpret(resp: HttpResponse) -> Delivery:
    if resp.status == 400 and b"routing" in resp.body.lower():
        # An invalid routing key refuses every event: retry (and stop), never skip.
        return Delivery("retry", f"pagerduty: invalid routing key: {resp.body[:200]!r}")
    bad = by_http_status(resp, "pagerduty")
    if bad is not None:
        return bad
    try:
        doc = msgspec.json.decode(resp.body or b"{}")
    except msgspec.DecodeError:
        doc = {}
    if isinstance(doc, dict) and doc.get("status") not in (None, "success"):
        return Delivery("failed", f"pagerduty: {doc!r}"[:300])
    return Delivery("ok", f"pagerduty: {resp.status}")


class PagerDutyOutput:
    name = "pagerduty"

    def __init__(self, routing_key: str, *, url: str = EVENTS_URL, console_url: str = "",
                 source: str = "", group: str = "custos", min_severity_id: int = 0,
                 timeout_s: float = 10.0) -> None:  # fmt: skip
        self.routing_key = routing_key
        self.url = url
        self.console_url = console_url
        self.source = source
        self.group = group
        self.min_severity_id = min_severity_id
        self.timeout_s = timeout_s

    def build(self, alerts: Sequence[Alert]) -> list[HttpRequest]:
        out = []
        for a in alerts:
            event = build_event(a, routing_key=self.routing_key, console_url=self.console_url,
                                source=self.source, group=self.group)  # fmt: skip
            if event is None:
                continue
            # Below the paging threshold: no trigger; acknowledge/resolve still go (no-ops
            # for a key that never paged, and right for one that paged at a higher severity).
            if event["event_action"] == "trigger" and a.severity_id < self.min_severity_id:
                continue
            out.append(HttpRequest("POST", self.url, {"Content-Type": "application/json"},
                                   encode_event(event), what=f"{event['event_action']} {a.uid}"))
        return out

    def send(self, job: HttpRequest) -> Delivery:
        return interpret(send_http(job, timeout_s=self.timeout_s))
