"""Adapter 5: a generic webhook - the command as signed JSON for any system that takes one.

``POST <url>`` with a canonical JSON body (sorted keys) and
``X-Custos-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`` plus
``X-Custos-Timestamp`` (the receiver rejects stale timestamps, so a captured request cannot be
replayed later) and ``Idempotency-Key: <request_id>``. 2xx = done, 5xx / no answer = retry,
other 4xx = failed.

>>> from pipeline.responders.base import Command
>>> cmd = Command("contain", "r-1", "c-1", "agt-1", "f-1", "misuse", (), 0, None, False)
>>> [req] = WebhookAdapter("http://127.0.0.1:9/hook", b"s3cret", clock=lambda: 1_000).build(cmd)
>>> verify_signature(b"s3cret", req.headers["X-Custos-Timestamp"], req.body,
...                  req.headers["X-Custos-Signature"])
True
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable

import msgspec

from pipeline.responders.base import Command, HttpRequest, HttpResponse, Outcome, by_status

__all__ = ["WebhookAdapter", "verify_signature"]


def _mac(secret: bytes, timestamp: str, body: bytes) -> str:
    return (
        "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    )


def verify_signature(secret: bytes, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver checks (constant time)."""
    return hmac.compare_digest(_mac(secret, timestamp, body), signature)


class WebhookAdapter:
    name = "webhook"

    def __init__(self, url: str, secret: bytes, *, clock: Callable[[], float] = time.time) -> None:
        if not secret:
            raise ValueError("a webhook needs a secret to sign with")
        self.url = url
        self.secret = secret
        self.clock = clock

    def build(self, cmd: Command) -> list[HttpRequest]:
        body = msgspec.json.encode(
            {
                "action": cmd.action,
                "identity": cmd.identity,
                "command_id": cmd.command_id,
                "request_id": cmd.request_id,
                "finding_uid": cmd.finding_uid,
                "reason": cmd.reason,
                "credentials": list(cmd.credentials),
                "until_ms": cmd.until_ms,
                "dry_run": cmd.dry_run,
            },
            order="sorted",
        )
        ts = str(int(self.clock()))
        headers = {
            "Content-Type": "application/json",
            "X-Custos-Timestamp": ts,
            "X-Custos-Signature": _mac(self.secret, ts, body),
            "Idempotency-Key": cmd.request_id,
        }
        return [HttpRequest("POST", self.url, headers, body)]

    def interpret(self, cmd: Command, req: HttpRequest, resp: HttpResponse) -> Outcome:
        bad = by_status(resp, f"webhook {self.url}")
        if bad is not None:
            return bad
        return Outcome(detail=f"webhook accepted ({resp.status})")
