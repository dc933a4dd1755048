"""The OCSF stream to a SIEM's HTTP collector, in Splunk HTTP Event Collector (HEC) format.

``POST <url>/services/collector/event`` with ``Authorization: Splunk <token>`` and a body of
concatenated JSON event objects, one per finding::

    {"time": <epoch s>, "host": ..., "source": "custos", "sourcetype": "ocsf:detection_finding",
     "event": <the finding exactly as published on the alerts topic>}

Batches hold at most ``max_events`` findings and ``max_bytes`` of body (Splunk's
``max_content_length`` refuses larger ones; a single larger event goes alone and is refused
on its own). HEC answers ``{"text": "Success", "code": 0}``; its codes say what went wrong:

- retry: 1 token disabled, 2 token required, 3 invalid authorization, 4 invalid token (the
  endpoint refuses everything: retried, then the runner stops uncommitted), 7 incorrect index,
  8 internal error, 9 server busy, 10/11 data channel missing/invalid, 16, 18-20 unhealthy;
- failed: 5 no data, 6 invalid data format, 12/13 event field missing/blank (this batch).

>>> from pipeline.outputs.base import Alert
>>> a = Alert(b'{"time":1700000000123,"finding_info":{"uid":"f-1"}}', {"time": 1700000000123})
>>> envelope(a, host="h", source="custos", sourcetype="ocsf:detection_finding", index="")
b'{"time":1700000000.123,"host":"h","source":"custos","sourcetype":"ocsf:detection_finding","event":{"time":1700000000123,"finding_info":{"uid":"f-1"}}}'
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Final

import msgspec

from pipeline.outputs.base import (
    Alert,
    Delivery,
    HttpRequest,
    HttpResponse,
    by_http_status,
    send_http,
)

__all__ = ["HecOutput", "batches", "envelope", "interpret"]

SOURCETYPE: Final = "ocsf:detection_finding"
_RETRY_CODES: Final = frozenset({1, 2, 3, 4, 7, 8, 9, 10, 11, 16, 18, 19, 20})
_FAILED_CODES: Final = frozenset({5, 6, 12, 13, 15})


def envelope(alert: Alert, *, host: str, source: str, sourcetype: str, index: str) -> bytes:
    """One HEC event object; ``event`` is the published bytes themselves, not a re-encoding."""
    head: dict[str, object] = {"time": round(alert.time_ms / 1000, 3), "host": host,
                               "source": source, "sourcetype": sourcetype}  # fmt: skip
    if index:
        head["index"] = index
    return msgspec.json.encode(head)[:-1] + b',"event":' + alert.raw.strip() + b"}"


def batches(events: Sequence[bytes], *, max_events: int, max_bytes: int) -> list[list[bytes]]:
    """Consecutive groups within both bounds (an event over ``max_bytes`` goes alone).

    >>> [len(b) for b in batches([b"x" * 4] * 5, max_events=2, max_bytes=100)]
    [2, 2, 1]
    >>> [len(b) for b in batches([b"x" * 4] * 5, max_events=10, max_bytes=9)]
    [2, 2, 1]
    """
    out: list[list[bytes]] = []
    size = 0
    for ev in events:
        if not out or len(out[-1]) >= max_events or size + len(ev) > max_bytes:
            out.append([])
            size = 0
        out[-1].append(ev)
        size += len(ev)
    return out


def interpret(resp: HttpResponse, what: str = "hec") -> Delivery:
    code: object = None
    text = ""
    try:
        doc = msgspec.json.decode(resp.body) if resp.body else {}
        if isinstance(doc, dict):
            code, text = doc.get("code"), str(doc.get("text", ""))
    except msgspec.DecodeError:
        pass
    if isinstance(code, int):
        detail = f"{what}: HEC code {code} {text!r} (HTTP {resp.status})"
        if code == 0 and 200 <= resp.status < 300:
            return Delivery("ok", detail)
        if code in _RETRY_CODES:
            return Delivery("retry", detail, resp.retry_after_s)
        if code in _FAILED_CODES:
            return Delivery("failed", detail)
    bad = by_http_status(resp, what)
    if bad is not None:
        return bad
    # A 2xx without HEC's answer is not HEC (a proxy's page, a wrong path): do not count it.
    return Delivery("retry", f"{what}: HTTP {resp.status} without a HEC answer "
                             f"{resp.body[:200]!r}")  # fmt: skip


class HecOutput:
    name = "hec"

    def __init__(self, url: str, token: str, *, host: str, source: str = "custos",
                 sourcetype: str = SOURCETYPE, index: str = "", ca_file: str = "",
                 max_events: int = 100, max_bytes: int = 1_000_000, min_severity_id: int = 0,
                 timeout_s: float = 10.0) -> None:  # fmt: skip
        base = url.rstrip("/")
        self.url = base if base.endswith("/services/collector/event") else (
            base + "/services/collector/event")  # fmt: skip
        self.token = token
        self.host = host
        self.source = source
        self.sourcetype = sourcetype
        self.index = index
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.min_severity_id = min_severity_id
        self.timeout_s = timeout_s
        self.context = ssl.create_default_context(cafile=ca_file) if ca_file else None

    def build(self, alerts: Sequence[Alert]) -> list[HttpRequest]:
        kept = [a for a in alerts if a.severity_id >= self.min_severity_id]
        events = [envelope(a, host=self.host, source=self.source, sourcetype=self.sourcetype,
                           index=self.index) for a in kept]  # fmt: skip
        headers = {"Authorization": f"Splunk {self.token}", "Content-Type": "application/json"}
        out = []
        start = 0
        for group in batches(events, max_events=self.max_events, max_bytes=self.max_bytes):
            uids = [a.uid for a in kept[start : start + len(group)]]
            start += len(group)
            out.append(HttpRequest("POST", self.url, headers, b"".join(group),
                                   what=f"hec {len(group)} findings ({uids[0]}...)"))
        return out

    def send(self, job: HttpRequest) -> Delivery:
        return interpret(send_http(job, timeout_s=self.timeout_s, context=self.context), job.what)
