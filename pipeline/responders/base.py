"""What every responder adapter shares: the parsed command, HTTP requests as data, results.

An adapter is a pure *request builder* (command → :class:`HttpRequest` s) plus a pure
*interpreter* (request, response → :class:`Outcome`); :func:`send_http` is the one thin I/O
sender they all use, so each builder is tested on exact requests without a network, and the
sender once.

>>> cmd = Command.from_message({"headers": {"request_id": "r-1", "created": 5, "from": "w"},
...     "body": {"openc2": {"request": {"action": "contain", "command_id": "c-1",
...     "target": {"x-custos:subject": {"format": "opaque", "id": "agt-1"}},
...     "args": {"start_time": 5, "duration": 60_000, "x-custos": {"finding_uid": "f-1",
...     "reason": "misuse", "credentials": ["cred-1"], "dry_run": False}}}}}})
>>> cmd.identity, cmd.command_id, cmd.until_ms, cmd.credentials
('agt-1', 'c-1', 60005, ('cred-1',))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pipeline import http
from pipeline.http import HttpRequest, HttpResponse
from pipeline.quarantine.commands import request_of, subject_of

__all__ = ["Adapter", "Command", "HttpRequest", "HttpResponse", "Outcome", "send_http"]


@dataclass(frozen=True, slots=True)
class Command:
    """The parts of a verified OpenC2 command an adapter acts on."""

    action: Literal["contain", "cancel"]
    request_id: str
    command_id: str  # contain: its own id; cancel: the contain command it cancels
    identity: str
    finding_uid: str | None
    reason: str
    credentials: tuple[str, ...]
    start_ms: int
    until_ms: int | None
    dry_run: bool

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Command:
        req = request_of(message)
        args = req.get("args") or {}
        ext = args.get("x-custos") or {}
        created = int(message["headers"]["created"])
        start = int(args.get("start_time", created))
        if req["action"] == "contain":
            command_id = str(req["command_id"])
            duration = args.get("duration")
            until = start + int(duration) if duration is not None else None
        else:
            command_id = str(req["target"]["command"])
            until = None
        return cls(
            action=req["action"], request_id=str(message["headers"]["request_id"]),
            command_id=command_id, identity=subject_of(message),
            finding_uid=ext.get("finding_uid"), reason=str(ext.get("reason", "")),
            credentials=tuple(str(c) for c in ext.get("credentials", ())), start_ms=start,
            until_ms=until, dry_run=bool(ext.get("dry_run", False)),
        )  # fmt: skip


@dataclass(slots=True)
class Outcome:
    """One adapter's result for one command (per-credential, as the final response reports).

    ``status``: ``ok`` (done, or nothing to do), ``retry`` (5xx / no answer: try again later),
    ``failed`` (a 4xx or a refusal that retrying will not fix).
    """

    status: Literal["ok", "retry", "failed"] = "ok"
    revoked: list[str] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)  # already gone: success
    failed: list[tuple[str, str]] = field(default_factory=list)  # (reference, reason)
    would_revoke: list[str] = field(default_factory=list)  # dry run
    detail: str = ""

    def worse(self, other: Outcome) -> Outcome:
        """Merge two partial outcomes (the worse status wins)."""
        rank = {"ok": 0, "retry": 1, "failed": 2}
        status = self.status if rank[self.status] >= rank[other.status] else other.status
        return Outcome(
            status, self.revoked + other.revoked, self.not_found + other.not_found,
            self.failed + other.failed, self.would_revoke + other.would_revoke,
            "; ".join(d for d in (self.detail, other.detail) if d),
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status,
            "revoked": self.revoked,
            "not_found": self.not_found,
            "failed": [{"ref": r, "reason": why} for r, why in self.failed],
        }
        if self.would_revoke:
            out["would_revoke"] = self.would_revoke
        if self.detail:
            out["detail"] = self.detail
        return out


class Adapter(Protocol):
    name: str

    def build(self, cmd: Command) -> list[HttpRequest]: ...

    def interpret(self, cmd: Command, req: HttpRequest, resp: HttpResponse) -> Outcome: ...


def by_status(resp: HttpResponse, what: str) -> Outcome | None:
    """The common HTTP outcomes: None for a 2xx (the adapter reads the body itself)."""
    if 200 <= resp.status < 300:
        return None
    if resp.status == 0 or resp.status >= 500 or resp.status == 429:
        return Outcome("retry", detail=f"{what}: {resp.status or resp.error}")
    return Outcome("failed", detail=f"{what}: HTTP {resp.status} {resp.body[:200]!r}")


def send_http(req: HttpRequest, timeout_s: float = 5.0) -> HttpResponse:
    """The thin sender (:func:`pipeline.http.send_http`) with a responder's shorter timeout."""
    return http.send_http(req, timeout_s=timeout_s)
