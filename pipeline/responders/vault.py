"""Adapter 2: HashiCorp Vault / OpenBao - revoke token accessors, leases and lease prefixes.

Credential references in a command that Vault understands:
``vault-accessor:<accessor>`` → ``PUT /v1/auth/token/revoke-accessor {"accessor": …}``;
``vault-lease:<lease id>`` → ``PUT /v1/sys/leases/lookup`` then ``PUT /v1/sys/leases/revoke``;
and, for every contain, each configured prefix template with ``{identity}`` filled in (the
identity's dynamic secrets) → ``LIST /v1/sys/leases/lookup/<prefix>`` then
``PUT /v1/sys/leases/revoke-prefix/<prefix>``. ``cancel`` does nothing here: revoked secrets
are not restored, the identity gets new ones through its normal login once released.

What was revoked is reported as ``revoked``; what did not exist as ``not_found`` (revocation
is idempotent: both are success). A real server does not say which on the revoke itself: an
unknown accessor gets **200 with the warning** "No token found with this accessor", an
unknown lease or a prefix with nothing under it (or no such mount) gets 204 like a revoked
one. So leases and prefixes are looked up first (400 "invalid lease" / 404: not found) and
the accessor's 200 body is read. A prefix under no mount at all is reported ``not_found``
too: LIST answers it exactly as an empty prefix, and telling them apart would take a read of
``sys/mounts`` the revoking token should not need. Any other refusal (403 outside the
token's policy, 400 for a malformed request) is ``failed``, never revoked or not found.

The request builder is pure; :meth:`VaultAdapter.send` is the thin sender through hvac's HTTP
adapter (so TLS, namespaces and token handling are hvac's).

>>> from pipeline.responders.base import Command
>>> cmd = Command("contain", "r", "c", "svc-etl", "f", "why", ("vault-accessor:acc1", "cred-9"),
...               0, None, False)
>>> a = VaultAdapter("http://127.0.0.1:8200", "root", prefixes=("database/creds/{identity}",))
>>> [(r.method, r.url) for r in a.build(cmd)]  # doctest: +NORMALIZE_WHITESPACE
[('PUT', 'http://127.0.0.1:8200/v1/auth/token/revoke-accessor'),
 ('LIST', 'http://127.0.0.1:8200/v1/sys/leases/lookup/database/creds/svc-etl'),
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
        self._absent: set[str] = set()  # references a lookup found gone, in this command

    def _req(
        self, path: str, body: dict[str, Any] | None = None, method: str = "PUT"
    ) -> HttpRequest:
        headers = {"X-Vault-Token": self.token, "Content-Type": "application/json"}
        if self.namespace:
            headers["X-Vault-Namespace"] = self.namespace
        data = json.dumps(body).encode() if body is not None else b""
        return HttpRequest(method, f"{self.addr}/v1/{path}", headers, data)

    def build(self, cmd: Command) -> list[HttpRequest]:
        self._absent = set()
        if cmd.action != "contain" or cmd.dry_run:
            return []
        out = []
        for ref in cmd.credentials:
            if ref.startswith(ACCESSOR):
                accessor = ref[len(ACCESSOR) :]
                out.append(self._req("auth/token/revoke-accessor", {"accessor": accessor}))
            elif ref.startswith(LEASE):
                lease = {"lease_id": ref[len(LEASE) :]}
                out += [self._req("sys/leases/lookup", lease),
                        self._req("sys/leases/revoke", lease)]  # fmt: skip
        for template in self.prefixes:
            prefix = template.format(identity=urllib.parse.quote(cmd.identity, safe=""))
            out += [self._req(f"sys/leases/lookup/{prefix}", method="LIST"),
                    self._req(f"sys/leases/revoke-prefix/{prefix}")]  # fmt: skip
        return out

    def interpret(self, cmd: Command, req: HttpRequest, resp: HttpResponse) -> Outcome:
        ref = self._ref(req)
        lookup = "/sys/leases/lookup" in req.url
        # Only what the server says means "no such thing": a lease lookup's 400 "invalid
        # lease", a prefix LIST's 404 (no leases under it; a missing mount answers the same),
        # an accessor revoke's 200 warning. Any other 4xx (a missing field, a policy's 403) is
        # a failure to report, not a credential that is gone.
        if lookup and req.method == "PUT" and resp.status == 400 and (
            b"invalid lease" in resp.body.lower()
        ):
            self._absent.add(ref)
            return Outcome(not_found=[ref], detail=f"{ref}: no such lease")
        if lookup and req.method == "LIST" and resp.status == 404:
            self._absent.add(ref)
            return Outcome(not_found=[ref],
                           detail=f"{ref}: no leases under it (or no such mount)")  # fmt: skip
        bad = by_status(resp, f"vault {req.method} {req.url}")
        if bad is not None:
            if bad.status == "failed":
                bad.failed.append((ref, bad.detail))
            return bad
        if lookup:
            return Outcome()  # it exists: the revoke that follows says what happened
        if ref in self._absent:
            return Outcome()  # reported as not found by its lookup; the 204 says nothing
        if resp.status == 200 and _no_token(resp.body):
            return Outcome(not_found=[ref], detail=f"{ref}: no token with this accessor")
        return Outcome(revoked=[ref])

    @staticmethod
    def _ref(req: HttpRequest) -> str:
        body = json.loads(req.body) if req.body else {}
        if "accessor" in body:
            return ACCESSOR + str(body["accessor"])
        if "lease_id" in body:
            return LEASE + str(body["lease_id"])
        for marker in ("/revoke-prefix/", "/sys/leases/lookup/"):
            if marker in req.url:
                return "vault-prefix:" + req.url.split(marker, 1)[1]
        return "vault:" + req.url

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
            # Keep the body: an unknown accessor is a 200 whose warning says so.
            return HttpResponse(200 if resp else 204, json.dumps(resp).encode() if resp else b"")
        return HttpResponse(int(resp.status_code), resp.content or b"")


def _no_token(body: bytes) -> bool:
    """A 200 to revoke-accessor whose warnings say there was no such token."""
    try:
        warnings = json.loads(body or b"{}").get("warnings") or []
    except (ValueError, AttributeError):
        return False
    return any("no token found" in str(w).lower() for w in warnings)
