"""custos export on the real broker: exactly the window's records, flattened, nothing committed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.config import Settings
from pipeline.kafka.clients import make_admin, make_producer
from pipeline.offline.export import FIXED_COLUMNS, ExportError, export_topic, export_topics
from pipeline.offline.replay import replay
from pipeline.simulate import simulate
from pipeline.simulate.sinks import KafkaSink

N = 100
NOT_JSON = 50  # the record whose value is not JSON


def _produce(settings: Settings, topic: str, base_ms: int) -> None:
    producer = make_producer(settings)
    for i in range(N):
        if i == NOT_JSON:
            value = b"\x00 this is not JSON"
        else:
            value = json.dumps(
                {"i": i, "actor": {"user": {"uid": f"usr-{i % 7}", "tags": ["a", "b"]},
                                   "session": {"mfa": i % 2 == 0}},
                 "bytes": i * 1.5 if i % 3 else i}
            ).encode()  # fmt: skip
        headers = [("source", b"test")] if i == 42 else None
        producer.produce(topic, key=f"usr-{i % 7}".encode(), value=value,
                         timestamp=base_ms + i * 1000, headers=headers)  # fmt: skip
    assert producer.flush(30) == 0


def test_export_a_time_window(isolated: Settings, tmp_path: Path) -> None:
    topic = isolated.identity_topic  # 3 partitions, this test's own
    base = (int(time.time()) - 2 * 3600) * 1000  # in the past: brokers refuse far-future stamps
    _produce(isolated, topic, base)
    out = tmp_path / "window.parquet"

    res = export_topic(isolated, topic, base + 20_000, base + 80_000, out)

    df = pd.read_parquet(out)
    assert res.records == len(df) == 60  # [since, until): i = 20 … 79
    assert sorted(df["timestamp_ms"]) == [base + i * 1000 for i in range(20, 80)]
    assert list(df.columns[: len(FIXED_COLUMNS)]) == list(FIXED_COLUMNS)
    assert {"i", "actor.user.uid", "actor.user.tags", "actor.session.mfa", "bytes"} <= set(df)
    assert set(df.columns) == set(res.columns)
    assert sorted(df["i"].dropna().astype(int)) == [i for i in range(20, 80) if i != NOT_JSON]
    assert all(json.loads(t) == ["a", "b"] for t in df["actor.user.tags"].dropna())
    types = {f.name: str(f.type) for f in pq.ParquetFile(out).schema_arrow}
    assert types["bytes"] == "double" and types["actor.session.mfa"] == "bool"
    assert types["i"] == "int64" and types["partition"] == "int32"
    assert (df["key"] == df["actor.user.uid"]).sum() == 59
    # The non-JSON record is kept: its value verbatim, the reason, no fields.
    [bad] = df[df["decode_error"].notna()].to_dict("records")
    assert bad["value"] == "\x00 this is not JSON" and bad["decode_error"].startswith("not_json")
    assert pd.isna(bad["i"]) and bad["key"] == f"usr-{NOT_JSON % 7}"
    assert res.decode_errors == 1
    [hdr] = df[df["headers"].notna()]["headers"].tolist()
    assert json.loads(hdr) == [["source", "test"]]
    # Per partition, rows are in offset order and the ranges say what was read.
    for p, g in df.groupby("partition"):
        assert g["offset"].is_monotonic_increasing
        start, end = res.ranges[topic][int(p)]
        assert g["offset"].min() == start and g["offset"].max() == end - 1
    meta = json.loads(pq.ParquetFile(out).schema_arrow.metadata[b"custos.export"])
    assert meta["topics"] == [topic] and meta["since_ms"] == base + 20_000
    assert meta["records"] == 60

    # Open-ended windows, and a cap.
    assert export_topic(isolated, topic, None, None, tmp_path / "all.parquet").records == N
    late = export_topic(isolated, topic, base + 95_000, None, tmp_path / "late.parquet")
    assert late.records == 5
    capped = export_topic(isolated, topic, None, None, tmp_path / "cap.parquet", max_records=7)
    assert capped.records == 7 and capped.truncated
    assert len(pd.read_parquet(tmp_path / "cap.parquet")) == 7
    empty = export_topic(isolated, topic, base + 500_000, None, tmp_path / "none.parquet")
    assert empty.records == 0 and len(pd.read_parquet(tmp_path / "none.parquet")) == 0

    with pytest.raises(ExportError, match="cannot export"):
        export_topic(isolated, topic + ".missing", None, None, tmp_path / "missing.parquet")
    assert not (tmp_path / "missing.parquet").exists()

    # Exporting joined no consumer group and committed nothing.
    groups = make_admin(isolated).list_consumer_groups(request_timeout=10).result()
    assert not [g for g in groups.valid if g.group_id.startswith("custos-export")]


def test_exported_event_topics_replay_like_the_stream(isolated: Settings, tmp_path: Path) -> None:
    """Both event topics into one file; ``custos replay`` reads its ``value`` column."""
    report = simulate(isolated, identities=60, duration_s=3600, seed=3, rate=None,
                      sink=KafkaSink(isolated), labels_path=None)  # fmt: skip
    out = tmp_path / "events.parquet"
    res = export_topics(isolated, [isolated.identity_topic, isolated.agent_topic], None, None, out,
                        row_group=500)  # fmt: skip
    assert res.records == report.events and res.decode_errors == 0
    df = pd.read_parquet(out, columns=["topic", "class_uid", "user.uid", "actor.user.uid"])
    assert df["topic"].value_counts().to_dict() == report.per_topic
    # Authentication events name the user, API activity the actor: both flattened.
    assert df["user.uid"].fillna(df["actor.user.uid"]).notna().all()
    replayed = replay(isolated, out, tmp_path / "replay")
    assert replayed.scored == report.events and replayed.dead == 0
