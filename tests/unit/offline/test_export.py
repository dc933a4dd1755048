"""custos export without Kafka: the time parser, flattening, types, and the row-group writer."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.offline.export import (
    FIXED_COLUMNS,
    ParquetExportWriter,
    Record,
    flatten,
    json_table,
    parse_time,
    records_table,
)

NOW = 1_800_000_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", NOW - 7_200_000),
        ("-2h", NOW - 7_200_000),
        ("2h ago", NOW - 7_200_000),
        ("90s", NOW - 90_000),
        ("15m", NOW - 900_000),
        ("1.5d", NOW - 129_600_000),
        ("1w", NOW - 604_800_000),
        ("now", NOW),
        (" NOW ", NOW),
        ("2027-01-15T08:00:00Z", 1_800_000_000_000),
        ("2027-01-15T08:00:00.250Z", 1_800_000_000_250),
        ("2027-01-15T08:00:00+00:00", 1_800_000_000_000),
        ("2027-01-15T10:00:00+02:00", 1_800_000_000_000),
        ("2027-01-15T08:00", 1_800_000_000_000),  # no offset: UTC, not local time
        ("2027-01-15", 1_799_971_200_000),
        ("1800000000123", 1_800_000_000_123),
    ],
)
def test_parse_time(text: str, expected: int) -> None:
    assert parse_time(text, now_ms=NOW) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "2x", "2027-13-01", "h2"])
def test_parse_time_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="is not a time"):
        parse_time(text, now_ms=NOW)


def test_parse_time_relative_uses_the_clock() -> None:
    import time

    before = int(time.time() * 1000)
    got = parse_time("1h")
    assert before - 3_600_000 - 5 <= got <= int(time.time() * 1000) - 3_600_000 + 5


DOC = {
    "class_uid": 6003,
    "time": 1795636800871,
    "metadata": {"uid": "e1", "product": {"name": "sim", "vendor": {"name": "Custos"}}},
    "actor": {"user": {"uid": "agt-1", "groups": [{"name": "g"}]}},
    "resources": [{"uid": "s3:object/x"}],
    "ok": True,
    "note": None,
}


def test_flatten_names_match_json_normalize() -> None:
    for depth in (0, 1, 2, 3, 5):
        ours = flatten(DOC, max_depth=depth)
        theirs = pd.json_normalize(DOC, sep=".", max_level=depth).columns
        assert set(ours) == set(theirs), depth
    flat = flatten(DOC, max_depth=2)
    assert flat["metadata.product.name"] == "sim"
    assert json.loads(flat["metadata.product.vendor"]) == {"name": "Custos"}  # deeper: JSON
    assert json.loads(flat["actor.user.groups"]) == [{"name": "g"}]  # lists: JSON
    assert flat["ok"] is True and flat["note"] is None and flat["time"] == 1795636800871
    assert list(flatten(DOC))[:3] == ["class_uid", "time", "metadata.uid"]  # document order


def test_flatten_keeps_empty_objects_and_lists() -> None:
    assert flatten({"a": {}, "b": [], "c": {"d": {}}}) == {"a": "{}", "b": "[]", "c.d": "{}"}


def test_json_table_types_within_a_row_group() -> None:
    values = [
        b'{"i": 1, "f": 1, "b": true, "s": "x", "mix": 1, "big": 1, "nul": null}',
        b'{"i": 2, "f": 2.5, "b": false, "s": "y", "mix": "one", "big": 99999999999999999999}',
        b'{"i": null, "new": {"x": [1, 2]}}',
    ]
    t = json_table(values)
    types = {f.name: str(f.type) for f in t.schema}
    assert types == {"value": "string", "decode_error": "string", "i": "int64", "f": "double",
                     "b": "bool", "s": "string", "mix": "string", "big": "string",
                     "nul": "null", "new.x": "string"}  # fmt: skip
    assert t.column("mix").to_pylist() == ["1", "one", None]  # numbers as JSON text
    assert t.column("big").to_pylist() == ["1", "99999999999999999999", None]
    assert t.column("new.x").to_pylist() == [None, None, "[1,2]"]
    assert t.column("value").to_pylist() == [v.decode() for v in values]
    assert t.column("decode_error").null_count == 3


def test_json_table_keeps_what_is_not_json() -> None:
    binary = b"\xff\xfe\x00raw"
    t = json_table([b"plain text", binary, None, b"[1, 2]", '{"a": 1}'])
    rows = t.to_pylist()
    assert rows[0]["value"] == "plain text" and rows[0]["decode_error"].startswith("not_json")
    assert base64.b64decode(rows[1]["value"]) == binary  # nothing lost
    assert rows[1]["decode_error"].startswith("not_utf8")
    assert rows[2]["value"] is None and rows[2]["decode_error"] is None  # tombstone
    assert rows[3]["value"] == "[1, 2]" and rows[3]["decode_error"] is None  # JSON, no fields
    assert rows[4]["a"] == 1


def _rec(offset: int, value: bytes | None, **kw: object) -> Record:
    base: dict[str, object] = {"topic": "t", "partition": 0, "offset": offset,
                               "timestamp_ms": NOW + offset, "key": b"k", "headers": None,
                               "value": value}  # fmt: skip
    base.update(kw)
    return Record(**base)  # type: ignore[arg-type]


def test_records_table_fixed_columns_and_collisions() -> None:
    recs = [
        _rec(0, b'{"topic": "inner", "offset": 5, "x": 1}',
             headers=[("reason", b"bad"), ("raw", b"\xff")], key=b"\xfe"),
        _rec(1, b'{"x": 2}', key=None),
    ]  # fmt: skip
    t = records_table(recs)
    assert t.column_names[: len(FIXED_COLUMNS)] == list(FIXED_COLUMNS)
    assert t.column_names[len(FIXED_COLUMNS) :] == ["value.topic", "value.offset", "x"]
    row = t.to_pylist()[0]
    assert row["topic"] == "t" and row["value.topic"] == "inner" and row["value.offset"] == 5
    assert json.loads(row["headers"]) == [["reason", "bad"], ["raw", "base64:/w=="]]
    assert row["key"] == "base64:/g=="
    assert t.to_pylist()[1]["key"] is None and t.to_pylist()[1]["headers"] is None


def test_writer_unifies_row_groups(tmp_path: Path) -> None:
    """Fields appearing late, and types that change between row groups."""
    out = tmp_path / "x.parquet"
    w = ParquetExportWriter(out, row_group=2)
    values = [
        b'{"n": 1, "flag": true, "s": "a"}',
        b'{"n": 2, "flag": false, "s": "b"}',
        b'{"n": 2.5, "flag": "maybe", "late": {"deep": 1}}',  # float, text, a new field
        b"not json",
        b'{"n": 7, "always_null": null}',
    ]
    for i, v in enumerate(values):
        w.add(_rec(i, v))
    columns = w.close({"topics": ["t"]})
    assert not list(tmp_path.glob(".x.parquet.*"))  # the parts are gone
    pf = pq.ParquetFile(out)
    assert pf.metadata.num_row_groups == 3
    assert json.loads(pf.schema_arrow.metadata[b"custos.export"]) == {"topics": ["t"]}
    types = {f.name: str(f.type) for f in pf.schema_arrow}
    assert columns == list(types)
    assert types["n"] == "double" and types["flag"] == "string" and types["s"] == "string"
    assert types["late.deep"] == "int64" and types["always_null"] == "string"
    df = pd.read_parquet(out)
    assert df["n"].tolist()[:3] == [1.0, 2.0, 2.5] and pd.isna(df["n"][3])
    assert df["flag"].tolist()[:3] == ["true", "false", "maybe"]  # JSON text, like in a group
    assert df["late.deep"].isna().sum() == 4
    assert df["decode_error"].notna().tolist() == [False, False, False, True, False]
    assert df["offset"].tolist() == [0, 1, 2, 3, 4]


def test_writer_with_no_records(tmp_path: Path) -> None:
    out = tmp_path / "empty.parquet"
    w = ParquetExportWriter(out)
    assert w.close() == list(FIXED_COLUMNS)
    assert len(pd.read_parquet(out)) == 0
