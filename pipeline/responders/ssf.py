"""Adapter 4: an OpenID SSF / CAEP transmitter - push Security Event Tokens to a receiver.

For a contain command, two SETs (RFC 8417) are pushed (RFC 8935: ``POST``,
``Content-Type: application/secevent+jwt``; success is 202, a 400 carries
``{"err", "description"}``): CAEP ``session-revoked`` and ``credential-change`` with
``change_type`` ``revoke``. Each SET has header ``typ: secevent+jwt`` and claims ``iss``, ``iat``,
``jti``, ``aud``, ``txn`` (the finding uid: the same for every SET of one cause), ``sub_id``
(RFC 9493 ``opaque`` subject) and ``events`` with exactly one event; no ``sub``, no ``exp``.
Signed with an Ed25519 key under JWS ``alg`` ``EdDSA`` (RFC 8037), the name receivers accept.
Receivers deduplicate by ``jti``, so ``jti`` is derived from the command's request id and the
event type: a retried push is the same SET.

``credential_type`` is one of CAEP 1.0's values (:data:`CAEP_CREDENTIAL_TYPES`; receivers refuse
others). None names a signed bearer token; the default, ``verifiable-credential``, is the
nearest - an issuer-signed credential a verifier checks by its signature - and what Custos
revoked is said in an extension member, ``x_custos`` (``kind`` ``task-credential`` and the
credential uids), which receivers that do not know it ignore.

>>> from pipeline.control.signing import SigningKey
>>> from pipeline.responders.base import Command
>>> cmd = Command("contain", "r-1", "c-1", "agt-1", "f-1", "misuse", (), 5_000, None, False)
>>> a = SsfTransmitter("http://127.0.0.1:9/events", SigningKey.generate("t1"),
...                    issuer="https://custos.example", audience="https://idp.example",
...                    clock=lambda: 10.0)
>>> sets = [a.decode(r.body) for r in a.build(cmd)]
>>> [list(s["events"])[0].rsplit("/", 1)[1] for s in sets], sets[0]["txn"], sets[0]["sub_id"]
(['session-revoked', 'credential-change'], 'f-1', {'format': 'opaque', 'id': 'agt-1'})
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, Final

import msgspec
from joserfc import jwt

from pipeline.control.signing import ALG, VERIFY_ALGS, SigningKey
from pipeline.errors import ConfigError
from pipeline.responders.base import Command, HttpRequest, HttpResponse, Outcome, by_status

__all__ = ["CAEP", "CAEP_CREDENTIAL_TYPES", "SsfTransmitter"]

CAEP: Final = "https://schemas.openid.net/secevent/caep/event-type/"
#: CAEP 1.0 ``credential-change`` ``credential_type`` values.
CAEP_CREDENTIAL_TYPES: Final = frozenset({
    "password", "pin", "x509", "fido2-platform", "fido2-roaming", "fido-u2f",
    "verifiable-credential", "phone-voice", "phone-sms", "app",
})  # fmt: skip
_NS: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://custos.invalid/set")


class SsfTransmitter:
    name = "ssf"

    def __init__(
        self,
        receiver_url: str,
        key: SigningKey,
        *,
        issuer: str,
        audience: str,
        credential_type: str = "verifiable-credential",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.receiver_url = receiver_url
        self.key = key
        self.issuer = issuer
        self.audience = audience
        if credential_type not in CAEP_CREDENTIAL_TYPES:
            raise ConfigError(f"CAEP credential_type {credential_type!r} is not one of CAEP 1.0's: "
                              f"{', '.join(sorted(CAEP_CREDENTIAL_TYPES))}")  # fmt: skip
        self.credential_type = credential_type
        self.clock = clock

    def _set(self, cmd: Command, event_type: str, event: dict[str, Any]) -> bytes:
        event = {
            "event_timestamp": cmd.start_ms // 1000,
            "initiating_entity": "policy",
            "reason_admin": {"en": f"Custos quarantine {cmd.command_id}: {cmd.reason}"[:500]},
            **event,
        }
        claims = {
            "iss": self.issuer,
            "iat": int(self.clock()),
            "jti": str(uuid.uuid5(_NS, f"{cmd.request_id}/{event_type}")),
            "aud": self.audience,
            "txn": cmd.finding_uid or cmd.command_id,
            "sub_id": {"format": "opaque", "id": cmd.identity},
            "events": {CAEP + event_type: event},
        }
        header = {"alg": ALG, "typ": "secevent+jwt", "kid": self.key.kid}
        return jwt.encode(header, claims, self.key.key, algorithms=[ALG]).encode()

    def build(self, cmd: Command) -> list[HttpRequest]:
        if cmd.action != "contain" or cmd.dry_run:
            return []
        headers = {"Content-Type": "application/secevent+jwt", "Accept": "application/json"}
        sets = (
            self._set(cmd, "session-revoked", {}),
            self._set(cmd, "credential-change",
                      {"credential_type": self.credential_type, "change_type": "revoke",
                       "x_custos": {"kind": "task-credential",
                                    "credentials": list(cmd.credentials)}}),
        )  # fmt: skip
        return [HttpRequest("POST", self.receiver_url, headers, body) for body in sets]

    def interpret(self, cmd: Command, req: HttpRequest, resp: HttpResponse) -> Outcome:
        event = next(iter(self.decode(req.body)["events"])).rsplit("/", 1)[1]
        if resp.status == 202:
            return Outcome(revoked=[f"ssf:{event}"], detail=f"{event} SET accepted")
        if resp.status == 400:
            try:
                err = msgspec.json.decode(resp.body)
                why = f"{err.get('err')}: {err.get('description')}"
            except msgspec.DecodeError:
                why = resp.body[:200].decode("utf-8", "replace")
            return Outcome("failed", failed=[(f"ssf:{event}", why)], detail=why)
        bad = by_status(resp, f"SET push {self.receiver_url}")
        return bad if bad is not None else Outcome(detail=f"{event}: HTTP {resp.status}")

    def decode(self, body: bytes) -> dict[str, Any]:
        """A SET's claims (this transmitter's own key); for tests and interpretation."""
        return dict(jwt.decode(body.decode(), self.key.key, algorithms=list(VERIFY_ALGS)).claims)
