"""Unit tests for the input event contract (pipeline.events.schemas, docs/EVENTS.md)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from pipeline.config import Settings
from pipeline.errors import InvalidEvent
from pipeline.events.schemas import (
    REASONS,
    Credential,
    Event,
    EventDecoder,
    ModelRef,
    OcsfEvent,
    Resource,
    encode_event_dict,
    identity_key,
)

NOW = 1_760_000_000_000  # fixed "now" so time checks are deterministic
T = NOW - 60_000
DIGEST = "sha256:" + "ab" * 32
TOOLS = "sha256:" + "cd" * 32
PROMPT = "sha256:" + "ef" * 32

HUMAN_LOGON: dict[str, Any] = {
    "class_uid": 3002,
    "category_uid": 3,
    "activity_id": 1,
    "type_uid": 300201,
    "severity_id": 1,
    "time": T,
    "metadata": {
        "uid": "evt-3002-1",
        "version": "1.8.0",
        "product": {"name": "Okta"},
        "correlation_uid": "corr-1",
    },
    "user": {"uid": "u-alice", "name": "alice@example.com", "type_id": 1},
    "status_id": 1,
    "is_mfa": True,
    "auth_protocol": "SAML",
    "service": {"name": "vpn"},
    "src_endpoint": {
        "ip": "203.0.113.7",
        "location": {"country": "DE", "lat": 52.52, "long": 13.405},
        "autonomous_system": {"number": 3320},
    },
    "dst_endpoint": {"ip": "10.0.0.1", "hostname": "vpn.example.com"},
}

AGENT_CALL: dict[str, Any] = {
    "class_uid": 6003,
    "category_uid": 6,
    "activity_id": 2,
    "type_uid": 600302,
    "severity_id": 1,
    "time": T,
    "metadata": {"uid": "evt-6003-1", "version": "1.8.0", "product": {"name": "agent-gw"}},
    "actor": {
        "user": {"uid": "agent-42", "name": "invoice-bot", "type_id": 99},
        "session": {"uid": "task-7"},
    },
    "api": {"operation": "s3.GetObject", "service": {"name": "s3"}},
    "resources": [
        {
            "uid": "s3://fin/q3.xlsx",
            "type": "object",
            "data_classification": {"confidentiality_id": 3},
        },
        {"uid": "s3://pub/readme", "type": "object"},
    ],
    "src_endpoint": {"ip": "10.1.2.3", "location": {"country": "ie"}},
    "traffic": {"bytes_in": 512, "bytes_out": 1_048_576},
    "status_id": 1,
    "unmapped": {
        "identity_kind": "agent",
        "credential": {
            "uid": "cred-9",
            "issued_to": "agent-42",
            "task_uid": "task-7",
            "step": 3,
            "expires_at": NOW + 3_600_000,
        },
        "model": {"name": "gpt-x", "version": "2025-01", "digest": DIGEST},
        "delegated_by": "u-alice",
        "environment": "prod-eu",
        "rationale": "fetch the Q3 figures the user asked for",
        "tool_manifest_hash": TOOLS,
        "system_prompt_hash": PROMPT,
    },
}

MIN_3002: dict[str, Any] = {
    "class_uid": 3002,
    "activity_id": 1,
    "time": T,
    "metadata": {"uid": "m-1"},
    "user": {"uid": "bob"},
}

MIN_6003: dict[str, Any] = {
    "class_uid": 6003,
    "activity_id": 99,
    "time": T,
    "metadata": {"uid": "m-2"},
    "actor": {"user": {"uid": "svc-1"}},
}


@pytest.fixture(scope="module")
def dec() -> EventDecoder:
    return EventDecoder()


def enc(d: Any) -> bytes:
    return json.dumps(d).encode()


def reason_of(dec: EventDecoder, data: bytes, now_ms: int = NOW) -> str:
    with pytest.raises(InvalidEvent) as info:
        dec.decode(data, now_ms=now_ms)
    assert info.value.reason in REASONS
    assert info.value.detail
    return info.value.reason


def with_(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of base with the dotted path set (``value is DELETE`` removes it)."""
    d = copy.deepcopy(base)
    *parents, last = path.split(".")
    node: Any = d
    for p in parents:
        node = node.setdefault(p, {}) if not p.isdigit() else node[int(p)]
    if value is DELETE:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return d


DELETE = object()


# --- valid events ---------------------------------------------------------------------------


def test_full_human_logon(dec: EventDecoder) -> None:
    ev = dec.decode(enc(HUMAN_LOGON), now_ms=NOW)
    assert ev == Event(
        uid="evt-3002-1",
        class_uid=3002,
        activity_id=1,
        time_ms=T,
        identity_uid="u-alice",
        identity_kind="human",
        identity_name="alice@example.com",
        identity_type_id=1,
        status_id=1,
        is_mfa=True,
        auth_protocol="SAML",
        service="vpn",
        src_ip="203.0.113.7",
        country="DE",
        lat=52.52,
        long=13.405,
        asn=3320,
        dst_ip="10.0.0.1",
        dst_hostname="vpn.example.com",
        correlation_uid="corr-1",
        severity_id=1,
    )


def test_full_agent_call(dec: EventDecoder) -> None:
    ev = dec.decode(enc(AGENT_CALL), now_ms=NOW)
    assert ev.identity_uid == "agent-42"
    assert ev.identity_kind == "agent"
    assert ev.identity_type_id == 99
    assert ev.service == "s3"
    assert ev.operation == "s3.GetObject"
    assert ev.session_uid == "task-7"
    assert ev.country == "IE"  # lower case accepted, normalised
    assert ev.bytes_in == 512 and ev.bytes_out == 1_048_576
    assert ev.resources == (
        Resource(uid="s3://fin/q3.xlsx", type="object", confidentiality_id=3),
        Resource(uid="s3://pub/readme", type="object", confidentiality_id=None),
    )
    assert ev.credential == Credential(
        uid="cred-9", issued_to="agent-42", task_uid="task-7", step=3, expires_at=NOW + 3_600_000
    )
    assert ev.model == ModelRef(name="gpt-x", version="2025-01", digest=DIGEST)
    assert ev.delegated_by == "u-alice"
    assert ev.environment == "prod-eu"
    assert ev.rationale == "fetch the Q3 figures the user asked for"
    assert ev.tool_manifest_hash == TOOLS and ev.system_prompt_hash == PROMPT
    assert ev.is_mfa is None and ev.auth_protocol is None
    # The decoder builds Event positionally: a full comparison guards the field order.
    assert ev == Event(
        uid="evt-6003-1",
        class_uid=6003,
        activity_id=2,
        time_ms=T,
        identity_uid="agent-42",
        identity_kind="agent",
        identity_name="invoice-bot",
        identity_type_id=99,
        status_id=1,
        service="s3",
        operation="s3.GetObject",
        session_uid="task-7",
        src_ip="10.1.2.3",
        country="IE",
        bytes_in=512,
        bytes_out=1_048_576,
        resources=ev.resources,
        credential=ev.credential,
        model=ev.model,
        delegated_by="u-alice",
        environment="prod-eu",
        rationale="fetch the Q3 figures the user asked for",
        severity_id=1,
        tool_manifest_hash=TOOLS,
        system_prompt_hash=PROMPT,
    )


def test_minimal_events(dec: EventDecoder) -> None:
    a = dec.decode(enc(MIN_3002), now_ms=NOW)
    assert (a.uid, a.identity_uid, a.identity_kind, a.class_uid) == ("m-1", "bob", "human", 3002)
    assert a.resources == () and a.credential is None and a.model is None and a.service is None
    assert a.tool_manifest_hash is None and a.system_prompt_hash is None
    b = dec.decode(enc(MIN_6003), now_ms=NOW)
    assert (b.uid, b.identity_uid, b.identity_kind, b.activity_id) == ("m-2", "svc-1", "human", 99)
    assert b.session_uid is None and b.operation is None


def test_event_is_frozen_and_hashable(dec: EventDecoder) -> None:
    ev = dec.decode(enc(AGENT_CALL), now_ms=NOW)
    with pytest.raises(AttributeError):
        ev.identity_uid = "x"  # type: ignore[misc]
    assert hash(ev) == hash(dec.decode(enc(AGENT_CALL), now_ms=NOW))


def test_unknown_fields_ignored(dec: EventDecoder) -> None:
    d = copy.deepcopy(AGENT_CALL)
    d["enrichments"] = [{"name": "x", "value": [1, {"y": None}]}]
    d["metadata"]["logged_time"] = 1
    d["actor"]["user"]["email_addr"] = "a@b"
    d["unmapped"]["vendor_blob"] = {"anything": ["goes", 1.5, True]}
    d["resources"][0]["owner"] = {"uid": 7}
    assert dec.decode(enc(d), now_ms=NOW) == dec.decode(enc(AGENT_CALL), now_ms=NOW)


def test_nulls_are_absent(dec: EventDecoder) -> None:
    d = dict(MIN_3002, src_endpoint=None, unmapped=None, is_mfa=None, resources=None)
    assert dec.decode(enc(d), now_ms=NOW).src_ip is None


def test_time_int_or_float(dec: EventDecoder) -> None:
    assert dec.decode(enc(with_(MIN_3002, "time", T + 0.9)), now_ms=NOW).time_ms == T
    ev = dec.decode(enc(with_(MIN_3002, "time", float(T))), now_ms=NOW)
    assert ev.time_ms == T and type(ev.time_ms) is int


def test_int_accepted_where_float_declared(dec: EventDecoder) -> None:
    ev = dec.decode(enc(with_(HUMAN_LOGON, "src_endpoint.location.lat", 52)), now_ms=NOW)
    assert ev.lat == 52.0


def test_float_expiry_truncated(dec: EventDecoder) -> None:
    d = with_(AGENT_CALL, "unmapped.credential.expires_at", 1.5e12 + 0.25)
    cred = dec.decode(enc(d), now_ms=NOW).credential
    assert cred is not None and cred.expires_at == 1_500_000_000_000
    assert type(cred.expires_at) is int


def test_non_ascii_utf8_ok(dec: EventDecoder) -> None:
    d = with_(MIN_3002, "user.name", "Zoë Ångström 日本")
    d["unmapped"] = {"rationale": "ça va"}
    ev = dec.decode(json.dumps(d, ensure_ascii=False).encode(), now_ms=NOW)
    assert ev.identity_name == "Zoë Ångström 日本"


def test_accepts_bytes_at_limit() -> None:
    data = enc(MIN_3002)
    assert EventDecoder(max_bytes=len(data)).decode(data, now_ms=NOW).uid == "m-1"


# --- identity kind --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_id", "kind_field", "expected"),
    [
        (None, None, "human"),
        (0, None, "human"),
        (1, None, "human"),
        (2, None, "human"),
        (3, None, "human"),
        (4, None, "service"),
        (99, None, "human"),
        (4, "agent", "agent"),  # explicit kind wins over type_id
        (1, "service", "service"),
        (None, "human", "human"),
    ],
)
def test_identity_kind(
    dec: EventDecoder, type_id: int | None, kind_field: str | None, expected: str
) -> None:
    for base, user_path in ((MIN_3002, "user"), (MIN_6003, "actor.user")):
        d = with_(base, f"{user_path}.type_id", type_id) if type_id is not None else base
        if kind_field is not None:
            d = with_(d, "unmapped.identity_kind", kind_field)
        assert dec.decode(enc(d), now_ms=NOW).identity_kind == expected


# --- time bounds ----------------------------------------------------------------------------


def test_time_bounds() -> None:
    dec = EventDecoder(min_time_ms=1_000, max_future_skew_ms=500)
    now = 10_000
    ok: list[float] = [1_000, 5_000, now, now + 500, 1_000.0]
    bad: list[float] = [999, 999.99, 0, -1, now + 500.5, now + 501, 10**30, 1e300]
    for t in ok:
        assert dec.decode(enc(with_(MIN_3002, "time", t)), now_ms=now).time_ms == int(t)
    for t in bad:
        assert reason_of(dec, enc(with_(MIN_3002, "time", t)), now_ms=now) == "absurd_time"


def test_time_defaults_to_wall_clock(dec: EventDecoder) -> None:
    import time

    now = time.time_ns() // 1_000_000
    assert dec.decode(enc(with_(MIN_3002, "time", now))).time_ms == now
    future = now + 2 * 86_400_000
    with pytest.raises(InvalidEvent, match="absurd_time"):
        dec.decode(enc(with_(MIN_3002, "time", future)))


def test_from_settings() -> None:
    s = Settings.from_env(
        {
            "CUSTOS_MAX_EVENT_BYTES": "1000",
            "CUSTOS_MIN_EVENT_TIME_MS": "5",
            "CUSTOS_MAX_FUTURE_SKEW_MS": "7",
        }
    )
    dec = EventDecoder.from_settings(s)
    assert (dec.max_bytes, dec.min_time_ms, dec.max_future_skew_ms) == (1000, 5, 7)
    assert reason_of(dec, enc(with_(MIN_3002, "time", 4)), now_ms=10) == "absurd_time"
    assert reason_of(dec, enc(with_(MIN_3002, "time", 18)), now_ms=10) == "absurd_time"
    assert dec.decode(enc(with_(MIN_3002, "time", 17)), now_ms=10).time_ms == 17


# --- every reason code from a concrete bad input --------------------------------------------

BAD_INPUTS: list[tuple[str, bytes]] = [
    ("invalid_json", b""),
    ("invalid_json", b"{"),
    ("invalid_json", b'{"class_uid": 3002,}'),
    ("invalid_json", b'{"a": NaN}'),
    ("invalid_json", b"{} trailing"),
    ("invalid_json", b"\xef\xbb\xbf{}"),  # BOM
    ("invalid_json", b'{"user": {"uid": "\xff"}}'),  # bad UTF-8 in a decoded field
    ("invalid_json", b'{"ignored": "\xc3\x28"}'),  # bad UTF-8 in an ignored field
    ("invalid_json", b'{"x": ' + b"[" * 5000 + b"]" * 5000 + b"}"),  # nesting
    ("not_an_object", b"[]"),
    ("not_an_object", b"null"),
    ("not_an_object", b'"3002"'),
    ("not_an_object", b"42"),
    ("not_an_object", b"true"),
    ("wrong_type", enc(with_(MIN_3002, "time", "1700000000000"))),
    ("wrong_type", enc(with_(MIN_3002, "class_uid", "3002"))),
    ("wrong_type", enc(with_(MIN_3002, "user.uid", 12345))),
    ("wrong_type", enc(with_(MIN_3002, "user", "bob"))),
    ("wrong_type", enc(with_(MIN_3002, "is_mfa", 1))),
    ("wrong_type", enc(with_(MIN_3002, "status_id", True))),
    ("wrong_type", enc(with_(MIN_3002, "activity_id", 1.0))),
    ("wrong_type", enc(with_(MIN_3002, "metadata", []))),
    ("wrong_type", enc(with_(AGENT_CALL, "resources", {"uid": "x"}))),
    ("wrong_type", enc(with_(AGENT_CALL, "resources.0", "s3://x"))),
    ("wrong_type", enc(with_(AGENT_CALL, "traffic.bytes_in", "512"))),
    ("wrong_type", enc(with_(AGENT_CALL, "unmapped.credential", "cred-9"))),
    ("missing_field", enc(with_(MIN_3002, "class_uid", DELETE))),
    ("missing_field", enc(with_(MIN_3002, "class_uid", None))),
    ("missing_field", enc(with_(MIN_3002, "metadata", DELETE))),
    ("missing_field", enc(with_(MIN_3002, "metadata.uid", DELETE))),
    ("missing_field", enc(with_(MIN_3002, "metadata.uid", ""))),
    ("missing_field", enc(with_(MIN_3002, "time", DELETE))),
    ("missing_field", enc(with_(MIN_6003, "activity_id", DELETE))),
    ("missing_field", b"{}"),
    ("missing_identity", enc(with_(MIN_3002, "user", DELETE))),
    ("missing_identity", enc(with_(MIN_3002, "user.uid", DELETE))),
    ("missing_identity", enc(with_(MIN_3002, "user.uid", ""))),
    ("missing_identity", enc(with_(MIN_3002, "user.uid", "   "))),
    ("missing_identity", enc(with_(MIN_3002, "user", None))),
    ("missing_identity", enc(with_(MIN_6003, "actor", DELETE))),
    ("missing_identity", enc(with_(MIN_6003, "actor.user", DELETE))),
    ("missing_identity", enc(with_(MIN_6003, "actor.user.uid", ""))),
    # a 6003 event names its identity in actor.user, not user
    ("missing_identity", enc(dict(with_(MIN_6003, "actor", DELETE), user={"uid": "bob"}))),
    ("missing_identity", enc(dict(with_(MIN_3002, "user", DELETE), actor={"user": {"uid": "b"}}))),
    ("unsupported_class", enc(with_(MIN_3002, "class_uid", 4001))),
    ("unsupported_class", enc(with_(MIN_3002, "class_uid", 0))),
    ("unsupported_class", enc(with_(MIN_3002, "class_uid", -3002))),
    # another class's fields may not fit our types: still unsupported_class, not wrong_type
    ("unsupported_class", enc(dict(MIN_3002, class_uid=1001, user="root", traffic=[1]))),
    ("absurd_time", enc(with_(MIN_3002, "time", 0))),
    ("absurd_time", enc(with_(MIN_3002, "time", NOW + 86_400_001))),
    (
        "invalid_value",
        enc(with_(AGENT_CALL, "resources.0.data_classification.confidentiality_id", 7)),
    ),
    ("invalid_value", enc(with_(MIN_3002, "unmapped.identity_kind", "robot"))),
    ("invalid_value", enc(with_(MIN_3002, "unmapped.identity_kind", "Agent"))),
    ("invalid_value", enc(with_(MIN_3002, "status_id", 3))),
    ("invalid_value", enc(with_(MIN_3002, "severity_id", 7))),
    ("invalid_value", enc(with_(MIN_3002, "user.type_id", 5))),
    ("invalid_value", enc(with_(MIN_6003, "actor.user.type_id", -1))),
    ("invalid_value", enc(with_(HUMAN_LOGON, "src_endpoint.location.lat", 90.0001))),
    ("invalid_value", enc(with_(HUMAN_LOGON, "src_endpoint.location.lat", -91))),
    ("invalid_value", enc(with_(HUMAN_LOGON, "src_endpoint.location.long", 180.5))),
    ("invalid_value", b'{"src_endpoint": {"location": {"lat": 1e400}}}'),  # overflows to inf
    ("invalid_value", enc(with_(HUMAN_LOGON, "src_endpoint.location.country", "DEU"))),
    ("invalid_value", enc(with_(HUMAN_LOGON, "src_endpoint.location.country", "D1"))),
    ("invalid_value", enc(with_(HUMAN_LOGON, "src_endpoint.location.country", ""))),
    ("invalid_value", enc(with_(HUMAN_LOGON, "src_endpoint.location.country", "DE\n"))),
    ("invalid_value", enc(with_(HUMAN_LOGON, "src_endpoint.autonomous_system.number", -5))),
    ("invalid_value", enc(with_(HUMAN_LOGON, "src_endpoint.autonomous_system.number", 2**32))),
    ("invalid_value", enc(with_(AGENT_CALL, "traffic.bytes_in", -1))),
    ("invalid_value", enc(with_(AGENT_CALL, "traffic.bytes_out", 2**63))),
    ("invalid_value", enc(with_(AGENT_CALL, "http_response.length", -1))),
    ("wrong_type", enc(with_(AGENT_CALL, "http_request.length", "912"))),
    ("invalid_value", enc(with_(AGENT_CALL, "unmapped.model.digest", "sha256:abc"))),
    ("invalid_value", enc(with_(AGENT_CALL, "unmapped.model.digest", "md5:" + "0" * 64))),
    ("invalid_value", enc(with_(AGENT_CALL, "unmapped.model.digest", "sha256:" + "AB" * 32))),
    ("invalid_value", enc(with_(AGENT_CALL, "unmapped.model.digest", DIGEST + "\n"))),
    # tool manifest / system prompt hashes: validated like model digests
    ("invalid_value", enc(with_(AGENT_CALL, "unmapped.tool_manifest_hash", "sha256:abc"))),
    ("invalid_value", enc(with_(AGENT_CALL, "unmapped.tool_manifest_hash", "sha256:" + "AB" * 32))),
    ("invalid_value", enc(with_(AGENT_CALL, "unmapped.tool_manifest_hash", TOOLS + "\n"))),
    ("invalid_value", enc(with_(AGENT_CALL, "unmapped.system_prompt_hash", "md5:" + "0" * 64))),
    ("invalid_value", enc(with_(AGENT_CALL, "unmapped.system_prompt_hash", "ef" * 32))),
    ("invalid_value", enc(with_(AGENT_CALL, "unmapped.system_prompt_hash", PROMPT + "0"))),
    ("wrong_type", enc(with_(AGENT_CALL, "unmapped.tool_manifest_hash", 12))),
    ("wrong_type", enc(with_(AGENT_CALL, "unmapped.system_prompt_hash", ["sha256:"]))),
    ("invalid_value", enc(with_(AGENT_CALL, "unmapped.credential.step", -1))),
    ("invalid_value", enc(with_(AGENT_CALL, "unmapped.credential.expires_at", -1.5))),
    ("invalid_value", enc(with_(MIN_3002, "activity_id", 100))),
    ("invalid_value", enc(with_(MIN_3002, "activity_id", -1))),
    ("invalid_value", enc(with_(MIN_3002, "category_uid", 6))),
    ("invalid_value", enc(with_(HUMAN_LOGON, "type_uid", 300202))),
]


@pytest.mark.parametrize(
    ("reason", "data"), BAD_INPUTS, ids=[f"{r}-{i}" for i, (r, _) in enumerate(BAD_INPUTS)]
)
def test_bad_input_reason(dec: EventDecoder, reason: str, data: bytes) -> None:
    assert reason_of(dec, data) == reason


def test_every_reason_is_produced() -> None:
    produced = {r for r, _ in BAD_INPUTS} | {"oversized"}
    assert produced == set(REASONS)


def test_tombstone_is_invalid_json(dec: EventDecoder) -> None:
    assert reason_of(dec, None) == "invalid_json"  # type: ignore[arg-type]


def test_oversized_checked_before_parsing() -> None:
    dec = EventDecoder(max_bytes=10)
    assert reason_of(dec, b"not json at all, but too long") == "oversized"
    assert reason_of(dec, b"x" * 11) == "oversized"
    assert reason_of(dec, b"x" * 10) == "invalid_json"


def test_wrong_type_detail_names_path(dec: EventDecoder) -> None:
    with pytest.raises(InvalidEvent) as info:
        dec.decode(enc(with_(AGENT_CALL, "resources.1.uid", 5)), now_ms=NOW)
    assert info.value.reason == "wrong_type"
    assert "`$.resources[1].uid`" in info.value.detail
    with pytest.raises(InvalidEvent) as info:
        dec.decode(enc(with_(MIN_3002, "user.uid", 1)), now_ms=NOW)
    assert "`$.user.uid`" in info.value.detail


def test_invalid_value_detail_names_path(dec: EventDecoder) -> None:
    with pytest.raises(InvalidEvent) as info:
        dec.decode(enc(with_(AGENT_CALL, "traffic.bytes_in", -1)), now_ms=NOW)
    assert "`$.traffic.bytes_in`" in info.value.detail


def test_detail_is_bounded(dec: EventDecoder) -> None:
    d = with_(AGENT_CALL, "unmapped.model.digest", "x" * 10_000)
    with pytest.raises(InvalidEvent) as info:
        dec.decode(enc(d), now_ms=NOW)
    assert len(info.value.detail) <= 300


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("class_uid", "unsupported_class"),
        ("time", "absurd_time"),
        ("type_uid", "invalid_value"),
        ("category_uid", "invalid_value"),
    ],
)
def test_detail_bounded_for_huge_numbers(dec: EventDecoder, path: str, reason: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        dec.decode(enc(with_(MIN_3002, path, int("9" * 4000))), now_ms=NOW)
    assert info.value.reason == reason
    assert len(info.value.detail) <= 300


def test_invalid_event_str_is_reason_prefixed(dec: EventDecoder) -> None:
    with pytest.raises(InvalidEvent) as info:
        dec.decode(b"[]")
    assert str(info.value).startswith("not_an_object: ")


# --- helpers --------------------------------------------------------------------------------


def test_encode_event_dict_roundtrip(dec: EventDecoder) -> None:
    data = encode_event_dict(AGENT_CALL)
    assert isinstance(data, bytes)
    assert json.loads(data) == AGENT_CALL
    assert dec.decode(data, now_ms=NOW).uid == "evt-6003-1"


def test_identity_key(dec: EventDecoder) -> None:
    assert identity_key(dec.decode(enc(AGENT_CALL), now_ms=NOW)) == b"agent-42"
    d = with_(MIN_3002, "user.uid", "zoë")
    assert identity_key(dec.decode(enc(d), now_ms=NOW)) == "zoë".encode()


def test_event_msgspec_roundtrip(dec: EventDecoder) -> None:
    ev = dec.decode(enc(AGENT_CALL), now_ms=NOW)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(ev), type=Event) == ev


def test_docs_examples_decode(dec: EventDecoder) -> None:
    """The two complete examples in docs/EVENTS.md are valid and decode as described."""
    text = (Path(__file__).resolve().parents[3] / "docs" / "EVENTS.md").read_text()
    section = text.split("\n## Examples\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```json\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2
    logon, call = (dec.decode(b.encode(), now_ms=1_767_225_700_000) for b in blocks)
    assert (logon.class_uid, logon.identity_uid, logon.identity_kind) == (3002, "u-alice", "human")
    assert logon.is_mfa is True
    assert (call.class_uid, call.identity_uid, call.identity_kind) == (
        6003,
        "agent-invoice-7",
        "agent",
    )
    assert call.credential is not None and call.model is not None
    assert call.tool_manifest_hash is not None and call.system_prompt_hash is not None
    assert call.delegated_by == "u-alice" and call.rationale and len(call.resources) == 2


# --- bounded by construction (issue 12.1, 12.9) ----------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["actor.user.uid", "actor.user.name", "metadata.uid", "api.operation",
     "unmapped.credential.issued_to", "unmapped.credential.uid", "unmapped.delegated_by",
     "resources.0.uid"],
)  # fmt: skip
def test_over_long_identifiers_are_dead_lettered(dec: EventDecoder, path: str) -> None:
    from pipeline.events.schemas import MAX_NAME_CHARS

    assert dec.decode(enc(with_(AGENT_CALL, path, "x" * MAX_NAME_CHARS)), now_ms=NOW)
    assert reason_of(dec, enc(with_(AGENT_CALL, path, "x" * 400_000))) == "invalid_value"


def test_resource_lists_and_free_text_are_bounded(dec: EventDecoder) -> None:
    from pipeline.events.schemas import MAX_RESOURCES, MAX_TEXT_CHARS

    many = [{"uid": f"r-{i}", "type": "object"} for i in range(MAX_RESOURCES + 1)]
    assert reason_of(dec, enc(with_(AGENT_CALL, "resources", many))) == "invalid_value"
    assert dec.decode(enc(with_(AGENT_CALL, "resources", many[:-1])), now_ms=NOW)
    long_text = with_(AGENT_CALL, "unmapped.rationale", "y" * (MAX_TEXT_CHARS + 1))
    assert reason_of(dec, enc(long_text)) == "invalid_value"


@pytest.mark.parametrize("char", ["\x00", "\u200b", "\u202e", "\u2066", "\n", "\x1b", "\ufeff"])
@pytest.mark.parametrize("path", ["actor.user.uid", "unmapped.credential.issued_to",
                                  "unmapped.delegated_by"])  # fmt: skip
def test_identity_uids_with_invisible_characters_are_refused(
    dec: EventDecoder, char: str, path: str
) -> None:
    """NUL, zero-width, bidi overrides, line breaks: an uid that can pass for another one."""
    with pytest.raises(InvalidEvent) as info:
        dec.decode(enc(with_(AGENT_CALL, path, f"agent{char}42")), now_ms=NOW)
    assert info.value.reason == "invalid_value" and f"U+{ord(char):04X}" in info.value.detail


def test_the_largest_valid_event_makes_a_finding_far_below_the_broker_limit() -> None:
    """Every string at its bound, a credential of another agent (a Critical finding)."""
    from pipeline.alerts.findings import build_finding, encode_finding
    from pipeline.detection import Detection
    from pipeline.events.schemas import MAX_NAME_CHARS, MAX_RESOURCES, MAX_TEXT_CHARS

    n = MAX_NAME_CHARS
    big = copy.deepcopy(AGENT_CALL)
    big["actor"] = {"user": {"uid": "a" * n, "name": "b" * n}, "session": {"uid": "s" * n}}
    big["metadata"]["uid"] = "m" * n
    big["api"] = {"operation": "o" * n, "service": {"name": "v" * n}}
    big["resources"] = [{"uid": f"{i:04d}" + "r" * (n - 4), "type": "t" * n,
                         "data_classification": {"confidentiality_id": 4}}
                        for i in range(MAX_RESOURCES)]  # fmt: skip
    big["unmapped"].update(
        credential={"uid": "c" * n, "issued_to": "i" * n, "task_uid": "k" * n, "step": 1,
                    "expires_at": T - 600_000},
        delegated_by="d" * n, environment="e" * n, rationale="w" * MAX_TEXT_CHARS,
        model={"name": "n" * n, "version": "v" * n, "digest": DIGEST},
    )  # fmt: skip
    data = enc(big)
    assert len(data) < 1_048_576  # it is a valid event under the default input limit
    events = [EventDecoder().decode(data, now_ms=NOW)]
    for i in range(1, 40):  # an incident that keeps going: evidence accumulates
        events.append(msgspec.structs.replace(events[0], uid=f"{i:04d}" + "m" * (n - 4),
                                              time_ms=T + i * 1000))  # fmt: skip
    result = Detection().process(events, {})
    sizes = [len(encode_finding(build_finding(d, product_version="t"))) for d in result.decisions]
    assert sizes and max(sizes) < 512 * 1024, max(sizes)


@pytest.mark.parametrize(
    "data",
    [
        b'{"class_uid": 3002, "class_uid": 6003}',
        b'{"class_uid": 3002, "class\\u005fuid": 6003}',  # the same name, escaped
        b'{"actor": {"user": {"uid": "agt-1", "uid": "agt-victim"}}}',
        b'{"unmapped": {"credential": {"issued_to": "a"}}, "unmapped": {}}',
        b'{"resources": [{"uid": "r", "uid": "s"}]}',
    ],
)
def test_duplicate_keys_are_refused_wherever_they_are(dec: EventDecoder, data: bytes) -> None:
    """Issue 12.9: msgspec keeps the last value, other parsers the first: refuse both."""
    spliced = enc(AGENT_CALL)[:-1] + b', "x-dup": ' + data + b"}"  # deep in a valid event
    for raw in (data, spliced):
        with pytest.raises(InvalidEvent, match="duplicate object key") as info:
            dec.decode(raw, now_ms=NOW)
        assert info.value.reason == "invalid_json"


def test_same_key_in_different_objects_is_fine(dec: EventDecoder) -> None:
    assert dec.decode(enc(AGENT_CALL), now_ms=NOW).identity_uid == "agent-42"  # uid x4, type x2


def test_a_tombstone_and_an_empty_message_say_what_they_are(dec: EventDecoder) -> None:
    """A keyed tombstone used to be dead-lettered as 'Input data was truncated' (the worker
    passed its missing value on as zero bytes)."""
    with pytest.raises(InvalidEvent, match="invalid_json: a tombstone"):
        dec.decode(None)
    with pytest.raises(InvalidEvent, match="invalid_json: an empty message"):
        dec.decode(b"")


def test_the_fast_country_check_is_the_pattern(dec: EventDecoder) -> None:
    """The hot path checks ``country`` in Python instead of msgspec's pattern: the same verdict
    for every string of up to two characters over ASCII and a few look-alikes."""
    pattern = re.compile(r"\A[A-Za-z]{2}\Z")
    odd = ["é", "ß", "\uff25", "\u017f", "\u212a", "\u00a0", "\u0661"]  # fullwidth E, Kelvin
    chars = [chr(c) for c in range(128)] + odd
    samples = ["", "ESP", "E S", "ES\n", *chars, *(a + b for a in chars for b in chars)]
    event = copy.deepcopy(HUMAN_LOGON)
    for country in samples:
        event["src_endpoint"]["location"]["country"] = country
        try:
            got = dec.decode(enc(event), now_ms=NOW).country
        except InvalidEvent as exc:
            assert exc.reason == "invalid_value", repr(country)
            got = None
        assert got == (country.upper() if pattern.search(country) else None), repr(country)


@pytest.mark.parametrize("country", ["E", "ESP", "E1", "\uff25\uff33", "ES\n", 7])
@pytest.mark.parametrize(
    "then", [{}, {"time": "x"}, {"class_uid": 4001}, {"metadata": []}, {"dst_endpoint": 5}]
)
def test_a_bad_country_is_refused_as_the_strict_decoder_refuses_it(
    dec: EventDecoder, country: Any, then: dict[str, Any]
) -> None:
    """The fast path hands anything it doubts to the strict decoder: the first error in the
    document, its reason and its words are what they always were."""
    event = {**copy.deepcopy(HUMAN_LOGON), **then}
    event["src_endpoint"]["location"]["country"] = country
    raw = enc(event)
    with pytest.raises(InvalidEvent) as info:
        dec.decode(raw, now_ms=NOW)
    with pytest.raises(msgspec.ValidationError) as strict:
        msgspec.json.decode(raw, type=OcsfEvent)
    expected = dec._classify(raw, str(strict.value))
    assert (info.value.reason, info.value.detail) == (expected.reason, expected.detail)


def _outcome(result: Event | InvalidEvent) -> tuple[str, ...]:
    if isinstance(result, InvalidEvent):
        return ("refused", result.reason, result.detail)
    return ("event", repr(result))


@pytest.mark.parametrize("max_bytes", [1_048_576, 1_500])
def test_a_batch_decodes_as_its_values_one_by_one(max_bytes: int) -> None:
    """decode_batch scans the batch's keys in one call: every value still gets what decode
    gives it (event or refusal, reason and words), duplicates, tombstones and oversized too."""
    from pipeline.simulate.hostile import corpus
    from pipeline.simulate.malformed import bad_samples

    values: list[bytes | None] = [r.value for r in corpus(600, seed=3, now_ms=NOW)]
    values += [s.value for s in bad_samples(NOW, oversize=2_000)]
    values += [enc(AGENT_CALL), enc(HUMAN_LOGON), b'{"a": 1, "\\u0061": 2}', None, b""]
    values.append(b"{" + b" " * max_bytes + b"}")
    dec = EventDecoder(max_bytes=max_bytes)
    one_by_one = []
    for value in values:
        try:
            one_by_one.append(_outcome(dec.decode(value, now_ms=NOW)))
        except InvalidEvent as exc:
            one_by_one.append(_outcome(exc))
    for size in (1, 7, len(values)):
        batched = [
            _outcome(r)
            for i in range(0, len(values), size)
            for r in dec.decode_batch(values[i : i + size], now_ms=NOW)
        ]
        assert batched == one_by_one
    kinds = {o[0] for o in one_by_one} | {o[1] for o in one_by_one if o[0] == "refused"}
    assert {"event", "invalid_json", "oversized"} <= kinds
    assert dec.decode_batch([], now_ms=NOW) == []


def test_clean_keys_scans_documents_laid_end_to_end_as_each_alone() -> None:
    """One compiled call over the batch: each document's verdict is its own scan's, whatever
    precedes it (an unclosed string, an unbalanced bracket, deep nesting)."""
    from pipeline.events.duplicate_keys import _scan, clean_keys, duplicate_key
    from pipeline.simulate.hostile import corpus

    values = [r.value for r in corpus(600, seed=5, now_ms=NOW) if r.value is not None]
    values += [b'{"a": "x', b'{"a": 1}', b"]]]", b'{"a": 1, "a": 2}', b"[" * 70, b'{"b": {}}']
    values += [b'{"k": 1, "\\u006b": 2}', b'{"a": "\\', b'{"a": {"b": 1}, "b": 2}']
    clean = clean_keys(values)
    assert clean == [_scan(v) == 0 for v in values]
    assert all(duplicate_key(v) is None for v, ok in zip(values, clean, strict=True) if ok)
    # Both verdicts, on documents whose answer is known, wherever they sit in the batch.
    verdict = dict(zip(values, clean, strict=True))
    assert verdict[b'{"a": 1}'] and verdict[b'{"b": {}}']
    assert not verdict[b'{"a": 1, "a": 2}'] and not verdict[b'{"k": 1, "\\u006b": 2}']
