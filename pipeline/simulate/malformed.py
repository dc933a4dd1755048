"""Malformed input, one sample per dead-letter reason, for the demo and the tests.

Real producers send broken data; the demo mixes these in so the dead-letter path is visible,
and the integration tests check each one lands there with the expected reason.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple


class BadSample(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes | None
    reason: str  # the reason code the decoder must give


def valid_logon(uid: str, time_ms: int) -> dict[str, Any]:
    return {
        "class_uid": 3002,
        "category_uid": 3,
        "activity_id": 1,
        "type_uid": 300201,
        "severity_id": 1,
        "time": time_ms,
        "metadata": {"uid": uid, "version": "1.8.0", "product": {"name": "custos-demo"}},
        "user": {"uid": "bad-input-producer", "type_id": 1},
        "status_id": 1,
    }


def bad_samples(now_ms: int, tag: str = "0", oversize: int = 1_200_000) -> list[BadSample]:
    """One message per reason code. ``tag`` keeps metadata uids unique across calls."""
    t_id, t_ag = "identity.events", "agent.events"

    def enc(d: dict[str, Any]) -> bytes:
        return json.dumps(d).encode()

    def variant(name: str, **change: Any) -> dict[str, Any]:
        d = valid_logon(f"bad-{tag}-{name}", now_ms)
        d.update(change)
        return d

    wrong_type = variant("wrong_type")
    wrong_type["user"] = {"uid": 42}
    no_identity = variant("missing_identity")
    no_identity["user"] = {"name": "nobody"}
    no_uid = variant("missing_field")
    del no_uid["metadata"]["uid"]
    bad_value = variant("invalid_value", status_id=1)
    bad_value["src_endpoint"] = {"location": {"country": "Narnia"}}
    big = variant("oversized")
    big["unmapped"] = {"padding": "x" * oversize}
    return [
        BadSample(t_id, b"k", b'{"class_uid": 3002, "time": ', "invalid_json"),
        BadSample(t_id, b"k", b"\xff\xfe\x00garbage", "invalid_json"),
        BadSample(t_ag, None, None, "invalid_json"),  # a tombstone: no value at all
        BadSample(t_ag, b"k", b"[1, 2, 3]", "not_an_object"),
        BadSample(t_id, b"42", enc(wrong_type), "wrong_type"),
        BadSample(t_id, None, enc(no_identity), "missing_identity"),
        BadSample(t_id, b"u", enc(no_uid), "missing_field"),
        BadSample(t_id, b"u", enc(variant("absurd_time", time=32_503_680_000_000)), "absurd_time"),
        BadSample(
            t_ag, b"u", enc(variant("unsupported_class", class_uid=4001)), "unsupported_class"
        ),
        BadSample(t_id, b"u", enc(bad_value), "invalid_value"),
        BadSample(t_id, b"u", enc(big), "oversized"),
    ]
