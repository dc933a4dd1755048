"""Responders from settings: which adapters (the keys a command must be signed with are
:func:`pipeline.control.signing.trusted_keys`)."""

from __future__ import annotations

from typing import Any

from pipeline.errors import ConfigError
from pipeline.responders.base import Adapter

__all__ = ["adapters_from_settings"]


def adapters_from_settings(settings: Any) -> list[Adapter]:
    names = [n.strip() for n in settings.responder_adapters.split(",") if n.strip()]
    out: list[Adapter] = []
    for name in names:
        if name == "custos-broker":
            from pipeline.credentials.broker import load_api_token
            from pipeline.responders.custos_broker import CustosBrokerAdapter

            out.append(CustosBrokerAdapter(settings.broker_url, load_api_token(settings)))
        elif name == "webhook":
            from pipeline.responders.webhook import WebhookAdapter

            if not settings.webhook_url or not settings.webhook_secret:
                raise ConfigError("webhook adapter needs CUSTOS_WEBHOOK_URL and _SECRET")
            out.append(WebhookAdapter(settings.webhook_url, settings.webhook_secret.encode()))
        elif name == "vault":
            from pipeline.responders.vault import VaultAdapter

            if not settings.vault_addr or not settings.vault_token:
                raise ConfigError("vault adapter needs CUSTOS_VAULT_ADDR and _TOKEN")
            prefixes = tuple(p.strip() for p in settings.vault_lease_prefixes.split(",") if p)
            vault = VaultAdapter(
                settings.vault_addr,
                settings.vault_token,
                prefixes=prefixes,
                namespace=settings.vault_namespace,
            )
            out.append(vault)
        elif name == "oauth":
            from pipeline.responders.oauth import OAuthRevocationAdapter

            if not settings.oauth_revocation_url:
                raise ConfigError("oauth adapter needs CUSTOS_OAUTH_REVOCATION_URL")
            out.append(OAuthRevocationAdapter(settings.oauth_revocation_url,
                                              settings.oauth_client_id,
                                              settings.oauth_client_secret))  # fmt: skip
        elif name == "ssf":
            from pathlib import Path

            from pipeline.control.signing import SigningKey
            from pipeline.responders.ssf import SsfTransmitter

            if not settings.ssf_receiver_url or not settings.ssf_audience:
                raise ConfigError("ssf adapter needs CUSTOS_SSF_RECEIVER_URL and _AUDIENCE")
            key_path = (
                Path(settings.ssf_key_file).expanduser()
                if settings.ssf_key_file
                else settings.home_path / "keys" / "ssf.jwk"
            )
            ssf = SsfTransmitter(
                settings.ssf_receiver_url,
                SigningKey.load_or_create(key_path),
                issuer=settings.ssf_issuer,
                audience=settings.ssf_audience,
            )
            out.append(ssf)
        else:
            raise ConfigError(
                f"unknown responder adapter {name!r} (custos-broker, vault, oauth, ssf, webhook)"
            )
    if not out:
        raise ConfigError("CUSTOS_RESPONDER_ADAPTERS names no adapter")
    return out
