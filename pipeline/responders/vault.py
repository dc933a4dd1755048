"""Adapter 2: HashiCorp Vault - revoke token accessors and lease prefixes (through ``hvac``).

Credential references in a command that Vault understands:
``vault-accessor:<accessor>`` → ``PUT /v1/auth/token/revoke-accessor {"accessor": …}`` and
``vault-lease:<lease id>`` → ``PUT /v1/sys/leases/revoke {"lease_id": …}``; and, for every
contain, ``PUT /v1/sys/leases/revoke-prefix/<prefix>`` for each configured prefix template with
``{identity}`` filled in (the identity's dynamic secrets). Vault answers 204 on success; an
accessor or lease it does not know is reported as ``not_found`` (revocation is idempotent).
``cancel`` does nothing here: revoked secrets are not restored, the identity gets new ones
through its normal login once released.

The request builder is pure; :meth:`VaultAdapter.send` is the thin sender through hvac's HTTP
adapter (so TLS, namespaces and token handling are hvac's).

>>> from pipeline.responders.base import Command
>>> cmd = Command("contain", "r", "c", "svc-etl", "f", "why", ("vault-accessor:acc1", "cred-9"),
...               0, None, False)
>>> a = VaultAdapter("http://127.0.0.1:8200", "root", prefixes=("database/creds/{identity}",))
>>> [(r.method, r.url) for r in a.build(cmd)]  # doctest: +NORMALIZE_WHITESPACE
[('PUT', 'http://127.0.0.1:8200/v1/auth/token/revoke-accessor'),
 ('PUT', 'http://127.0.0.1:8200/v1/sys/leases/revoke-prefix/database/creds/svc-etl')]
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from pipeline.responders.base import Command, HttpRequest, HttpResponse, Outcome, by_status

__all__ = ["VaultAdapter"]

ACCESSOR = "vault-accessor:"
LEASE = "vault-lease:"


class VaultAdapter:
    name = "vault"

    def __init__(
        self, addr: str, token: str, *, prefixes: tuple[str, ...] = (), namespace: str = ""
    ) -> None:
        self.addr = addr.rstrip("/")
        self.token = token
        self.prefixes = prefixes
        self.namespace = namespace
        self._client: Any = None

    def _req(self, path: str, body: dict[str, Any] | None = None) -> HttpRequest:
        headers = {"X-Vault-Token": self.token, "Content-Type": "application/json"}
        if self.namespace:
            headers["X-Vault-Namespace"] = self.namespace
        data = json.dumps(body).encode() if body is not None else b""
        return HttpRequest("PUT", f"{self.addr}/v1/{path}", headers, data)

    def build(self, cmd: Command) -> list[HttpRequest]:
        if cmd.action != "contain" or cmd.dry_run:
            return []
        out = []
        for ref in cmd.credentials:
            if ref.startswith(ACCESSOR):
                accessor = ref[len(ACCESSOR) :]
                out.append(self._req("auth/token/revoke-accessor", {"accessor": accessor}))
            elif ref.startswith(LEASE):
                out.append(self._req("sys/leases/revoke", {"lease_id": ref[len(LEASE) :]}))
        for template in self.prefixes:
            prefix = template.format(identity=urllib.parse.quote(cmd.identity, safe=""))
            out.append(self._req(f"sys/leases/revoke-prefix/{prefix}"))
        return out

    def interpret(self, cmd: Command, req: HttpRequest, resp: HttpResponse) -> Outcome:
        ref = self._ref(req)
        if resp.status == 400 and b"invalid" in resp.body.lower():
            return Outcome(not_found=[ref])  # unknown accessor / lease: nothing left to revoke
        bad = by_status(resp, f"vault {req.url}")
        if bad is not None:
            if bad.status == "failed":
                bad.failed.append((ref, bad.detail))
            return bad
        return Outcome(revoked=[ref])

    @staticmethod
    def _ref(req: HttpRequest) -> str:
        body = json.loads(req.body) if req.body else {}
        if "accessor" in body:
            return ACCESSOR + str(body["accessor"])
        if "lease_id" in body:
            return LEASE + str(body["lease_id"])
        return "vault-prefix:" + req.url.split("/revoke-prefix/", 1)[-1]

    def send(self, req: HttpRequest) -> HttpResponse:
        """The thin sender: hvac's adapter, its exceptions mapped back to HTTP statuses."""
        import hvac
        from hvac import exceptions

        if self._client is None:
            self._client = hvac.Client(url=self.addr, token=self.token,
                                       namespace=self.namespace or None, timeout=5)  # fmt: skip
        path = req.url[len(self.addr) :]
        body = json.loads(req.body) if req.body else None
        try:
            resp = self._client.adapter.request(req.method, path, json=body)
        except exceptions.VaultError as exc:
            code = {exceptions.InvalidRequest: 400, exceptions.Unauthorized: 401,
                    exceptions.Forbidden: 403, exceptions.InvalidPath: 404,
                    exceptions.RateLimitExceeded: 429}.get(type(exc), 500)  # fmt: skip
            return HttpResponse(code, str(exc).encode())
        except OSError as exc:  # requests' ConnectionError is an OSError
            return HttpResponse(0, b"", repr(exc))
        if resp is None or isinstance(resp, dict):  # hvac parsed a JSON body: a 200
            return HttpResponse(200 if resp else 204, b"")
        return HttpResponse(int(resp.status_code), resp.content or b"")
