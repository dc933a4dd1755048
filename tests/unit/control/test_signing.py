"""Every signed kind, checked by an independent implementation (PyJWT), and both alg names."""

from __future__ import annotations

import time

import jwt as pyjwt
import pytest
from joserfc import jws
from joserfc.jwk import KeySet

from pipeline.control.feedback import Feedback
from pipeline.control.signing import (
    AGENT_MODEL_UPDATE_TYP,
    ANNOUNCEMENT_TYP,
    COMMAND_TYP,
    FEEDBACK_TYP,
    TASK_TYP,
    SignedMessageError,
    SigningKey,
    sign_agent_model_update,
    sign_feedback,
    verify_compact,
    verifying_keys,
)
from pipeline.credentials.tokens import TaskClaims, issue
from pipeline.errors import ConfigError
from pipeline.models.runtime import Announcement, encode_announcement
from pipeline.quarantine.commands import contain, sign
from pipeline.scores.agent_models import AgentModelUpdate

KEY = SigningKey.generate("k-1")


def _signed() -> dict[str, bytes]:
    claims = TaskClaims(sub="agt-1", task="t-1", step=1, scope=("crm.read",), ceiling=1,
                        iat=1_000, exp=1_300, jti="cred-1", iss="custos")  # fmt: skip
    command = contain("agt-1", finding_uid="f-1", reason="misuse", duration_ms=60_000,
                      credentials=(), now_ms=1_000_000, sender="custos-worker")  # fmt: skip
    fb = Feedback(uid="u", action="release", identity="agt-1", by="analyst:a", reason="r",
                  at_ms=1_000)  # fmt: skip
    update = AgentModelUpdate(action="approve", name="m", version="1",
                              digest="sha256:" + "0" * 64)  # fmt: skip
    announcement = Announcement(action="promote", name="detector", version="2",
                                manifest_sha256="0" * 64,
                                by="analyst:a", at_ms=1)  # fmt: skip
    return {
        TASK_TYP: issue(claims, KEY).encode(),
        COMMAND_TYP: sign(command, KEY),
        FEEDBACK_TYP: sign_feedback(fb, KEY),
        AGENT_MODEL_UPDATE_TYP: sign_agent_model_update(update, KEY),
        ANNOUNCEMENT_TYP: encode_announcement(announcement, KEY),
    }


@pytest.mark.parametrize("typ", [TASK_TYP, COMMAND_TYP, FEEDBACK_TYP, AGENT_MODEL_UPDATE_TYP,
                                 ANNOUNCEMENT_TYP])  # fmt: skip
def test_pyjwt_verifies_every_signed_kind_with_the_published_jwks(typ: str) -> None:
    token = _signed()[typ].decode()
    public = pyjwt.PyJWKSet.from_dict(KEY.jwks())["k-1"]
    header = pyjwt.get_unverified_header(token)
    assert (header["alg"], header["typ"], header["kid"]) == ("EdDSA", typ, "k-1")
    payload = pyjwt.api_jws.decode(token, public.key, algorithms=["EdDSA"])
    assert payload  # a forged byte would have raised
    forged = token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")
    with pytest.raises(pyjwt.PyJWTError):
        pyjwt.api_jws.decode(forged, public.key, algorithms=["EdDSA"])


def test_messages_signed_under_the_rfc9864_name_still_verify() -> None:
    """Commands and feedback signed before the switch (alg Ed25519), by keys published with
    either name, keep verifying; a key of another type is not trusted at all."""
    old = jws.serialize_compact({"alg": "Ed25519", "typ": FEEDBACK_TYP, "kid": KEY.kid}, b"hi",
                                KEY.key, algorithms=["Ed25519"]).encode()  # fmt: skip
    for alg in ("EdDSA", "Ed25519"):
        published = {"keys": [dict(KEY.jwks()["keys"][0], alg=alg)]}
        assert verify_compact(old, verifying_keys(published), FEEDBACK_TYP) == b"hi"
        assert verify_compact(sign_feedback_bytes(), verifying_keys(published), FEEDBACK_TYP)
    rsa_only = {"keys": [{"kty": "RSA", "n": "sXch", "e": "AQAB", "kid": KEY.kid}]}
    with pytest.raises(ConfigError, match="no Ed25519 key"):
        verifying_keys(rsa_only)
    other = SigningKey.generate("k-1")  # same kid, another key: a forgery
    with pytest.raises(SignedMessageError, match="bad_signature"):
        verify_compact(old, other.public_keys(), FEEDBACK_TYP)


def sign_feedback_bytes() -> bytes:
    from pipeline.control.signing import sign_compact

    return sign_compact(b"now", KEY, FEEDBACK_TYP)


# --- JWTs as receivers decode them: PyJWT's jwt.decode (claims checked) and joserfc -----------


def _published_key() -> object:
    """The public key a peer builds from Custos's published JWKS (alg ``EdDSA`` kept)."""
    return pyjwt.PyJWK(KEY.jwks()["keys"][0]).key


def test_pyjwt_decodes_task_credentials_with_their_claims_checked() -> None:
    now = int(time.time())
    claims = TaskClaims(sub="agt-1", task="t-1", step=1, scope=("crm.read",), ceiling=1,
                        iat=now, exp=now + 300, jti="cred-1", iss="custos")  # fmt: skip
    token = issue(claims, KEY)
    got = pyjwt.decode(token, key=_published_key(), algorithms=["EdDSA"], issuer="custos",
                       options={"require": ["exp", "iat", "jti", "sub", "iss"]})  # fmt: skip
    assert (got["sub"], got["task"], got["jti"]) == ("agt-1", "t-1", "cred-1")
    assert pyjwt.get_unverified_header(token)["typ"] == TASK_TYP
    expired = issue(TaskClaims(**{**_fields(claims), "iat": now - 600, "exp": now - 300}), KEY)
    with pytest.raises(pyjwt.ExpiredSignatureError):  # PyJWT checked the claims, not just bytes
        pyjwt.decode(expired, key=_published_key(), algorithms=["EdDSA"])
    with pytest.raises(pyjwt.InvalidSignatureError):
        pyjwt.decode(token, key=pyjwt.PyJWK(SigningKey.generate("k-1").jwks()["keys"][0]).key,
                     algorithms=["EdDSA"])  # fmt: skip


def _fields(c: TaskClaims) -> dict[str, object]:
    return {f: getattr(c, f) for f in ("sub", "task", "step", "scope", "ceiling", "iat", "exp",
                                       "jti", "iss")}  # fmt: skip


def test_pyjwt_decodes_sets_commands_and_analysts_decisions() -> None:
    from pipeline.config import Settings
    from pipeline.console import decisions
    from pipeline.responders.base import Command
    from pipeline.responders.ssf import CAEP, SsfTransmitter

    cmd = Command("contain", "r-1", "c-1", "agt-1", "f-1", "misuse", (), 5_000, None, False)
    ssf = SsfTransmitter("http://127.0.0.1:9/events", KEY, issuer="https://custos.example",
                         audience="https://idp.example")  # fmt: skip
    for req in ssf.build(cmd):
        got = pyjwt.decode(req.body.decode(), key=_published_key(), algorithms=["EdDSA"],
                           audience="https://idp.example", issuer="https://custos.example")
        assert got["sub_id"] == {"format": "opaque", "id": "agt-1"}
        assert next(iter(got["events"])).startswith(CAEP)
    now_ms = int(time.time() * 1000)
    command = contain("agt-1", finding_uid="f-1", reason="misuse", duration_ms=60_000,
                      credentials=(), now_ms=now_ms, sender="custos-worker")  # fmt: skip
    got = pyjwt.decode(sign(command, KEY).decode(), key=_published_key(), algorithms=["EdDSA"])
    assert got["body"]["openc2"]["request"]["action"] == "contain"
    settings = Settings()
    decided = [
        decisions.feedback(settings, KEY, user="alice", action="confirm", identity="agt-1",
                           finding_uid="f-1", reason="seen", now_ms=now_ms),
        decisions.release(settings, KEY, identity="agt-1", command_id="c-1", user="alice",
                          reason="fp", now_ms=now_ms),
    ]  # fmt: skip
    for out in decided:
        assert pyjwt.get_unverified_header(out.value.decode())["alg"] == "EdDSA"
        assert pyjwt.decode(out.value.decode(), key=_published_key(), algorithms=["EdDSA"])


@pytest.mark.parametrize("typ", [TASK_TYP, COMMAND_TYP, FEEDBACK_TYP, AGENT_MODEL_UPDATE_TYP,
                                 ANNOUNCEMENT_TYP])  # fmt: skip
def test_joserfc_verifies_every_kind_with_the_jwks_as_published(typ: str) -> None:
    """A joserfc peer imports the JWKS as it is (its ``alg`` pins EdDSA) and verifies."""
    keys = KeySet.import_key_set(KEY.jwks())
    obj = jws.deserialize_compact(_signed()[typ].decode(), keys, algorithms=["EdDSA"])
    assert obj.headers()["alg"] == "EdDSA" and obj.payload


def test_old_ed25519_task_credentials_commands_and_sets_still_verify() -> None:
    """Signed before the switch (RFC 9864's name): Custos's own verifiers keep taking them,
    while PyJWT refuses that name - why Custos now signs ``EdDSA``."""
    from joserfc import jwt as jose_jwt

    from pipeline.credentials.tokens import decode as decode_credential
    from pipeline.quarantine.commands import verify as verify_command
    from pipeline.responders.ssf import SsfTransmitter

    now = int(time.time())
    claims = TaskClaims(sub="agt-1", task="t-1", step=1, scope=("crm.read",), ceiling=1,
                        iat=now, exp=now + 300, jti="cred-old", iss="custos")  # fmt: skip
    old_credential = jose_jwt.encode({"alg": "Ed25519", "typ": TASK_TYP, "kid": KEY.kid},
                                     claims.to_claims(), KEY.key, algorithms=["Ed25519"])
    assert decode_credential(old_credential, KEY.public_keys()).jti == "cred-old"
    command = contain("agt-1", finding_uid="f-1", reason="misuse", duration_ms=60_000,
                      credentials=(), now_ms=now * 1000, sender="custos-worker")  # fmt: skip
    new_command = sign(command, KEY).decode()
    payload = jws.deserialize_compact(new_command, KEY.public_keys(), algorithms=["EdDSA"]).payload
    old_command = jws.serialize_compact({"alg": "Ed25519", "typ": COMMAND_TYP, "kid": KEY.kid},
                                        payload, KEY.key, algorithms=["Ed25519"])  # fmt: skip
    got = verify_command(old_command.encode(), KEY.public_keys(), now_ms=now * 1000)
    assert got["body"]["openc2"]["request"]["action"] == "contain"
    ssf = SsfTransmitter("http://127.0.0.1:9/e", KEY, issuer="i", audience="a")
    old_set = jose_jwt.encode({"alg": "Ed25519", "typ": "secevent+jwt", "kid": KEY.kid},
                              {"iss": "i", "aud": "a", "jti": "j", "iat": now, "events": {}},
                              KEY.key, algorithms=["Ed25519"]).encode()  # fmt: skip
    assert ssf.decode(old_set)["jti"] == "j"
    for old in (old_credential, old_command):
        with pytest.raises(pyjwt.InvalidAlgorithmError):
            pyjwt.decode(old, key=_published_key(), algorithms=["EdDSA", "Ed25519"])
