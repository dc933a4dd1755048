"""Adapter 1: the Custos credential broker - revoke every live credential, block issuance.

``contain`` → ``POST /v1/identities/{uid}/block`` (revoke + block until the quarantine ends, tagged
with the command id); dry run → ``GET /v1/identities/{uid}`` (what would be revoked).
``cancel`` → ``DELETE /v1/identities/{uid}/block?command_id=<contain id>``: lifts only the block
that command created, so a stale release cannot end a newer quarantine.

Credentials the command names but the broker no longer holds live count as ``not_found``
(success: revocation is idempotent); those an earlier attempt of the same command revoked (a
responder killed before it answered) are reported as revoked.

>>> from pipeline.responders.base import Command
>>> cmd = Command("contain", "r-1", "c-1", "agt-1", "f-1", "misuse", ("cred-1",), 0, 60_000,
...               False)
>>> [req] = CustosBrokerAdapter("http://127.0.0.1:8787", "tok").build(cmd)
>>> req.method, req.url, req.headers["Authorization"]
('POST', 'http://127.0.0.1:8787/v1/identities/agt-1/block', 'Bearer tok')
"""

from __future__ import annotations

import json
import urllib.parse

from pipeline.responders.base import Command, HttpRequest, HttpResponse, Outcome, by_status

__all__ = ["CustosBrokerAdapter"]


class CustosBrokerAdapter:
    name = "custos-broker"

    def __init__(self, base_url: str, api_token: str, caller: str = "custos-responder") -> None:
        self.base_url = base_url.rstrip("/")
        self.api_token = api_token
        self.caller = caller

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_token}", "X-Custos-Caller": self.caller,
                "Content-Type": "application/json"}  # fmt: skip

    def _identity_url(self, identity: str) -> str:
        return f"{self.base_url}/v1/identities/{urllib.parse.quote(identity, safe='')}"

    def build(self, cmd: Command) -> list[HttpRequest]:
        url = self._identity_url(cmd.identity)
        if cmd.action == "cancel":
            q = urllib.parse.urlencode({"command_id": cmd.command_id})
            return [HttpRequest("DELETE", f"{url}/block?{q}", self._headers())]
        if cmd.dry_run:
            return [HttpRequest("GET", url, self._headers())]
        body = {
            "reason": f"quarantine {cmd.command_id} (finding {cmd.finding_uid}): {cmd.reason}",
            "command_id": cmd.command_id,
            "until": cmd.until_ms / 1000 if cmd.until_ms is not None else None,
            "revoke": True,
        }
        return [HttpRequest("POST", f"{url}/block", self._headers(), json.dumps(body).encode())]

    def interpret(self, cmd: Command, req: HttpRequest, resp: HttpResponse) -> Outcome:
        bad = by_status(resp, f"{req.method} {req.url}")
        if bad is not None:
            return bad
        try:
            doc = json.loads(resp.body or b"{}")
        except ValueError:
            return Outcome("retry", detail="broker answered with invalid JSON")
        if cmd.action == "cancel":
            lifted = bool(doc.get("unblocked"))
            return Outcome(detail="block lifted" if lifted else "no block of this command")
        if cmd.dry_run:
            return Outcome(would_revoke=list(doc.get("live", [])), detail="dry run")
        revoked = [str(j) for j in doc.get("revoked", [])]
        # A responder killed after revoking re-runs the command: what its first attempt
        # revoked is still this command's doing, not "not found".
        earlier = [str(j) for j in doc.get("revoked_earlier", [])]
        gone = [c for c in cmd.credentials if c not in revoked and c not in earlier]
        detail = "blocked" if doc.get("newly_blocked") else "block refreshed"
        if earlier:
            detail += f"; {len(earlier)} revoked by an earlier attempt of this command"
        return Outcome(revoked=revoked + earlier, not_found=gone, detail=detail)
