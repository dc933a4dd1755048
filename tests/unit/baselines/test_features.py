"""Event → Features (pipeline.baselines.features): one test per feature and transform."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import zlib
from typing import Any

import msgspec
import pytest

import pipeline.baselines.features as features_module
from pipeline.baselines.features import (
    CATEGORICAL,
    CATEGORICAL_INDEX,
    FEATURE_SCHEMA_VERSION,
    NUMERIC,
    NUMERIC_INDEX,
    ROW_FLOATS,
    ROW_INTS,
    Features,
    cat_hash,
    extract,
    extract_rows,
    hour_of_week,
    ip_prefix,
    sensitivity_rank,
)
from pipeline.events.schemas import Credential, Event, ModelRef, Resource

T = 1_767_225_600_000  # Thursday 2026-01-01 00:00 UTC
DIGEST = "sha256:" + "ab" * 32


def ev(**kw: Any) -> Event:
    base: dict[str, Any] = {
        "uid": "e-1",
        "class_uid": 6003,
        "activity_id": 2,
        "time_ms": T,
        "identity_uid": "agent-7",
        "identity_kind": "agent",
    }
    base.update(kw)
    return Event(**base)


def num(f: Features, name: str) -> float:
    return f.numeric[NUMERIC_INDEX[name]]


def cat(f: Features, name: str) -> tuple[int, str | None]:
    i = CATEGORICAL_INDEX[name]
    return f.cat_hashes[i], f.cat_values[i]


def test_constants_fix_the_order_and_version() -> None:
    assert FEATURE_SCHEMA_VERSION == 4
    assert NUMERIC == (
        "bytes_out",
        "bytes_in",
        "failure",
        "no_mfa",
        "sensitivity",
        "n_resources",
        "chain_depth",
    )
    assert CATEGORICAL == (
        "country",
        "asn",
        "ip_prefix",
        "service",
        "operation",
        "resource",
        "delegator",
        "model",
        "environment",
        "auth_protocol",
        "counterparty",
        "combo",
    )
    f = extract(ev())
    assert len(f.numeric) == len(NUMERIC)
    assert len(f.cat_hashes) == len(f.cat_values) == len(CATEGORICAL)


def test_module_docstring_documents_every_feature() -> None:
    doc = features_module.__doc__ or ""
    for name in (*NUMERIC, *CATEGORICAL, "hour_of_week", "time_ms", "mfa"):
        assert name in doc, name


def test_identity_time_and_event_fields_are_carried() -> None:
    f = extract(ev(uid="evt-9", identity_uid="bob", identity_kind="human"))
    assert (f.identity_uid, f.identity_kind, f.time_ms, f.event_uid) == ("bob", "human", T, "evt-9")


@pytest.mark.parametrize(
    ("time_ms", "expected"),
    [
        (0, 72),  # Thursday 1970-01-01 00:00
        (4 * 86_400_000, 0),  # Monday 00:00
        (4 * 86_400_000 - 1, 167),  # Sunday 23:59:59.999
        (T + 14 * 3_600_000 + 5 * 60_000, 72 + 14),  # Thursday 14:05
        (T + 2 * 86_400_000 + 3 * 3_600_000, 120 + 3),  # Saturday 03:00
    ],
)
def test_hour_of_week_is_utc_from_monday(time_ms: int, expected: int) -> None:
    assert hour_of_week(time_ms) == expected
    assert extract(ev(time_ms=time_ms)).hour_of_week == expected


def test_bytes_are_log1p_and_absent_is_zero() -> None:
    f = extract(ev(bytes_out=48_000_000, bytes_in=0))
    assert num(f, "bytes_out") == pytest.approx(math.log1p(48_000_000))
    assert num(f, "bytes_in") == 0.0
    assert num(extract(ev()), "bytes_out") == 0.0
    assert num(extract(ev(bytes_out=2**63 - 1)), "bytes_out") == pytest.approx(43.668, abs=1e-3)


@pytest.mark.parametrize(
    ("status", "expected"), [(2, 1.0), (1, 0.0), (0, 0.0), (99, 0.0), (None, 0.0)]
)
def test_failure_is_status_2(status: int | None, expected: float) -> None:
    assert num(extract(ev(status_id=status)), "failure") == expected


@pytest.mark.parametrize(
    ("class_uid", "is_mfa", "no_mfa", "mfa"),
    [
        (3002, False, 1.0, 0),
        (3002, True, 0.0, 1),
        (3002, None, 0.0, -1),
        (6003, False, 0.0, -1),  # MFA is an authentication property only
    ],
)
def test_no_mfa_only_for_authentications_without_mfa(
    class_uid: int, is_mfa: bool | None, no_mfa: float, mfa: int
) -> None:
    f = extract(ev(class_uid=class_uid, activity_id=1, is_mfa=is_mfa))
    assert num(f, "no_mfa") == no_mfa
    assert f.mfa == mfa


@pytest.mark.parametrize(
    ("confidentiality_id", "rank"),
    [(None, 0), (0, 0), (1, 0), (2, 1), (5, 1), (6, 2), (3, 3), (4, 4), (99, 0)],
)
def test_sensitivity_rank_mapping(confidentiality_id: int | None, rank: int) -> None:
    assert sensitivity_rank(confidentiality_id) == rank
    f = extract(ev(resources=(Resource("r", "object", confidentiality_id),)))
    assert f.sensitivity_rank == rank
    assert num(f, "sensitivity") == float(rank)


def test_sensitivity_is_the_max_and_resource_the_most_sensitive_uid() -> None:
    res = (
        Resource("public", "object", 1),
        Resource("secret-a", "object", 3),
        Resource(None, "object", 4),  # most sensitive, but no uid to remember
        Resource("secret-b", "object", 3),  # tie with secret-a: the first one wins
    )
    f = extract(ev(resources=res))
    assert f.sensitivity_rank == 4
    assert num(f, "n_resources") == 4.0
    assert cat(f, "resource")[1] == "secret-a"


def test_no_resources() -> None:
    f = extract(ev())
    assert (f.sensitivity_rank, num(f, "n_resources"), cat(f, "resource")) == (0, 0.0, (0, None))


def test_chain_depth_and_delegator() -> None:
    f = extract(ev(delegated_by="u-alice"))
    assert num(f, "chain_depth") == 1.0
    assert cat(f, "delegator") == (cat_hash("delegator", "u-alice"), "u-alice")
    g = extract(ev(delegated_by=""))
    assert num(g, "chain_depth") == 0.0
    assert cat(g, "delegator") == (0, None)


@pytest.mark.parametrize(
    ("ip", "prefix"),
    [
        ("203.0.113.7", "203.0.113.0/24"),
        ("10.0.0.255", "10.0.0.0/24"),
        ("2001:db8:abcd:12::1", "2001:db8:abcd::/48"),
        ("2001:0DB8:0000:0012::1", "2001:db8::/48"),
        ("::ffff:192.0.2.9", "192.0.2.0/24"),
        ("fe80::1%eth0", "fe80::/48"),
        ("not-an-ip", None),
        ("1.2.3", None),
        ("1.2.3.256", None),
        ("", None),
    ],
)
def test_ip_prefix(ip: str, prefix: str | None) -> None:
    if ip:
        assert ip_prefix(ip) == prefix
    f = extract(ev(src_ip=ip))
    assert cat(f, "ip_prefix")[1] == prefix


def test_categorical_values_and_sources() -> None:
    f = extract(
        ev(
            country="DE",
            asn=3320,
            service="s3",
            operation="s3.GetObject",
            model=ModelRef("gpt", "1", DIGEST),
            environment="prod-eu",
            auth_protocol="OIDC",
        )
    )
    assert dict(zip(CATEGORICAL, f.cat_values, strict=True)) == {
        "country": "DE",
        "asn": "3320",
        "ip_prefix": None,
        "service": "s3",
        "operation": "s3.GetObject",
        "resource": None,
        "delegator": None,
        "model": DIGEST,
        "environment": "prod-eu",
        "auth_protocol": "OIDC",
        "counterparty": None,
        "combo": None,
    }
    for name, value, h in zip(CATEGORICAL, f.cat_values, f.cat_hashes, strict=True):
        assert h == cat_hash(name, value)
        assert (h == 0) == (value is None)


def test_model_without_digest_is_absent() -> None:
    assert cat(extract(ev(model=ModelRef("gpt", "1", None))), "model") == (0, None)


def test_hash_is_crc32_of_name_nul_value_and_zero_means_absent() -> None:
    assert cat_hash("country", "DE") == zlib.crc32(b"country\x00DE")
    assert cat_hash("operation", "é") == zlib.crc32("operation\x00é".encode())
    assert cat_hash("country", None) == cat_hash("country", "") == 0
    # The same value under two features hashes differently (no cross-feature aliasing).
    assert cat_hash("service", "s3") != cat_hash("operation", "s3")
    # Empty strings are absent everywhere.
    f = extract(ev(service="", operation="", environment="", auth_protocol=""))
    assert f.cat_hashes == (0,) * len(CATEGORICAL)
    assert f.cat_values == (None,) * len(CATEGORICAL)


def test_hashes_are_stable_across_processes() -> None:
    code = (
        "from pipeline.baselines.features import cat_hash;"
        "print(cat_hash('country', 'DE'), cat_hash('operation', 'crm.export'))"
    )
    outputs = set()
    for seed in ("0", "1", "random"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(out.stdout.strip())
    expected = "{} {}".format(zlib.crc32(b"country\x00DE"), zlib.crc32(b"operation\x00crm.export"))
    assert outputs == {expected}


def test_features_encode_compactly_and_round_trip() -> None:
    f = extract(ev(country="DE", bytes_out=10, resources=(Resource("r", "o", 3),)))
    raw = msgspec.msgpack.encode(f)
    assert msgspec.msgpack.decode(raw, type=Features) == f
    assert isinstance(msgspec.msgpack.decode(raw), list)  # array_like: no field names on the wire


def test_extract_is_deterministic() -> None:
    e = ev(country="DE", src_ip="203.0.113.7", operation="x", delegated_by="u")
    assert extract(e) == extract(e)


def test_counterparty_is_the_target_of_writes_only() -> None:
    data, payee = Resource("file:13", "file", 3), Resource("iban:DE89", "bank_account", None)
    send = extract(ev(activity_id=1, operation="send_money", resources=(data, payee)))
    assert cat(send, "counterparty")[1] == "iban:DE89"  # the party, not the data
    assert cat(send, "resource")[1] == "file:13"  # the data resource stays the most sensitive
    read = extract(ev(activity_id=2, operation="read_file", resources=(data, payee)))
    assert cat(read, "counterparty") == (0, None)  # reads have no counterparty
    post = extract(ev(activity_id=1, operation="post", resources=(Resource("chan-1", "channel"),)))
    assert cat(post, "counterparty") == (0, None)  # an object, not a party
    untyped = extract(ev(activity_id=3, resources=(Resource("mailto:eve@x.example", None),)))
    assert cat(untyped, "counterparty")[1] == "mailto:eve@x.example"


def test_combo_is_tool_by_resource_class() -> None:
    f = extract(ev(operation="read_file", resources=(Resource("file:1", "file", 3),)))
    assert cat(f, "combo")[1] == "read_file|file|3"
    assert cat(extract(ev(operation="read_file")), "combo") == (0, None)


def test_task_key_comes_from_the_session_else_the_credential_task() -> None:
    a = extract(ev(session_uid="task-1"))
    b = extract(ev(credential=Credential(uid="c", issued_to="agent-7", task_uid="task-1")))
    assert a.task == b.task != 0 and extract(ev()).task == 0
    assert extract(ev(session_uid="task-2")).task != a.task
    assert extract(ev(bytes_in=100, bytes_out=23)).volume == 123.0


# --- a round's events at once (extract_rows) ----------------------------------------------------


def _mixed() -> list[Event]:
    """Events that exercise every branch: sign-ins, reads, writes with several parties (some
    repeated, more than are kept), IPv4 / IPv6 / bad addresses, tasks from sessions and
    credentials, absent and empty values."""
    payees = tuple(Resource(f"iban:DE{k}", "bank_account", None) for k in (1, 2, 1, 3, 4, 5))
    return [
        ev(uid="a", class_uid=3002, activity_id=1, is_mfa=False, status_id=2, country="DE",
           src_ip="203.0.113.7", asn=3320, auth_protocol="SAML", service="sso"),
        ev(uid="b", activity_id=1, operation="send_money", service="bank", bytes_out=10,
           resources=(Resource("file:1", "file", 3), *payees), session_uid="t-1",
           src_ip="2001:db8::1", country="FR", environment="prod"),
        ev(uid="c", activity_id=2, operation="read", resources=(Resource("r", "o", 6),),
           credential=Credential(uid="k", task_uid="t-2"), delegated_by="alice",
           model=ModelRef("m", "1", DIGEST), bytes_in=5, src_ip="not-an-ip", asn=0),
        ev(uid="d", activity_id=3, resources=(Resource("mailto:eve@x.example", None),
                                              Resource("user:bob", None, 2)),
           service="", operation="", environment="", src_ip="::ffff:10.1.2.3"),
        ev(uid="e"),
    ]  # fmt: skip


def test_rows_hold_each_events_features_in_the_kernels_layout() -> None:
    events = _mixed()
    rows = extract_rows(events)
    singles = [extract(e) for e in events]
    assert len(rows) == len(events)
    assert [rows.features(i) for i in range(len(events))] == singles
    assert rows.features(1) is rows.features(1)  # built once
    assert singles[1].parties == ("iban:DE2", "iban:DE3", "iban:DE4")  # 3 beyond the first
    for i, f in enumerate(singles):
        assert rows.xs[i * ROW_FLOATS : (i + 1) * ROW_FLOATS] == [*f.numeric, f.volume]
        assert rows.es[i * ROW_INTS : (i + 1) * ROW_INTS] == [
            *f.cat_hashes, *(*f.party_hashes, 0, 0, 0)[:3],
            f.time_ms, f.hour_of_week, f.sensitivity_rank, f.mfa, f.task,
        ]  # fmt: skip
        assert (rows.hashes[i], rows.values[i]) == (f.cat_hashes, f.cat_values)


def test_remembered_hashes_are_the_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Caches of two entries: every value is forgotten and hashed again along the way.
    monkeypatch.setattr(features_module, "_CACHE_MAX", 2)
    caches = (*features_module._HASHES, features_module._TASK_HASHES,
              features_module._ASNS, features_module._NETWORKS)  # fmt: skip
    for c in caches:
        c.clear()
    for _ in range(2):
        for e in _mixed():
            f = extract(e)
            assert f.cat_hashes == tuple(
                cat_hash(n, v) for n, v in zip(CATEGORICAL, f.cat_values, strict=True))
            assert f.party_hashes == tuple(cat_hash("counterparty", p) for p in f.parties)
            task = e.session_uid or (e.credential.task_uid if e.credential else None)
            assert f.task == cat_hash("task", task)
    assert all(len(c) <= 2 for c in caches)
