"""Property tests for EventDecoder: valid events round-trip; junk only ever raises InvalidEvent."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import InvalidEvent
from pipeline.events.schemas import (
    REASONS,
    Actor,
    Credential,
    Event,
    EventDecoder,
    Metadata,
    ModelRef,
    OcsfEvent,
    Unmapped,
    User,
    encode_event_dict,
)

NOW = 1_760_000_000_000
MIN_T = 946_684_800_000
SKEW = 86_400_000
DEC = EventDecoder(min_time_ms=MIN_T, max_future_skew_ms=SKEW)
PROFILE = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies -----------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
text = st.text(max_size=24)
# Identity uids are printable (no control, format or separator characters: see below).
identity = st.text(min_size=1, max_size=24).filter(lambda s: not s.isspace() and s.isprintable())
printable = st.text(max_size=24).filter(str.isprintable)
hex64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
country = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", min_size=2, max_size=2
)
times = st.integers(MIN_T, NOW + SKEW) | st.floats(MIN_T, NOW + SKEW)
nonneg = st.integers(0, 2**63 - 1)


def extras(known: type) -> st.SearchStrategy[dict[str, Any]]:
    """Unknown fields for an object whose known keys are the fields of struct ``known``."""
    names = set(known.__struct_fields__)  # type: ignore[attr-defined]
    return st.dictionaries(
        st.text(max_size=10).filter(lambda k: k not in names), json_values, max_size=3
    )


@st.composite
def optional_fields(draw: st.DrawFn, /, **fields: st.SearchStrategy[Any]) -> dict[str, Any]:
    """Each field present or absent at random (None also counts as absent)."""
    return {k: draw(v) for k, v in fields.items() if draw(st.booleans())}


@st.composite
def users(draw: st.DrawFn) -> dict[str, Any]:
    u = draw(extras(User))
    u["uid"] = draw(identity)
    u.update(
        draw(optional_fields(name=text | st.none(), type_id=st.sampled_from([0, 1, 2, 3, 4, 99])))
    )
    return u


src_endpoints = optional_fields(
    ip=text,
    location=optional_fields(
        country=country, lat=st.floats(-90, 90) | st.integers(-90, 90), long=st.floats(-180, 180)
    ),
    autonomous_system=optional_fields(number=st.integers(0, 2**32 - 1)),
)
resources = st.lists(
    optional_fields(
        uid=text,
        type=text,
        data_classification=optional_fields(
            confidentiality_id=st.sampled_from([0, 1, 2, 3, 4, 5, 6, 99])
        ),
    ),
    max_size=4,
)


@st.composite
def unmappeds(draw: st.DrawFn) -> dict[str, Any]:
    u = draw(extras(Unmapped))
    u.update(
        draw(
            optional_fields(
                identity_kind=st.sampled_from(["human", "service", "agent"]),
                credential=optional_fields(
                    uid=text,
                    issued_to=printable,
                    task_uid=text,
                    step=nonneg,
                    expires_at=nonneg | st.floats(0, 4e12),
                ),
                model=optional_fields(name=text, version=text, digest=hex64.map("sha256:".__add__)),
                delegated_by=printable,
                environment=text,
                rationale=text,
            )
        )
    )
    return u


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    """A contract-conforming OCSF dict of either class, with random unknown fields."""
    cls = draw(st.sampled_from([3002, 6003]))
    activity = draw(st.integers(0, 99))
    d = draw(extras(OcsfEvent))
    meta = draw(extras(Metadata))
    meta["uid"] = draw(st.text(min_size=1, max_size=24))
    meta.update(
        draw(
            optional_fields(
                version=text, product=st.fixed_dictionaries({"name": text}), correlation_uid=text
            )
        )
    )
    d.update(class_uid=cls, activity_id=activity, time=draw(times), metadata=meta)
    d.update(
        draw(
            optional_fields(
                category_uid=st.just(cls // 1000),
                type_uid=st.just(cls * 100 + activity),
                severity_id=st.sampled_from([0, 1, 2, 3, 4, 5, 6, 99]),
                status_id=st.sampled_from([0, 1, 2, 99]),
                src_endpoint=src_endpoints,
                unmapped=unmappeds(),
            )
        )
    )
    actor: dict[str, Any] = draw(extras(Actor))
    if cls == 3002:
        d["user"] = draw(users())
        d.update(
            draw(
                optional_fields(
                    is_mfa=st.booleans(),
                    auth_protocol=text,
                    service=st.fixed_dictionaries({"name": text}),
                    dst_endpoint=optional_fields(ip=text, hostname=text),
                )
            )
        )
    else:
        actor["user"] = draw(users())
        actor.update(draw(optional_fields(session=st.fixed_dictionaries({"uid": text}))))
        d["actor"] = actor
        d.update(
            draw(
                optional_fields(
                    api=optional_fields(
                        operation=text, service=st.fixed_dictionaries({"name": text})
                    ),
                    resources=resources,
                    traffic=optional_fields(bytes_in=nonneg, bytes_out=nonneg),
                )
            )
        )
    return d


def expected_kind(d: dict[str, Any]) -> str:
    kind = d.get("unmapped", {}).get("identity_kind")
    if kind:
        return str(kind)
    user = d["user"] if d["class_uid"] == 3002 else d["actor"]["user"]
    return "service" if user.get("type_id") == 4 else "human"


def decode_or_reason(data: bytes) -> Event | str:
    """decode(); an InvalidEvent becomes its reason. Any other exception fails the test."""
    try:
        ev = DEC.decode(data, now_ms=NOW)
    except InvalidEvent as exc:
        assert exc.reason in REASONS, exc.reason
        assert isinstance(exc.detail, str) and exc.detail
        return exc.reason
    assert isinstance(ev, Event)
    return ev


# --- (a) valid events round-trip ------------------------------------------------------------


@PROFILE
@given(valid_events())
def test_valid_event_roundtrips(d: dict[str, Any]) -> None:
    ev = DEC.decode(encode_event_dict(d), now_ms=NOW)
    user = d["user"] if d["class_uid"] == 3002 else d["actor"]["user"]
    assert ev.class_uid == d["class_uid"]
    assert ev.activity_id == d["activity_id"]
    assert ev.uid == d["metadata"]["uid"]
    assert ev.identity_uid == user["uid"]
    assert ev.identity_name == user.get("name")
    assert ev.time_ms == int(d["time"]) and type(ev.time_ms) is int
    assert ev.identity_kind == expected_kind(d)
    assert len(ev.resources) == len(d.get("resources", []))
    ext = d.get("unmapped", {})
    if "credential" in ext:
        assert isinstance(ev.credential, Credential)
        assert ev.credential.uid == ext["credential"].get("uid")
    else:
        assert ev.credential is None
    if "model" in ext:
        assert isinstance(ev.model, ModelRef)
        assert ev.model.digest == ext["model"].get("digest")
    loc = d.get("src_endpoint", {}).get("location", {})
    assert ev.country == (loc["country"].upper() if "country" in loc else None)
    # Producers use different JSON writers: spacing and escaping must not matter.
    assert DEC.decode(json.dumps(d, indent=1).encode(), now_ms=NOW) == ev


# --- (b) junk never escapes as anything but InvalidEvent -------------------------------------


@PROFILE
@given(st.binary(max_size=512))
def test_arbitrary_bytes(data: bytes) -> None:
    decode_or_reason(data)


@PROFILE
@given(json_values)
def test_arbitrary_json(value: Any) -> None:
    result = decode_or_reason(json.dumps(value).encode())
    if not isinstance(value, dict):
        assert result == "not_an_object"


# Objects using our field names with arbitrary values reach far deeper than random keys do.
def _known_keyed(depth: int) -> st.SearchStrategy[Any]:
    keys = st.sampled_from(
        sorted(
            set(OcsfEvent.__struct_fields__)
            | {
                "uid",
                "name",
                "type_id",
                "session",
                "operation",
                "number",
                "location",
                "country",
                "lat",
                "long",
                "ip",
                "hostname",
                "bytes_in",
                "bytes_out",
                "identity_kind",
                "credential",
                "model",
                "digest",
                "step",
                "expires_at",
                "data_classification",
                "confidentiality_id",
                "product",
                "version",
                "correlation_uid",
            }
        )
    )
    if depth == 0:
        return json_values
    child = _known_keyed(depth - 1)
    return st.dictionaries(keys, child | json_scalars, max_size=6) | st.lists(child, max_size=3)


@PROFILE
@given(_known_keyed(3))
def test_arbitrary_json_with_known_keys(value: Any) -> None:
    decode_or_reason(json.dumps(value).encode())


@PROFILE
@given(valid_events(), st.data())
def test_valid_event_with_random_subtree(d: dict[str, Any], data: st.DataObject) -> None:
    """Replace one random node of a valid event with arbitrary JSON (incl. NaN/Infinity)."""
    d = copy.deepcopy(d)
    node: Any = d
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = data.draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, dict | list) and child and data.draw(st.booleans()):
            node = child
            continue
        node[key] = data.draw(json_values | st.floats())
        break
    decode_or_reason(json.dumps(d).encode())


@PROFILE
@given(valid_events(), st.integers(0, 10_000), st.binary(min_size=1, max_size=4))
def test_corrupted_bytes(d: dict[str, Any], pos: int, junk: bytes) -> None:
    raw = encode_event_dict(d)
    pos %= len(raw)
    decode_or_reason(raw[:pos] + junk + raw[pos + len(junk) :])
    decode_or_reason(raw[:pos])  # truncation


# --- (c) wrong-typed values -------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
small_list = st.lists(json_scalars, max_size=2)
small_dict = st.dictionaries(st.text(max_size=3), json_scalars, max_size=2)
short = st.text(max_size=5)
# A float is the wrong type for an int field (msgspec does not coerce 1.0 to 1).
not_str = st.integers() | st.booleans() | finite | small_list | small_dict
not_int = short | st.booleans() | finite | small_list | small_dict
not_number = short | st.booleans() | small_list | small_dict
not_bool = st.integers() | short | finite | small_list | small_dict
not_object = st.integers() | st.booleans() | short | finite | small_list
not_array = st.integers() | st.booleans() | short | finite | small_dict

MUTATIONS: list[tuple[str, st.SearchStrategy[Any]]] = [
    ("class_uid", not_int),
    ("activity_id", not_int),
    ("category_uid", not_int),
    ("type_uid", not_int),
    ("severity_id", not_int),
    ("status_id", not_int),
    ("time", not_number),
    ("is_mfa", not_bool),
    ("auth_protocol", not_str),
    ("metadata", not_object),
    ("metadata.uid", not_str),
    ("metadata.correlation_uid", not_str),
    ("metadata.product", not_object),
    ("user", not_object),
    ("user.uid", not_str),
    ("user.name", not_str),
    ("user.type_id", not_int),
    ("actor", not_object),
    ("actor.user", not_object),
    ("actor.user.uid", not_str),
    ("actor.session.uid", not_str),
    ("api.operation", not_str),
    ("api.service", not_object),
    ("service.name", not_str),
    ("resources", not_array),
    ("traffic.bytes_in", not_int),
    ("traffic.bytes_out", not_int),
    ("src_endpoint.ip", not_str),
    ("src_endpoint.location", not_object),
    ("src_endpoint.location.country", not_str),
    ("src_endpoint.location.lat", not_number),
    ("src_endpoint.location.long", not_number),
    ("src_endpoint.autonomous_system.number", not_int),
    ("dst_endpoint.hostname", not_str),
    ("unmapped", not_object),
    ("unmapped.identity_kind", not_str),
    ("unmapped.credential", not_object),
    ("unmapped.credential.step", not_int),
    ("unmapped.credential.expires_at", not_number),
    ("unmapped.model.digest", not_str),
    ("unmapped.delegated_by", not_str),
    ("unmapped.environment", not_str),
    ("unmapped.rationale", not_str),
]


def set_path(d: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = d
    for p in parents:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[last] = value


@pytest.mark.parametrize(("path", "bad"), MUTATIONS, ids=[p for p, _ in MUTATIONS])
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_wrong_type_mutation(path: str, bad: st.SearchStrategy[Any], data: st.DataObject) -> None:
    d = copy.deepcopy(data.draw(valid_events()))
    set_path(d, path, data.draw(bad))
    result = decode_or_reason(json.dumps(d).encode())
    assert result in ("wrong_type", "invalid_value"), (path, result)


@PROFILE
@given(valid_events(), st.sampled_from([p for p, _ in MUTATIONS]), st.data())
def test_wrong_type_detail_names_the_path(
    d: dict[str, Any], path: str, data: st.DataObject
) -> None:
    d = copy.deepcopy(d)
    bad: st.SearchStrategy[Any] = (
        st.just({}) if path == "resources" else st.lists(st.integers(), max_size=1)
    )
    set_path(d, path, data.draw(bad))
    with pytest.raises(InvalidEvent) as info:
        DEC.decode(json.dumps(d).encode(), now_ms=NOW)
    assert info.value.reason == "wrong_type"
    assert f"`$.{path}`" in info.value.detail
