"""What every alert output shares: the alert as read, HTTP requests as data, the delivery result,
the one thin HTTP sender, and the few finding fields every output shows.

An output is a pure *builder* (alerts → requests or frames, no I/O) plus a thin *sender* (one
request → :class:`Delivery`); the runner (:mod:`pipeline.outputs.runner`) retries and decides
when the input may be committed.

>>> a = Alert.of(b'{"finding_info": {"uid": "f-1", "title": "t"}, "severity_id": 4, "time": 5}')
>>> a.uid, a.severity_id, a.finding["time"]
('f-1', 4, 5)
>>> fit("x" * 10, 6)
'xxx...'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import msgspec

from pipeline.errors import CustosError
from pipeline.http import HttpRequest, HttpResponse, send_http

__all__ = [
    "Alert",
    "Delivery",
    "HttpRequest",
    "HttpResponse",
    "Output",
    "OutputError",
    "by_http_status",
    "fit",
    "send_http",
]


class OutputError(CustosError):
    """An alert output is misconfigured, or kept refusing past its retries."""


@dataclass(frozen=True, slots=True)
class Alert:
    """One finding as read from the alerts topic: its bytes as published and the parsed dict."""

    raw: bytes
    finding: dict[str, Any]

    @classmethod
    def of(cls, raw: bytes) -> Alert:
        """Parse one alerts-topic value; raises OutputError if it is not a JSON object."""
        try:
            doc = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            raise OutputError(f"not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise OutputError("not a JSON object")
        return cls(raw, doc)

    @classmethod
    def from_finding(cls, finding: dict[str, Any]) -> Alert:
        return cls(msgspec.json.encode(finding), finding)

    @property
    def info(self) -> dict[str, Any]:
        got = self.finding.get("finding_info")
        return got if isinstance(got, dict) else {}

    @property
    def uid(self) -> str:
        return str(self.info.get("uid") or "")

    @property
    def title(self) -> str:
        return str(self.info.get("title") or "Custos finding")

    @property
    def severity_id(self) -> int:
        value = self.finding.get("severity_id")
        return value if isinstance(value, int) else 0

    @property
    def custos(self) -> dict[str, Any]:
        got = (self.finding.get("unmapped") or {}).get("custos")
        return got if isinstance(got, dict) else {}

    @property
    def identity(self) -> str:
        """The identity the finding is about (the actor in its evidence)."""
        for ev in self.finding.get("evidences") or ():
            uid = ((ev or {}).get("actor") or {}).get("user", {}).get("uid")
            if uid:
                return str(uid)
        return ""

    @property
    def identity_kind(self) -> str:
        return str(self.custos.get("identity_kind") or "")

    @property
    def rules(self) -> list[dict[str, Any]]:
        return [r for r in self.custos.get("rules") or () if isinstance(r, dict)]

    @property
    def explanation(self) -> list[str]:
        """Why, in Custos's words: rule texts, then the behavioural contributions."""
        out = [str(r.get("text") or r.get("rule")) for r in self.rules]
        out += [str(c) for c in self.custos.get("contributions") or ()]
        return out or [str(self.info.get("desc") or self.finding.get("message") or "")]

    @property
    def time_ms(self) -> int:
        value = self.finding.get("time")
        return value if isinstance(value, int) else 0


@dataclass(frozen=True, slots=True)
class Delivery:
    """One send's result.

    ``ok``: accepted. ``retry``: try again later (no answer, 429, 5xx, and refusals of the
    endpoint as a whole - a bad token or a gone URL - so that they stop the runner uncommitted
    instead of dropping every alert). ``failed``: this alert can never be accepted (a 400 on
    its content): logged, and the input is committed past it.
    """

    status: Literal["ok", "retry", "failed"]
    detail: str = ""
    retry_after_s: float | None = None  # the receiver's Retry-After, if it gave one


# Refusals of the endpoint itself (credentials, URL, channel archived): retrying the next alert
# would fail alike, so they must not be "failed" (committed past); see Delivery.
_ENDPOINT_WIDE = frozenset({401, 403, 404, 410})


def by_http_status(resp: HttpResponse, what: str) -> Delivery | None:
    """The common HTTP outcomes; None for a 2xx (the output reads the body itself)."""
    if 200 <= resp.status < 300:
        return None
    text = f"{what}: HTTP {resp.status or resp.error} {resp.body[:200]!r}"
    if resp.status in (0, 408, 429) or resp.status >= 500 or resp.status in _ENDPOINT_WIDE:
        return Delivery("retry", text, resp.retry_after_s)
    return Delivery("failed", text)


def fit(text: str, limit: int, escape: Callable[[str], str] = str) -> str:
    """``escape(text)`` cut to at most ``limit`` characters, never inside an escape sequence
    (the raw text is cut, then escaped again), ending in "..." when cut."""
    out = escape(text)
    if len(out) <= limit:
        return out
    raw = text[: max(0, limit - 3)]
    while raw and len(out := escape(raw) + "...") > limit:
        raw = raw[: len(raw) - max(1, len(out) - limit)]
    return out if raw else "..."[:limit]


class Output(Protocol):
    """An alert output: a pure build of what to send, a thin send of one job of it."""

    name: str

    def build(self, alerts: Sequence[Alert]) -> list[Any]: ...

    def send(self, job: Any) -> Delivery: ...
