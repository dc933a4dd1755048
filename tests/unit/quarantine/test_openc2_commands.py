"""Every OpenC2 command Custos sends is valid per the OpenC2 Language Specification v1.0.

The schema below is the command part of OASIS oc2ls-v1.0 (cs02 §3.3.1 OpenC2-Command, §3.3.1.1
Action, §3.3.1.2 Target, §3.3.1.4 Command Arguments, §3.4.2 Date-Time / Duration / Command-ID)
written out for jsonschema, an independent validator (the published JSON file ships in no
package this machine can install): a command has a required ``action`` from the twenty
§3.3.1.1 verbs and a required ``target`` that is exactly one choice - a defined target, or a
namespace-qualified extension (``x-custos:subject``); ``args`` is a map of at least one member
with the defined arguments typed (times and durations in integer milliseconds,
``response_requested`` from its four values) plus extensions (``x-custos``); ``command_id`` is
a string without whitespace of at most 36 characters (the header's request id is the
transfer's). Nothing else may appear; §3.3.1.4 also forbids ``start_time``, ``stop_time`` and
``duration`` together.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from pipeline.quarantine.commands import cancel, contain
from pipeline.quarantine.decisions import approve, release

_INT_MS = {"type": "integer", "minimum": 0}
OC2LS_COMMAND: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "additionalProperties": False,
    "required": ["action", "target"],
    "properties": {
        "action": {"enum": ["scan", "locate", "query", "deny", "contain", "allow", "start",
                            "stop", "restart", "cancel", "set", "update", "redirect", "create",
                            "delete", "detonate", "restore", "copy", "investigate",
                            "remediate"]},
        "target": {
            "type": "object", "minProperties": 1, "maxProperties": 1,
            "additionalProperties": False,
            "properties": {name: {} for name in (
                "artifact", "device", "domain_name", "email_addr", "features", "file",
                "idn_domain_name", "idn_email_addr", "ipv4_net", "ipv6_net", "ipv4_connection",
                "ipv6_connection", "iri", "mac_addr", "process", "properties", "uri")}
            | {"command": {"type": "string", "pattern": r"^\S{0,36}$"}},
            "patternProperties": {r"^x-[A-Za-z0-9]{1,16}:\w+$": {"type": "object"}},
        },
        "args": {
            "type": "object", "minProperties": 1, "additionalProperties": False,
            "properties": {
                "start_time": _INT_MS, "stop_time": _INT_MS, "duration": _INT_MS,
                "response_requested": {"enum": ["none", "ack", "status", "complete"]},
            },
            "patternProperties": {r"^x-[A-Za-z0-9]{1,16}$": {"type": "object"}},
            "not": {"required": ["start_time", "stop_time", "duration"]},
        },
        "actuator": {"type": "object", "minProperties": 1, "maxProperties": 1},
        "command_id": {"type": "string", "pattern": r"^\S{0,36}$"},
    },
}  # fmt: skip
VALIDATOR = jsonschema.Draft7Validator(OC2LS_COMMAND)


def errors(message: dict[str, Any]) -> list[str]:
    headers = message["headers"]
    assert isinstance(headers["request_id"], str) and isinstance(headers["created"], int)
    return [e.message for e in VALIDATOR.iter_errors(message["body"]["openc2"]["request"])]


def _contain(**kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"finding_uid": "f-1", "reason": "agt-7 used another's credential",
                            "duration_ms": 3_600_000, "now_ms": 1_790_000_000_000,
                            "sender": "custos-worker"}  # fmt: skip
    return contain("agt-7", **(args | kw))


@pytest.mark.parametrize("kw", [
    {}, {"dry_run": True}, {"approval": "required", "severity_id": 4, "risk_score": 88},
    {"credentials": ("cred-1", "cred-2")},
])  # fmt: skip
def test_contain_commands_are_valid(kw: dict[str, Any]) -> None:
    assert errors(_contain(**kw)) == []


def test_an_approved_contain_and_a_release_are_valid() -> None:
    pending = _contain(approval="required")
    assert errors(approve(pending, by="analyst:bob", now_ms=1_790_000_100_000,
                          proof="eyJ...")) == []  # fmt: skip
    out = release("agt-7", command_id=pending["body"]["openc2"]["request"]["command_id"],
                  reason="owner confirmed the run", by="analyst:alice", now_ms=1_790_000_200_000)
    assert errors(out) == []
    assert errors(cancel("agt-7", command_id="c-1", reason="x", now_ms=1, sender="s", by="b")) == []


def test_the_schema_refuses_what_the_specification_does() -> None:
    good = _contain()["body"]["openc2"]["request"]
    bad = [
        good | {"action": "quarantine"},  # not an OpenC2 verb
        good | {"target": {}},  # a choice of nothing
        good | {"target": good["target"] | {"device": {}}},  # two targets
        good | {"target": {"subject": {"id": "agt-7"}}},  # an extension without a namespace
        good | {"args": {}},  # an empty map
        good | {"args": good["args"] | {"stop_time": 1}},  # start, stop and duration together
        good | {"args": good["args"] | {"response_requested": "later"}},
        good | {"args": good["args"] | {"duration": "1h"}},  # milliseconds, as an integer
        good | {"command_id": "has space"},
        good | {"priority": 1},  # not a member of a command
    ]
    for request in bad:
        assert list(VALIDATOR.iter_errors(request)), request
