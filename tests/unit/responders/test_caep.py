"""The SSF transmitter's SETs follow CAEP 1.0 (OpenID Continuous Access Evaluation Profile).

The rules are written out here from the CAEP 1.0 text, not taken from Custos: §2's optional
event claims, §3.1 ``session-revoked`` and §3.3 ``credential-change``, whose
``credential_type`` is one of ten values (or one "supported mutually by the Transmitter and
the Receiver", which a receiver Custos never spoke to has not agreed to) and ``change_type``
one of four. The SETs are decoded by PyJWT, as a receiver would, and checked with jsonschema.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import jwt as pyjwt
import pytest

from pipeline.control.signing import SigningKey
from pipeline.errors import ConfigError
from pipeline.responders.base import Command
from pipeline.responders.ssf import SsfTransmitter

EVENT_TYPES = "https://schemas.openid.net/secevent/caep/event-type/"
# CAEP 1.0 §3.3.1: credential_type.
CREDENTIAL_TYPES = ["password", "pin", "x509", "fido2-platform", "fido2-roaming", "fido-u2f",
                    "verifiable-credential", "phone-voice", "phone-sms", "app"]  # fmt: skip
LOCALIZED = {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"}}
# CAEP 1.0 §2: claims every event may carry.
COMMON = {
    "event_timestamp": {"type": "number"},
    "initiating_entity": {"enum": ["admin", "user", "policy", "system"]},
    "reason_admin": LOCALIZED,
    "reason_user": LOCALIZED,
}
SESSION_REVOKED = {"type": "object", "properties": COMMON}
CREDENTIAL_CHANGE = {
    "type": "object",
    "required": ["credential_type", "change_type"],
    "properties": {
        **COMMON,
        "credential_type": {"enum": CREDENTIAL_TYPES},
        "change_type": {"enum": ["create", "revoke", "update", "delete"]},
        "friendly_name": {"type": "string"},
        "x509_issuer": {"type": "string"},
        "x509_serial": {"type": "string"},
        "fido2_aaguid": {"type": "string"},
    },
}
# RFC 8417 §2.2 (a SET) with SSF's RFC 9493 subject, one event per SET.
SET = {
    "type": "object",
    "required": ["iss", "iat", "jti", "aud", "events", "sub_id"],
    "not": {"anyOf": [{"required": ["sub"]}, {"required": ["exp"]}]},
    "properties": {
        "iss": {"type": "string"}, "iat": {"type": "integer"}, "jti": {"type": "string"},
        "txn": {"type": "string"},
        "sub_id": {"type": "object", "required": ["format", "id"],
                   "properties": {"format": {"const": "opaque"}, "id": {"type": "string"}}},
        "events": {"type": "object", "minProperties": 1, "maxProperties": 1},
    },
}  # fmt: skip
SCHEMAS = {EVENT_TYPES + "session-revoked": SESSION_REVOKED,
           EVENT_TYPES + "credential-change": CREDENTIAL_CHANGE}  # fmt: skip


def problems(claims: dict[str, Any]) -> list[str]:
    """What a CAEP receiver would object to in a SET's claims (empty: none)."""
    found = [e.message for e in jsonschema.Draft202012Validator(SET).iter_errors(claims)]
    for uri, event in claims.get("events", {}).items():
        if uri not in SCHEMAS:
            found.append(f"unknown event type {uri}")
            continue
        validator = jsonschema.Draft202012Validator(SCHEMAS[uri])
        found += [f"{uri}: {e.message}" for e in validator.iter_errors(event)]
    return found


KEY = SigningKey.generate("ssf-1")
CMD = Command("contain", "r-1", "c-1", "agt-1", "f-1", "misuse", ("cred-1", "cred-2"), 5_000,
              None, False)  # fmt: skip


def _sets(adapter: SsfTransmitter) -> list[dict[str, Any]]:
    public = pyjwt.PyJWK(KEY.jwks()["keys"][0]).key
    return [pyjwt.decode(req.body.decode(), key=public, algorithms=["EdDSA"],
                         audience="https://idp.example") for req in adapter.build(CMD)]  # fmt: skip


def _adapter(**kw: Any) -> SsfTransmitter:
    return SsfTransmitter("http://127.0.0.1:9/events", KEY, issuer="https://custos.example",
                          audience="https://idp.example", clock=lambda: 10.0, **kw)  # fmt: skip


def test_the_rules_refuse_the_old_credential_type() -> None:
    """Not vacuous: the event Custos sent before (a private credential_type) is refused."""
    (claims,) = [s for s in _sets(_adapter()) if EVENT_TYPES + "credential-change" in s["events"]]
    event = claims["events"][EVENT_TYPES + "credential-change"]
    old = {**claims, "events": {EVENT_TYPES + "credential-change": {
        **event, "credential_type": "x-custos-task-credential"}}}  # fmt: skip
    assert problems(old) and "x-custos-task-credential" in problems(old)[0]
    assert problems({**claims, "sub": "agt-1"})  # a SET carries no sub
    no_change = {**claims, "events": {EVENT_TYPES + "credential-change": {
        "credential_type": "app"}}}  # fmt: skip
    assert problems(no_change)


def test_every_set_custos_sends_is_valid_caep() -> None:
    sets = _sets(_adapter())
    assert [next(iter(s["events"])) for s in sets] == [EVENT_TYPES + "session-revoked",
                                                        EVENT_TYPES + "credential-change"]
    for claims in sets:
        assert problems(claims) == []
    change = sets[1]["events"][EVENT_TYPES + "credential-change"]
    assert (change["credential_type"], change["change_type"]) == ("verifiable-credential",
                                                                  "revoke")
    # What was revoked, for receivers that know Custos, in an extension member.
    assert change["x_custos"] == {"kind": "task-credential", "credentials": ["cred-1", "cred-2"]}


@pytest.mark.parametrize("credential_type", CREDENTIAL_TYPES)
def test_any_caep_credential_type_can_be_configured(credential_type: str) -> None:
    sets = _sets(_adapter(credential_type=credential_type))
    assert sets[1]["events"][EVENT_TYPES + "credential-change"]["credential_type"] == (
        credential_type)
    assert all(problems(s) == [] for s in sets)


def test_a_credential_type_outside_caep_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match=r"not one of CAEP 1\.0's"):
        _adapter(credential_type="x-custos-task-credential")
