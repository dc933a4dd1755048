"""A small OpenID Connect provider for the console's single sign-on tests (loopback only).

Discovery, an authorization endpoint that signs in ``user`` at once, a token endpoint that
checks the client's secret, the code, the redirect URI and the PKCE verifier, and a JWKS.
``tamper`` makes it misbehave the way a hostile or broken provider would: an ID token signed
by another key, for another audience, from another issuer, with another nonce, expired, or
no ID token at all.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import uvicorn
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from pipeline.ops.localhost import free_port


@dataclass
class FakeProvider:
    host: str = "localhost"  # another site than the console's 127.0.0.1 (a real cross-site hop)
    client_id: str = "custos-console"
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    user: dict[str, Any] = field(default_factory=lambda: {"sub": "u-1001",
                                                          "preferred_username": "alice"})
    tamper: str | None = None
    port: int = field(default_factory=free_port)
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "k1"}))
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    token_calls: int = 0

    @property
    def issuer(self) -> str:
        return f"http://{self.host}:{self.port}"

    def app(self) -> Starlette:
        async def discovery(request: Request) -> Response:
            return JSONResponse({
                "issuer": self.issuer if self.tamper != "discovery_issuer" else "http://evil",
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            })  # fmt: skip

        async def authorize(request: Request) -> Response:
            q = request.query_params
            if q.get("client_id") != self.client_id or q.get("code_challenge_method") != "S256":
                return JSONResponse({"error": "invalid_request"}, status_code=400)
            code = secrets.token_urlsafe(16)
            self.codes[code] = {"nonce": q.get("nonce", ""), "challenge": q["code_challenge"],
                                "redirect_uri": q["redirect_uri"]}  # fmt: skip
            back = {"code": code, "state": q.get("state", "")}
            return RedirectResponse(f"{q['redirect_uri']}?{urlencode(back)}", status_code=302)

        async def token(request: Request) -> Response:
            self.token_calls += 1
            form = await request.form()
            basic = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
            if request.headers.get("authorization") != f"Basic {basic}":
                return JSONResponse({"error": "invalid_client"}, status_code=401)
            grant = self.codes.pop(str(form.get("code")), None)
            verifier = str(form.get("code_verifier") or "")
            challenge = base64.urlsafe_b64encode(
                hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()  # fmt: skip
            if (grant is None or grant["challenge"] != challenge
                    or grant["redirect_uri"] != form.get("redirect_uri")):  # fmt: skip
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            now = int(time.time())
            claims = {"iss": self.issuer, "aud": self.client_id, "iat": now, "exp": now + 300,
                      "nonce": grant["nonce"], **self.user}  # fmt: skip
            key = self.key
            if self.tamper == "key":
                key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
            elif self.tamper == "aud":
                claims["aud"] = "someone-else"
            elif self.tamper == "iss":
                claims["iss"] = "http://evil.example"
            elif self.tamper == "nonce":
                claims["nonce"] = "replayed"
            elif self.tamper == "expired":
                claims["iat"], claims["exp"] = now - 4000, now - 3600
            body: dict[str, Any] = {"access_token": secrets.token_urlsafe(16),
                                    "token_type": "Bearer", "expires_in": 300}  # fmt: skip
            if self.tamper != "no_id_token":
                body["id_token"] = jwt.encode({"alg": "RS256", "kid": "k1"}, claims, key)
            return JSONResponse(body)

        async def jwks(request: Request) -> Response:
            return JSONResponse({"keys": [self.key.as_dict(private=False)]})

        return Starlette(routes=[
            Route("/.well-known/openid-configuration", discovery),
            Route("/authorize", authorize),
            Route("/token", token, methods=["POST"]),
            Route("/jwks", jwks),
        ])  # fmt: skip

    def start(self) -> uvicorn.Server:
        server = uvicorn.Server(uvicorn.Config(self.app(), host="127.0.0.1", port=self.port,
                                               log_level="warning"))  # fmt: skip
        threading.Thread(target=server.run, daemon=True).start()
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake OIDC provider did not start")
            time.sleep(0.05)
        return server
