"""Signed messages, one module: keys, the JWS framing of every signed kind, who is trusted.

Custos signs five kinds of message with Ed25519 compact JWS (RFC 7515), each with its own
``typ`` so that a signature made for one kind is never accepted as another (RFC 8725 §3.11):

====================  ==============================  =========================================
kind                  ``typ``                         payload (module)
====================  ==============================  =========================================
task credential       :data:`TASK_TYP`                ``TaskClaims`` (credentials.tokens)
quarantine command    :data:`COMMAND_TYP`             OpenC2 message (quarantine.commands)
analyst feedback      :data:`FEEDBACK_TYP`            ``Feedback`` (control.feedback)
agent-model update    :data:`AGENT_MODEL_UPDATE_TYP`  ``AgentModelUpdate`` (scores.agent_models)
model announcement    :data:`ANNOUNCEMENT_TYP`        ``Announcement`` (models.runtime)
====================  ==============================  =========================================

The payload types are plain structs with plain decoders, so the detection core reads them
without JWS code; this module puts the signature on and takes it off. Feedback and agent-model
updates are framed here (:func:`sign_feedback`, :func:`verify_agent_model_update`, ...); the
other three kinds check more than a signature (a credential's holder and task, a command's
window and approver, a model's manifest) and do so in their own modules on top of
:func:`sign_compact` / :func:`verify_compact`.

Keys: :func:`command_key` is the worker's (created on first run, its public JWKS written
beside it); :func:`trusted_keys` the JWKS a command, announcement or update must be signed by;
:func:`analyst_key` / :func:`analyst_keys` the analysts'. Audit checkpoints and model
manifests are signed with raw Ed25519 keys (:mod:`pipeline.control.keys`), not JWS.

>>> k = SigningKey.generate("k1")
>>> verify_compact(sign_compact(b"hi", k, FEEDBACK_TYP), k.public_keys(), FEEDBACK_TYP)
b'hi'
>>> verify_compact(sign_compact(b"hi", k, FEEDBACK_TYP), k.public_keys(), COMMAND_TYP)
Traceback (most recent call last):
...
pipeline.control.signing.SignedMessageError: malformed: typ 'custos-feedback+jws', not ...
"""

from __future__ import annotations

import os
import secrets
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import msgspec
from joserfc import jws
from joserfc.errors import DecodeError, JoseError, SecurityWarning
from joserfc.jwk import KeySet, OKPKey

from pipeline.control import feedback
from pipeline.control.feedback import Feedback
from pipeline.errors import ConfigError, CustosError, InvalidEvent
from pipeline.scores.agent_models import (
    AgentModelRegistry,
    AgentModelUpdate,
    InvalidAgentModelUpdate,
    decode_update,
    encode_update,
)

__all__ = [
    "AGENT_MODEL_UPDATE_TYP",
    "ALG",
    "ANNOUNCEMENT_TYP",
    "COMMAND_TYP",
    "FEEDBACK_MAX_AGE_MS",
    "FEEDBACK_TYP",
    "TASK_TYP",
    "VERIFY_ALGS",
    "SignedMessageError",
    "SigningKey",
    "analyst_key",
    "analyst_keys",
    "apply_signed_agent_model_updates",
    "command_key",
    "publish_analyst_key",
    "sign_agent_model_update",
    "sign_compact",
    "sign_feedback",
    "trusted_keys",
    "verify_agent_model_update",
    "verify_compact",
    "verify_feedback",
    "verifying_keys",
    "with_analysts",
]

#: What Custos signs with: RFC 8037's ``EdDSA`` (with an Ed25519 key), which mainstream JWT
#: libraries and SSF receivers accept (PyJWT, golang-jwt); RFC 9864's fully-specified
#: ``Ed25519`` is refused by them today. Both verify (:data:`VERIFY_ALGS`): messages signed
#: before the switch, and peers already on RFC 9864.
ALG: Final = "EdDSA"
VERIFY_ALGS: Final = ("EdDSA", "Ed25519")
TASK_TYP: Final = "custos-task+jwt"
COMMAND_TYP: Final = "custos-openc2+jws"
#: Also checked inside an approved contain command, whose proof a confirm feedback is.
FEEDBACK_TYP: Final = "custos-feedback+jws"
AGENT_MODEL_UPDATE_TYP: Final = "custos-agent-model-update+jws"
ANNOUNCEMENT_TYP: Final = "custos-model-announcement+jws"

# joserfc warns on every EdDSA signature (RFC 9864 deprecates the name, not the algorithm:
# the same Ed25519 signature). The choice is deliberate (see ALG); the warning is not news.
warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=SecurityWarning)

#: A captured feedback message expires: it may lift a quarantine.
FEEDBACK_MAX_AGE_MS: Final = 300_000


class SignedMessageError(CustosError):
    """A signed message was unsigned, forged or unreadable; ``reason`` says which."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class SigningKey:
    """An Ed25519 private JWK with its key id; the public half is published as a JWKS."""

    def __init__(self, key: OKPKey) -> None:
        if key.as_dict(private=False).get("crv") != "Ed25519":
            raise ValueError("Custos signs with Ed25519 keys only")
        self.key = key
        self.kid: str = str(key.kid)

    @classmethod
    def generate(cls, kid: str | None = None) -> SigningKey:
        kid = kid or "custos-" + secrets.token_hex(4)
        return cls(OKPKey.generate_key("Ed25519", parameters={"kid": kid}, private=True))

    @classmethod
    def load_or_create(cls, path: Path, kid: str | None = None) -> SigningKey:
        """Read the private JWK at ``path``, or create it (mode 0600, key id ``kid`` or a
        random one) on first run."""
        if path.exists():
            data = msgspec.json.decode(path.read_bytes())
            return cls(OKPKey.import_key(data))
        key = cls.generate(kid)
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes starting together must not overwrite each other's key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(msgspec.json.encode(key.key.as_dict(private=True)))
        return key

    def jwks(self) -> dict[str, Any]:
        public = self.key.as_dict(private=False)
        public.update({"use": "sig", "alg": ALG, "kid": self.kid})
        return {"keys": [public]}

    def public_keys(self) -> KeySet:
        return verifying_keys(self.jwks())


# --- the framing ------------------------------------------------------------------------------


def sign_compact(payload: bytes, key: SigningKey, typ: str) -> bytes:
    """Compact JWS (Ed25519) of ``payload`` with an explicit ``typ``."""
    header = {"alg": ALG, "typ": typ, "kid": key.kid}
    return jws.serialize_compact(header, payload, key.key, algorithms=[ALG]).encode()


def verifying_keys(jwks: dict[str, Any]) -> KeySet:
    """A JWKS as keys that verify either name of the algorithm (:data:`VERIFY_ALGS`).

    A JWK's ``alg`` pins the one algorithm it may verify; published keys say ``EdDSA`` (older
    ones ``Ed25519``) and must verify signatures made under both names, so it is dropped here.
    Only Ed25519 (OKP) keys are kept: nothing else signs Custos's messages.
    """
    keys = [{k: v for k, v in key.items() if k != "alg"} for key in jwks.get("keys", [])
            if isinstance(key, dict) and key.get("kty") == "OKP" and key.get("crv") == "Ed25519"]
    if not keys:
        raise ConfigError("the JWKS holds no Ed25519 key: nothing it could verify")
    return KeySet.import_key_set({"keys": keys})


def verify_compact(data: bytes, keys: KeySet, typ: str) -> bytes:
    """The payload of ``data`` if a key of ``keys`` signed it with ``typ``.

    >>> k = SigningKey.generate()
    >>> verify_compact(b'{"bare": "json"}', k.public_keys(), "t")
    Traceback (most recent call last):
    ...
    pipeline.control.signing.SignedMessageError: unsigned: bare JSON: only signed messages
    """
    text = data.decode("ascii", "replace").strip()
    if text.startswith("{"):
        raise SignedMessageError("unsigned", "bare JSON: only signed messages")
    if not text:
        raise SignedMessageError("malformed", "empty message")
    try:
        obj = jws.deserialize_compact(text, keys, algorithms=list(VERIFY_ALGS))
    except DecodeError as exc:  # not a compact JWS at all: junk, not a forgery
        raise SignedMessageError("malformed", f"not a compact JWS: {exc}") from None
    except JoseError as exc:
        raise SignedMessageError("bad_signature", f"{type(exc).__name__}: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise SignedMessageError("malformed", repr(exc)) from None
    if obj.headers().get("typ") != typ:
        raise SignedMessageError("malformed", f"typ {obj.headers().get('typ')!r}, not {typ!r}")
    return bytes(obj.payload)


# --- analyst feedback (custos.feedback) -------------------------------------------------------


def sign_feedback(fb: Feedback, key: SigningKey) -> bytes:
    """The feedback as the topic carries it: a compact JWS by the analyst's key."""
    return sign_compact(feedback.encode(fb), key, FEEDBACK_TYP)


def verify_feedback(
    data: bytes, keys: KeySet, *, now_ms: int, max_age_ms: int = FEEDBACK_MAX_AGE_MS
) -> Feedback:
    """Feedback a trusted key signed at most ``max_age_ms`` ago; else InvalidEvent.

    >>> k = SigningKey.generate()
    >>> fb = Feedback(uid="u", action="release", identity="agt-1", by="analyst:a", reason="r",
    ...               at_ms=1_000)
    >>> verify_feedback(sign_feedback(fb, k), k.public_keys(), now_ms=2_000) == fb
    True
    >>> verify_feedback(sign_feedback(fb, k), k.public_keys(), now_ms=1_000 + 300_001)
    Traceback (most recent call last):
    ...
    pipeline.errors.InvalidEvent: expired_feedback: signed 300 s ago, at most 300 s
    """
    if len(data) > feedback.MAX_BYTES * 2:
        raise InvalidEvent("invalid_feedback",
                           f"{len(data)} bytes, at most {feedback.MAX_BYTES * 2}")  # fmt: skip
    try:
        payload = verify_compact(data, keys, FEEDBACK_TYP)
    except SignedMessageError as exc:
        raise InvalidEvent(exc.reason, exc.detail) from None
    fb = feedback.decode(payload)
    if abs(now_ms - fb.at_ms) > max_age_ms:
        raise InvalidEvent("expired_feedback", f"signed {(now_ms - fb.at_ms) // 1000} s ago, "
                           f"at most {max_age_ms // 1000} s")  # fmt: skip
    return fb


# --- agent-model registry updates -------------------------------------------------------------


def sign_agent_model_update(update: AgentModelUpdate, key: SigningKey) -> bytes:
    """The update as the control topic carries it: a compact JWS by a trusted key.

    Approving or revoking a model is a security decision: a worker applies only updates a
    trusted key (the command JWKS, as for analysts' quarantine decisions) signed.
    """
    return sign_compact(encode_update(update), key, AGENT_MODEL_UPDATE_TYP)


def verify_agent_model_update(data: bytes, keys: KeySet) -> AgentModelUpdate:
    """The update in a message a trusted key signed; else InvalidAgentModelUpdate.

    >>> k = SigningKey.generate()
    >>> u = AgentModelUpdate(action="approve", name="m", version="1", digest="sha256:" + "0" * 64)
    >>> verify_agent_model_update(sign_agent_model_update(u, k), k.public_keys()) == u
    True
    >>> verify_agent_model_update(encode_update(u), k.public_keys())
    Traceback (most recent call last):
    ...
    pipeline.scores.agent_models.InvalidAgentModelUpdate: unsigned: bare JSON: only signed messages
    """
    try:
        payload = verify_compact(data, keys, AGENT_MODEL_UPDATE_TYP)
    except SignedMessageError as exc:
        raise InvalidAgentModelUpdate(exc.reason, exc.detail) from None
    return decode_update(payload)


def apply_signed_agent_model_updates(
    registry: AgentModelRegistry, values: Iterable[bytes], keys: KeySet
) -> int:
    """Apply, in order, the updates among ``values`` that a key of ``keys`` signed (what the
    workers apply); how many were refused (unsigned, untrusted or invalid)."""
    refused = 0
    for value in values:
        try:
            registry.apply(verify_agent_model_update(value, keys))
        except InvalidAgentModelUpdate:
            refused += 1
    return refused


# --- keys -------------------------------------------------------------------------------------


def command_key(key_path: Path, jwks_path: Path) -> SigningKey:
    """The key that signs commands (created on first run) and its public JWKS beside it."""
    key = SigningKey.load_or_create(key_path)
    public = msgspec.json.encode(key.jwks())
    if not jwks_path.exists() or jwks_path.read_bytes() != public:
        tmp = jwks_path.with_suffix(".tmp")
        tmp.write_bytes(public)
        tmp.replace(jwks_path)
    return key


def _read_jwks(path: Path) -> KeySet:
    try:
        return verifying_keys(msgspec.json.decode(path.read_bytes()))
    except (ValueError, msgspec.DecodeError) as exc:
        raise ConfigError(f"unreadable JWKS {path}: {exc}") from None


def trusted_keys(settings: Any) -> KeySet:
    """The JWKS of command signers (``command_trusted_jwks``, or the worker's public key)."""
    path = settings.command_jwks_path
    if not path.exists():
        raise ConfigError(
            f"no trusted command keys at {path}: start the worker once (it writes its public "
            "key there) or set CUSTOS_COMMAND_TRUSTED_JWKS"
        )
    return _read_jwks(path)


def analyst_keys(settings: Any) -> KeySet | None:
    """The JWKS of analysts (``analyst_trusted_jwks``); None when there is none yet."""
    path = settings.analyst_jwks_path
    return _read_jwks(path) if path.exists() else None


def analyst_key(settings: Any) -> SigningKey:
    """This analyst's own key (``analyst_key_file``; created once, mode 0600).

    Its public half is added to the analysts' JWKS (``analyst_trusted_jwks``) that responders
    and workers trust: convenient on one machine; in production whoever admits analysts
    lists their keys there, not the analysts themselves.
    """
    key = SigningKey.load_or_create(settings.analyst_key_path)
    publish_analyst_key(settings, key)
    return key


def publish_analyst_key(settings: Any, key: SigningKey) -> None:
    """Add ``key``'s public half to the analysts' JWKS (``analyst_trusted_jwks``), once."""
    path = settings.analyst_jwks_path
    known = msgspec.json.decode(path.read_bytes()) if path.exists() else {"keys": []}
    if not any(k.get("kid") == key.kid for k in known.get("keys", [])):
        known["keys"] = [*known.get("keys", []), *key.jwks()["keys"]]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(msgspec.json.encode(known))
        tmp.replace(path)


def with_analysts(commands: KeySet, analysts: KeySet | None) -> KeySet:
    """Command keys and analysts' keys together (who may sign a message at all)."""
    if analysts is None:
        return commands
    return KeySet([*commands.keys, *analysts.keys])
