"""A hostile input corpus: what an attacker or a broken producer puts on the input topics.

:func:`corpus` mixes valid events with mutations of them, deterministic for a seed: byte flips,
truncation, invalid UTF-8, NUL bytes, type swaps, NaN / Infinity, 64-bit and negative
timestamps, deep nesting, long strings and identifiers, duplicate keys (plain and escaped),
invisible characters in identity uids, tombstones, empty messages, msgpack, XML, CSV. Each
record says whether it is valid (must be scored exactly once) or not (must be dead-lettered
with its original bytes); what the decoder makes of a random byte flip is not predicted, only
checked to be one or the other.

>>> records = corpus(200, seed=1, now_ms=1_790_000_000_000)
>>> len(records), sum(r.valid is True for r in records) > 0
(200, True)
>>> sum(r.valid is False for r in records) > 100
True
>>> sorted({r.kind for r in records if r.valid is None})  # the decoder decides these
['deep', 'flip']
"""

from __future__ import annotations

import json
import random
from typing import Any, NamedTuple

import msgspec

__all__ = ["HostileRecord", "corpus"]


class HostileRecord(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes | None
    valid: bool | None  # None: a random mutation, valid or not (the decoder decides)
    kind: str


def _event(i: int, now_ms: int, rng: random.Random) -> dict[str, Any]:
    agent = rng.random() < 0.5
    uid = f"hostile-{i}"
    who = f"{'agt' if agent else 'usr'}-h{rng.randrange(50):02d}"
    if agent:
        return {
            "class_uid": 6003, "category_uid": 6, "activity_id": 2, "type_uid": 600302,
            "time": now_ms - rng.randrange(3_600_000), "status_id": 1,
            "metadata": {"uid": uid, "version": "1.8.0", "product": {"name": "hostile"}},
            "actor": {"user": {"uid": who, "type_id": 99}, "session": {"uid": f"t-{i % 97}"}},
            "api": {"operation": rng.choice(["crm.read", "mail.send", "s3.get"]),
                    "service": {"name": rng.choice(["crm", "mail", "s3"])}},
            "resources": [{"uid": f"r/{rng.randrange(20)}", "type": "record"}],
            "unmapped": {"identity_kind": "agent"},
        }  # fmt: skip
    return {
        "class_uid": 3002, "category_uid": 3, "activity_id": 1, "type_uid": 300201,
        "time": now_ms - rng.randrange(3_600_000), "status_id": 1,
        "metadata": {"uid": uid, "version": "1.8.0", "product": {"name": "hostile"}},
        "user": {"uid": who, "type_id": 1},
        "src_endpoint": {"ip": f"10.0.{rng.randrange(4)}.{rng.randrange(250)}",
                         "location": {"country": "DE"}},
    }  # fmt: skip


def _key(doc: dict[str, Any]) -> bytes:
    user = doc.get("user") or (doc.get("actor") or {}).get("user") or {}
    return str(user.get("uid", "")).encode("utf-8", "surrogatepass")


def corpus(n: int, *, seed: int, now_ms: int, valid_share: float = 0.2) -> list[HostileRecord]:
    """``n`` records: about ``valid_share`` valid events, the rest hostile."""
    rng = random.Random(seed)
    out: list[HostileRecord] = []

    def topic_of(doc: dict[str, Any]) -> str:
        return "agent.events" if doc.get("class_uid") == 6003 else "identity.events"

    def enc(d: Any) -> bytes:
        return json.dumps(d, allow_nan=True).encode("utf-8", "surrogatepass")

    for i in range(n):
        doc = _event(i, now_ms, rng)
        topic, key = topic_of(doc), _key(doc)
        good = enc(doc)
        if rng.random() < valid_share:
            out.append(HostileRecord(topic, key, good, True, "valid"))
            continue
        kind = rng.choice(_KINDS)
        value: bytes | None
        valid: bool | None = False
        if kind == "flip":
            b = bytearray(good)
            for _ in range(rng.randrange(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            value, valid = bytes(b), None
        elif kind == "truncate":
            value = good[: rng.randrange(1, len(good) - 1)]
        elif kind == "invalid_utf8":
            value = good.replace(b'"hostile', b'"\xc3\x28hostile', 1)
        elif kind == "nul":
            value = good.replace(b'"DE"', b'"D\x00E"').replace(b'"1.8.0"', b'"1.8\x00"', 1)
            value = value if value != good else good[:10] + b"\x00" + good[10:]
        elif kind == "type_swap":
            doc["time"] = str(doc["time"])
            value = enc(doc)
        elif kind == "nan":
            doc["time"] = rng.choice([float("nan"), float("inf"), float("-inf")])
            value = enc(doc)
        elif kind == "huge_time":
            doc["time"] = rng.choice([2**63 - 1, 2**64 + 5, -1, 10**30])
            value = enc(doc)
        elif kind == "deep":  # an ignored field 200 deep is fine; 20,000 deep is not
            depth = rng.choice([200, 5_000, 20_000])
            value, valid = good[:-1] + b', "x": ' + b"[" * depth + b"]" * depth + b"}", None
        elif kind == "long_uid":
            user = doc.get("user") or doc["actor"]["user"]
            user["uid"] = "u" * rng.choice([1025, 5_000, 60_000])
            value = enc(doc)
        elif kind == "long_string":
            doc["unmapped"] = {"rationale": "w" * rng.choice([4097, 20_000])}
            value = enc(doc)
        elif kind == "duplicate_key":
            value = rng.choice([
                good[:-1] + b', "class_uid": 4001}',
                good[:-1] + b', "class\\u005fuid": 4001}',
                good.replace(b'"uid": "', b'"uid": "evil", "uid": "', 1),
            ])  # fmt: skip
        elif kind == "invisible":
            user = doc.get("user") or doc["actor"]["user"]
            user["uid"] = user["uid"][:3] + rng.choice(["\u200b", "\u202e", "\ufeff", "\n",
                                                         "\x1b", "\ud800"]) + user["uid"][3:]
            value = enc(doc)
        elif kind == "tombstone":
            value = None
        elif kind == "empty":
            value = rng.choice([b"", b" ", b"\n", b"{}", b"null", b"[]", b'""', b"0"])
        elif kind == "msgpack":
            value = msgspec.msgpack.encode(doc)
        elif kind == "xml":
            value = b"<event><class_uid>3002</class_uid></event>"
        elif kind == "csv":
            value = b"class_uid,time,uid\n3002,1790000000000,x"
        elif kind == "wrong_class":
            doc["class_uid"] = rng.choice([1001, 2004, 0, -1, 6003.5])
            value = enc(doc)
        else:  # "missing"
            doc.pop(rng.choice(["metadata", "time", "activity_id", "class_uid"]))
            value = enc(doc)
        out.append(HostileRecord(topic, rng.choice([key, b"", None, b"\xff"]), value, valid, kind))
    return out


_KINDS = ("flip", "truncate", "invalid_utf8", "nul", "type_swap", "nan", "huge_time", "deep",
          "long_uid", "long_string", "duplicate_key", "invisible", "tombstone", "empty",
          "msgpack", "xml", "csv", "wrong_class", "missing")  # fmt: skip
