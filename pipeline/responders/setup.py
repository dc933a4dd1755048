"""Responders from settings: which adapters, which keys a command must be signed with."""

from __future__ import annotations

from typing import Any

import msgspec
from joserfc.jwk import KeySet

from pipeline.errors import ConfigError
from pipeline.responders.base import Adapter

__all__ = [
    "adapters_from_settings", "analyst_key", "analyst_keys", "trusted_keys", "with_analysts",
]  # fmt: skip


def trusted_keys(settings: Any) -> KeySet:
    """The JWKS of command signers (``command_trusted_jwks``, or the worker's public key)."""
    path = settings.command_jwks_path
    if not path.exists():
        raise ConfigError(
            f"no trusted command keys at {path}: start the worker once (it writes its public "
            "key there) or set CUSTOS_COMMAND_TRUSTED_JWKS"
        )
    try:
        return KeySet.import_key_set(msgspec.json.decode(path.read_bytes()))
    except (ValueError, msgspec.DecodeError) as exc:
        raise ConfigError(f"unreadable JWKS {path}: {exc}") from None


def analyst_keys(settings: Any) -> KeySet | None:
    """The JWKS of analysts (``analyst_trusted_jwks``); None when there is none yet."""
    path = settings.analyst_jwks_path
    if not path.exists():
        return None
    try:
        return KeySet.import_key_set(msgspec.json.decode(path.read_bytes()))
    except (ValueError, msgspec.DecodeError) as exc:
        raise ConfigError(f"unreadable JWKS {path}: {exc}") from None


def analyst_key(settings: Any) -> Any:
    """This analyst's own key (``analyst_key_file``; created once, mode 0600).

    Its public half is added to the analysts' JWKS (``analyst_trusted_jwks``) that responders
    and workers trust: convenient on one machine; in production whoever admits analysts
    lists their keys there, not the analysts themselves.
    """
    from pipeline.credentials.tokens import SigningKey

    key = SigningKey.load_or_create(settings.analyst_key_path)
    path = settings.analyst_jwks_path
    known = msgspec.json.decode(path.read_bytes()) if path.exists() else {"keys": []}
    if not any(k.get("kid") == key.kid for k in known.get("keys", [])):
        known["keys"] = [*known.get("keys", []), *key.jwks()["keys"]]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(msgspec.json.encode(known))
        tmp.replace(path)
    return key


def with_analysts(commands: KeySet, analysts: KeySet | None) -> KeySet:
    """Command keys and analysts' keys together (who may sign a message at all)."""
    if analysts is None:
        return commands
    return KeySet([*commands.keys, *analysts.keys])


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

            from pipeline.credentials.tokens import SigningKey
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
