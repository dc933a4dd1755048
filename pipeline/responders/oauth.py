"""Adapter 3: an OAuth 2.0 token revocation endpoint (RFC 7009).

For every credential reference ``oauth:<token>`` in a contain command: ``POST <endpoint>`` with
``application/x-www-form-urlencoded`` body ``token=…&token_type_hint=…`` and HTTP Basic client
authentication. RFC 7009 §2.2: 200 whether the token was valid or not (so revoking twice is
fine); 503 means try again later; an ``unsupported_token_type`` 400 is a permanent failure.

>>> from pipeline.responders.base import Command
>>> cmd = Command("contain", "r", "c", "usr-1", "f", "why", ("oauth:tok-1", "cred-2"), 0, None,
...               False)
>>> [req] = OAuthRevocationAdapter("http://127.0.0.1:9/revoke", "custos", "pw").build(cmd)
>>> req.body, req.headers["Authorization"]
(b'token=tok-1&token_type_hint=access_token', 'Basic Y3VzdG9zOnB3')
"""

from __future__ import annotations

import base64
import urllib.parse

from pipeline.responders.base import Command, HttpRequest, HttpResponse, Outcome, by_status

__all__ = ["OAuthRevocationAdapter"]

PREFIX = "oauth:"


class OAuthRevocationAdapter:
    name = "oauth"

    def __init__(
        self, endpoint: str, client_id: str, client_secret: str, hint: str = "access_token"
    ) -> None:
        self.endpoint = endpoint
        basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self._auth = f"Basic {basic}"
        self.hint = hint

    def build(self, cmd: Command) -> list[HttpRequest]:
        if cmd.action != "contain" or cmd.dry_run:
            return []
        out = []
        for ref in cmd.credentials:
            if ref.startswith(PREFIX):
                body = urllib.parse.urlencode(
                    {"token": ref[len(PREFIX) :], "token_type_hint": self.hint}
                ).encode()
                headers = {"Authorization": self._auth,
                           "Content-Type": "application/x-www-form-urlencoded"}  # fmt: skip
                out.append(HttpRequest("POST", self.endpoint, headers, body))
        return out

    def interpret(self, cmd: Command, req: HttpRequest, resp: HttpResponse) -> Outcome:
        token = urllib.parse.parse_qs(req.body.decode())["token"][0]
        ref = PREFIX + token[:6] + "…"  # never echo a whole token into acks and logs
        bad = by_status(resp, f"RFC 7009 {self.endpoint}")
        if bad is not None:
            if bad.status == "failed":
                bad.failed.append((ref, bad.detail))
            return bad
        return Outcome(revoked=[ref])
