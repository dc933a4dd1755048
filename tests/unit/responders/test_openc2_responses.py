"""Every OpenC2 response the responder publishes is valid per the OpenC2 Language Specification.

The schema below is the response part of OASIS oc2ls-v1.0 (cs02 §3.3.2, and the published
``oc2ls-v1.0.json``) written out for jsonschema, an independent validator: a Response has a
required ``status`` from the §3.3.2.1 codes, an optional ``status_text`` string and optional
``results``, a ``Results (Map{1..*})`` (§3.3.2.2): when present it holds at least one member,
either a defined one or an extension (``x-custos``). Nothing else may appear. An interim
``102`` used to carry ``"results": {}``, which that rule refuses; it now leaves the key out.
"""

from __future__ import annotations

import time
from typing import Any

import jsonschema
import pytest

from pipeline.audit.auditor import record_for
from pipeline.control.signing import SigningKey
from pipeline.ops.demo import ack_line
from pipeline.quarantine.commands import contain, sign
from pipeline.responders.base import Command, HttpRequest, HttpResponse, Outcome, by_status
from pipeline.responders.responder import Responder, ResponseStore, response, status_of

# oc2ls-v1.0 §3.3.2: OpenC2-Response; §3.3.2.1 Status-Code; §3.3.2.2 Results.
OC2LS_RESPONSE: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "additionalProperties": False,
    "required": ["status"],
    "properties": {
        "status": {"type": "integer", "enum": [102, 200, 400, 401, 403, 404, 500, 501, 503]},
        "status_text": {"type": "string"},
        "results": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": False,
            "properties": {
                "versions": {"type": "array", "minItems": 1, "uniqueItems": True,
                             "items": {"type": "string"}},
                "profiles": {"type": "array", "minItems": 1, "uniqueItems": True,
                             "items": {"type": "string"}},
                "pairs": {"type": "object"},
                "rate_limit": {"type": "number", "minimum": 0},
            },
            # Extensions (profiles' and custom ``x-`` ones) by name.
            "patternProperties": {
                r"^(x-)?[A-Za-z]\w*$": {
                    "type": ["array", "boolean", "integer", "number", "object", "string"]},
            },
        },
    },
}  # fmt: skip
VALIDATOR = jsonschema.Draft7Validator(OC2LS_RESPONSE)


def assert_valid(message: dict[str, Any]) -> None:
    """The OpenC2 content is valid, in the message envelope the transfer carries."""
    headers = message["headers"]
    assert isinstance(headers["request_id"], str) and isinstance(headers["created"], int)
    assert isinstance(headers["from"], str) and all(isinstance(t, str) for t in headers["to"])
    errors = [e.message for e in VALIDATOR.iter_errors(message["body"]["openc2"]["response"])]
    assert errors == [], errors


def test_the_schema_refuses_what_it_should() -> None:
    """The validator is not vacuous: the old interim shape and other slips fail it."""
    old_102 = {"status": 102, "status_text": "received", "results": {}}
    assert not VALIDATOR.is_valid(old_102)
    assert not VALIDATOR.is_valid({"status": 299})
    assert not VALIDATOR.is_valid({"status_text": "no status"})
    assert not VALIDATOR.is_valid({"status": 200, "extra": 1})
    assert not VALIDATOR.is_valid({"status": 200, "results": {"x-custos": None}})
    assert VALIDATOR.is_valid({"status": 102})


def test_the_builder_leaves_empty_results_out() -> None:
    bare = response("r-1", 102, "received", sender="s", to="t", now_ms=1)
    assert "results" not in bare["body"]["openc2"]["response"]
    assert_valid(bare)
    full = response("r-1", 200, "done", sender="s", to="t", now_ms=1, results={"x-custos": {}})
    assert full["body"]["openc2"]["response"]["results"] == {"x-custos": {}}
    assert_valid(full)


class Scripted:
    """An adapter whose one request gets the statuses it is given, in turn."""

    name = "scripted"

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)

    def build(self, cmd: Command) -> list[HttpRequest]:
        return [HttpRequest("POST", "http://127.0.0.1:9/x", {}, b"")]

    def interpret(self, cmd: Command, req: HttpRequest, resp: HttpResponse) -> Outcome:
        bad = by_status(resp, "scripted")
        return bad if bad is not None else Outcome(revoked=[f"ref-{cmd.identity}"])

    def send(self, req: HttpRequest) -> HttpResponse:
        return HttpResponse(self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0])


def _run(adapter: Scripted, value: bytes, key: SigningKey) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    Responder([adapter], key.public_keys(), ResponseStore(":memory:"), sleep=lambda s: None,
              attempts=2).handle(value, out.append)  # fmt: skip
    return out


def _contain(key: SigningKey, identity: str = "agt-1", **kw: Any) -> bytes:
    args: dict[str, Any] = {"finding_uid": "f-1", "reason": "misuse", "duration_ms": 60_000,
                            "now_ms": int(time.time() * 1000), "sender": "custos-worker"}
    args.update(kw)
    return sign(contain(identity, **args), key)


@pytest.mark.parametrize(("statuses", "final"), [((204,), 200), ((403,), 500), ((503,), 503)])
def test_interim_and_final_responses_are_valid(statuses: tuple[int, ...], final: int) -> None:
    key = SigningKey.generate("w1")
    out = _run(Scripted(*statuses), _contain(key), key)
    assert [status_of(m) for m in out] == [102, final]
    interim, done = out
    assert "results" not in interim["body"]["openc2"]["response"]
    assert done["body"]["openc2"]["response"]["results"]["x-custos"]["identity"] == "agt-1"
    for message in out:
        assert_valid(message)


def test_refusals_redeliveries_and_expiries_are_valid() -> None:
    key, intruder = SigningKey.generate("w1"), SigningKey.generate("w1")
    store = ResponseStore(":memory:")
    clock = [time.time()]
    responder = Responder([Scripted(204)], key.public_keys(), store, sleep=lambda s: None,
                          clock=lambda: clock[0])  # fmt: skip
    out: list[dict[str, Any]] = []
    data = _contain(key, now_ms=int(clock[0] * 1000))
    responder.handle(data, out.append)
    responder.handle(data, out.append)  # a redelivery: the stored final answer again
    responder.handle(b'{"bare": "json"}', out.append)  # unsigned: 401
    responder.handle(_contain(intruder), out.append)  # forged: 401
    responder.handle(_contain(key, approval="required"), out.append)  # unapproved: 403
    responder.handle(_contain(key, now_ms=1_000), out.append)  # expired: 400
    clock[0] += 61  # the quarantine's duration is over: the responder releases it itself
    responder.expire(out.append)
    assert [status_of(m) for m in out] == [102, 200, 200, 401, 401, 403, 400, 200]
    for message in out:
        assert_valid(message)


def test_readers_take_a_response_without_results() -> None:
    """The demo's live view, the auditor and the console's store take the bare interim
    response."""
    from pipeline.console.store import ConsoleStore

    bare = response("r-1", 102, "received", sender="custos-responder", to="custos", now_ms=5)
    assert ack_line(bare) is None  # 102s are counted, not shown
    import msgspec

    rec = record_for("acks", msgspec.json.encode(bare))
    assert rec is not None and rec["kind"] == "quarantine.received"
    assert rec["refs"]["request"] == "r-1" and rec["subject"] is None
    final = response("r-1", 200, "contain done", sender="custos-responder", to="custos",
                     now_ms=6, results={"x-custos": {"identity": "agt-1", "action": "contain"}})
    assert "agt-1" in (ack_line(final) or "")
    store = ConsoleStore(":memory:")
    assert store.ingest_parsed([("custos.acks", 0, 0, "response", bare)]) == 1
    rows = store.query("SELECT status, text FROM responses WHERE request_id = ?", ("r-1",))
    assert [(r["status"], r["text"]) for r in rows] == [(102, "received")]
