"""Every signed kind, checked by an independent implementation (PyJWT), and both alg names."""

from __future__ import annotations

import jwt as pyjwt
import pytest
from joserfc import jws

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
