"""Single sign-on for the console: OpenID Connect, authorization code flow with PKCE (Authlib).

Optional: ``custos console --oidc-issuer URL --oidc-client-id ID``, the client secret from
``CUSTOS_CONSOLE_OIDC_SECRET`` (never a command-line argument, which other users can read).
The provider is found by discovery (``/.well-known/openid-configuration``). Authlib checks
``state`` (kept in a short-lived signed cookie), exchanges the code with the PKCE verifier
(S256), and verifies the ID token: signature against the provider's JWKS, ``iss``, ``aud``,
``exp``, ``nonce``. This module then insists on an ID token (an OAuth-only answer is not a
login) and on discovery naming the configured issuer; :class:`~pipeline.console.accounts.
Accounts` maps ``(iss, sub)`` to a linked local account, whose role applies.

The handshake cookie is ``SameSite=Lax``: the provider's redirect back is a cross-site
navigation, which RFC 6265bis lets browsers send only Lax cookies with. The session cookie stays
Strict, so the callback answers with a page that moves on to the queue by itself rather than a
redirect: a redirect that continues a chain begun on another site may count as cross-site, a
navigation the console's own page starts never does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pipeline.errors import ConfigError

__all__ = ["OidcConfig", "OidcLogin", "OidcRefused", "trusted_url"]

log = logging.getLogger("custos.console.oidc")


def trusted_url(url: str) -> bool:
    """https, or plain http to this machine's loopback only (tests, a local provider)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.scheme == "https" or (
        parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1"))


class OidcRefused(Exception):
    """The provider's answer does not log anyone in (the message is safe to show)."""


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    client_id: str
    client_secret: str
    public_url: str  # this console's own base URL, as the provider redirects back to it
    label: str = "single sign-on"
    scope: str = "openid profile email"

    def __post_init__(self) -> None:
        for name, url in (("issuer", self.issuer), ("public URL", self.public_url)):
            if not trusted_url(url):
                raise ConfigError(f"the OIDC {name} must be https:// (http only on loopback)")
        if not self.client_id or not self.client_secret:
            raise ConfigError("OIDC needs a client id and CUSTOS_CONSOLE_OIDC_SECRET")

    @property
    def redirect_uri(self) -> str:
        return self.public_url.rstrip("/") + "/login/oidc/callback"


class OidcLogin:
    """Starts the sign-in (a redirect to the provider) and finishes it (the verified subject)."""

    def __init__(self, config: OidcConfig) -> None:
        from authlib.integrations.starlette_client import OAuth

        self.config = config
        self.oauth = OAuth()
        self.client: Any = self.oauth.register(
            "idp",
            server_metadata_url=config.issuer.rstrip("/") + "/.well-known/openid-configuration",
            client_id=config.client_id,
            client_secret=config.client_secret,
            client_kwargs={"scope": config.scope, "code_challenge_method": "S256",
                           "timeout": 10},
        )

    async def start(self, request: Any) -> Any:
        """The redirect to the provider's authorization endpoint (state, nonce, PKCE)."""
        return await self.client.authorize_redirect(request, self.config.redirect_uri)

    async def finish(self, request: Any) -> tuple[str, str, dict[str, Any]]:
        """``(issuer, subject, claims)`` of the verified ID token; :class:`OidcRefused` else."""
        from authlib.integrations.starlette_client import OAuthError

        try:
            token = await self.client.authorize_access_token(request)
        except OAuthError as exc:  # state mismatch, the provider's error, a refused code
            raise OidcRefused(f"the identity provider's answer was refused: {exc.error}") from exc
        except Exception as exc:  # a bad signature, audience, nonce, expiry, or no JWKS
            log.warning("OIDC ID token refused: %r", exc)
            raise OidcRefused("the identity provider's ID token did not verify") from exc
        claims = token.get("userinfo")
        if not claims:
            raise OidcRefused("the identity provider sent no ID token")
        metadata = await self.client.load_server_metadata()
        if metadata.get("issuer") != self.config.issuer or claims.get("iss") != self.config.issuer:
            raise OidcRefused("the identity provider is not the configured issuer")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise OidcRefused("the ID token names no subject")
        return self.config.issuer, sub, dict(claims)
