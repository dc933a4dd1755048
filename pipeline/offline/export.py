"""``custos export``: a time range of Kafka topics into one Parquet file, flattened for pandas.

Which records: for every partition, from the first offset whose timestamp is at or after
``since`` to the first offset whose timestamp is at or after ``until`` (``offsets_for_times``,
Kafka's time index), and never past the end offset the partition had when the export began:
an export of a busy topic terminates and is reproducible. Records inside that offset range
whose own timestamp falls outside ``[since, until)`` (producers may set out-of-order
``CreateTime`` timestamps) are skipped and counted, so the file holds exactly the records of
the window that Kafka's time index reaches. No consumer group is joined and nothing is
committed (``assign``, not ``subscribe``): exporting never moves anyone's offsets.

Columns, in this order:

* ``topic``, ``partition``, ``offset``, ``timestamp_ms`` (the record's Kafka timestamp);
* ``key`` - UTF-8 text (``base64:…`` if the bytes are not UTF-8);
* ``headers`` - JSON list of ``[name, value]`` pairs (values as keys), null without headers;
* ``value`` - the record value as UTF-8 text, always, so nothing is lost to flattening
  (base64 if not UTF-8, with ``decode_error`` saying so; null for a tombstone);
* ``decode_error`` - why the value is not a JSON document (null when it is one);
* the value's fields when it is a JSON object: nested objects become dotted columns
  (``actor.user.uid``, the naming of ``pandas.json_normalize(sep=".")``) down to ``max_depth``
  levels; deeper objects and every list stay JSON text in one column. A field whose name
  collides with a column above is stored as ``value.<name>``.

Types: a field keeps its JSON type (bool, int64, float64, string) when all its values agree;
whole and fractional numbers mix into float64; any other mix (a number here, a string there,
an integer beyond int64) becomes text, non-strings written as JSON (``true``, ``12``). Because
each row group (``row_group`` records) is flattened on its own, a field can first appear, or
change type, half way through: every row group goes to a temporary part file first, and at the
end the parts are rewritten into the output under the union schema (missing fields are null,
the rules above decide conflicts), one row group at a time. Memory is bounded by one row group;
disk needs about twice the output while it is written. The output is written beside the target
and renamed into place, so it appears complete or not at all. Its Parquet metadata
(``custos.export``) records the topics, window and offset ranges exported.

>>> flatten({"a": {"b": {"c": 1}}, "tags": ["x"], "n": None}, max_depth=1)
{'a.b': '{"c":1}', 'tags': '["x"]', 'n': None}
>>> t = json_table([b'{"n": 1}', b'{"n": 2.5, "s": "x"}', b"not json"])
>>> t.column_names, t.column("n").to_pylist()
(['value', 'decode_error', 'n', 's'], [1.0, 2.5, None])
>>> t.column("decode_error").to_pylist()[2][:9]
'not_json:'
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, NamedTuple

import msgspec

from pipeline.config import Settings
from pipeline.errors import CustosError

__all__ = [
    "FIXED_COLUMNS",
    "ExportError",
    "ExportResult",
    "ParquetExportWriter",
    "Record",
    "export_topic",
    "export_topics",
    "flatten",
    "json_table",
    "parse_time",
    "records_table",
]

#: The columns every export has, before the value's fields.
FIXED_COLUMNS: Final = ("topic", "partition", "offset", "timestamp_ms", "key", "headers",
                        "value", "decode_error")  # fmt: skip
_VALUE_COLUMNS: Final = ("value", "decode_error")
DEFAULT_ROW_GROUP: Final = 50_000
DEFAULT_MAX_DEPTH: Final = 4
_INT64: Final = (-(2**63), 2**63 - 1)


class ExportError(CustosError):
    """An export could not be completed (unknown topic, broker error, no progress)."""


# --- time ---------------------------------------------------------------------------------------
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_RELATIVE = re.compile(r"-?\s*(\d+(?:\.\d+)?)\s*([smhdw])(?:\s+ago)?", re.IGNORECASE)


def parse_time(text: str, *, now_ms: int | None = None) -> int:
    """A point in time as epoch milliseconds, from what a person types.

    * relative to now: ``2h`` (= now minus two hours), ``90s``, ``15m``, ``1.5d``, ``1w``,
      also written ``-2h`` or ``2h ago``;
    * ``now``;
    * ISO-8601: ``2026-11-26``, ``2026-11-26T08:00``, ``2026-11-26T08:00:00Z``,
      ``2026-11-26T09:00:00+01:00`` (no offset = UTC);
    * an integer: epoch milliseconds (what ``custos simulate --start`` takes).

    >>> now = 1_800_000_000_000
    >>> parse_time("2h", now_ms=now) == now - 7_200_000 == parse_time("2h ago", now_ms=now)
    True
    >>> parse_time("2027-01-15T08:00:00Z"), parse_time("2027-01-15T09:00+01:00")
    (1800000000000, 1800000000000)
    >>> parse_time("2027-01-15"), parse_time("1800000000000")
    (1799971200000, 1800000000000)
    >>> parse_time("yesterday")
    Traceback (most recent call last):
    ...
    ValueError: 'yesterday' is not a time: use 2h (ago), now, ISO-8601 or epoch milliseconds
    """
    s = text.strip()
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if s.lower() == "now":
        return now
    m = _RELATIVE.fullmatch(s)
    if m is not None:
        return now - round(float(m.group(1)) * _UNITS[m.group(2).lower()] * 1000)
    if s.isdigit():
        return int(s)
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use 2h (ago), now, ISO-8601 or epoch milliseconds"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)  # a timestamp without offset is read as UTC, not local time
    return int(dt.timestamp() * 1000)


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


# --- flattening ---------------------------------------------------------------------------------
def _json_text(v: Any) -> str:
    return msgspec.json.encode(v).decode()


def flatten(obj: Mapping[str, Any], *, max_depth: int = DEFAULT_MAX_DEPTH) -> dict[str, Any]:
    """One JSON object → {dotted name: scalar}; lists, deeper objects, ``{}`` → JSON text.

    Names follow ``pandas.json_normalize(obj, sep=".", max_level=max_depth)``; unlike it, lists
    and empty objects are kept (as JSON text) rather than left as Python objects or dropped,
    and fields keep the document's order.

    >>> flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}, max_depth=4)
    {'a.b': 1, 'a.c.d': '[1,2]', 'e': '{}'}
    """
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Mapping[str, Any], depth: int) -> None:
        for k, v in node.items():
            name = f"{prefix}{k}"
            if isinstance(v, dict):
                if v and depth < max_depth:
                    walk(name + ".", v, depth + 1)
                else:
                    out[name] = _json_text(v)
            elif isinstance(v, list):
                out[name] = _json_text(v)
            else:
                out[name] = v

    walk("", obj, 0)
    return out


def _arrow_column(values: list[Any]) -> Any:
    """A pyarrow array for one flattened field, by the type rules in the module docstring."""
    import pyarrow as pa

    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return pa.nulls(len(values), pa.null())
    if kinds == {bool}:
        return pa.array(values, pa.bool_())
    if kinds == {int} and all(_INT64[0] <= v <= _INT64[1] for v in values if v is not None):
        return pa.array(values, pa.int64())
    if kinds <= {int, float} and all(
        v is None or isinstance(v, float) or abs(v) < 2**63 for v in values
    ):
        return pa.array(values, pa.float64())
    if kinds == {str}:
        return pa.array(values, pa.string())
    return pa.array([v if v is None or isinstance(v, str) else _json_text(v) for v in values],
                    pa.string())  # fmt: skip


def _text(raw: bytes) -> str:
    """UTF-8 text, or ``base64:…`` for other bytes (keys, header values)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(raw).decode()


def _decode_value(raw: bytes | str | None) -> tuple[str | None, str | None, dict[str, Any] | None]:
    """(value text, decode error, parsed object or None)."""
    if raw is None:
        return None, None, None
    if isinstance(raw, str):
        text, data = raw, raw.encode()
    else:
        data = raw
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode(), "not_utf8: the value column holds base64", None
    try:
        obj = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        return text, f"not_json: {exc}"[:300], None
    return text, None, obj if isinstance(obj, dict) else None


def json_table(
    values: Iterable[bytes | str | None],
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    reserved: Sequence[str] = _VALUE_COLUMNS,
) -> Any:
    """``value``, ``decode_error`` and the flattened fields of JSON values, as a pyarrow Table.

    Useful on its own for any column of JSON documents, e.g. ``events.parquet``'s ``event``:
    ``json_table(df["event"]).to_pandas()``. Fields named like a ``reserved`` column are
    stored as ``value.<name>``.
    """
    import pyarrow as pa

    texts: list[str | None] = []
    errors: list[str | None] = []
    flats: list[dict[str, Any] | None] = []
    names: dict[str, None] = {}  # ordered union of the field names, first seen first
    taken = set(reserved)
    for raw in values:
        text, err, obj = _decode_value(raw)
        texts.append(text)
        errors.append(err)
        flat = None
        if obj is not None:
            flat = flatten(obj, max_depth=max_depth)
            if taken & flat.keys():
                flat = {(f"value.{k}" if k in taken else k): v for k, v in flat.items()}
            names.update(dict.fromkeys(flat))
        flats.append(flat)
    cols: dict[str, Any] = {
        "value": pa.array(texts, pa.string()),
        "decode_error": pa.array(errors, pa.string()),
    }
    for name in names:
        cols[name] = _arrow_column([f.get(name) if f is not None else None for f in flats])
    return pa.table(cols)


class Record(NamedTuple):
    """One Kafka record, as the export reads it."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    headers: list[tuple[str, bytes | None]] | None
    value: bytes | None


def _headers(headers: list[tuple[str, bytes | None]] | None) -> str | None:
    if not headers:
        return None
    return _json_text([[k, None if v is None else _text(v)] for k, v in headers])


def records_table(records: Sequence[Record], *, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """One row group: the fixed columns, then the values' flattened fields (pyarrow Table)."""
    import pyarrow as pa

    head = pa.table(
        {
            "topic": pa.array([r.topic for r in records], pa.string()),
            "partition": pa.array([r.partition for r in records], pa.int32()),
            "offset": pa.array([r.offset for r in records], pa.int64()),
            "timestamp_ms": pa.array([r.timestamp_ms for r in records], pa.int64()),
            "key": pa.array([None if r.key is None else _text(r.key) for r in records],
                            pa.string()),
            "headers": pa.array([_headers(r.headers) for r in records], pa.string()),
        }
    )
    body = json_table((r.value for r in records), max_depth=max_depth, reserved=FIXED_COLUMNS)
    for name in body.column_names:
        head = head.append_column(name, body.column(name))
    return head


# --- writing ------------------------------------------------------------------------------------
def _unify(types: set[Any]) -> Any:
    """One Arrow type for a field seen with ``types`` across row groups (module docstring)."""
    import pyarrow as pa

    types = {t for t in types if t != pa.null()}
    if not types:
        return pa.string()  # never had a value: text reads best in pandas
    if len(types) == 1:
        return next(iter(types))
    if types == {pa.int64(), pa.float64()}:
        return pa.float64()
    return pa.string()


def _conform(column: Any, target: Any) -> Any:
    """``column`` as ``target`` type: nulls and int → float by cast, anything → text as JSON."""
    import pyarrow as pa

    if column.type == target:
        return column
    if column.type == pa.null() or target == pa.float64():
        return column.cast(target)
    # Text under the same rules as within a row group (JSON for non-strings), not Arrow's cast.
    return pa.array(
        [v if v is None or isinstance(v, str) else _json_text(v) for v in column.to_pylist()],
        pa.string(),
    )


class ParquetExportWriter:
    """Row groups of records → one Parquet file under the union of their schemas.

    ``add`` buffers records; every ``row_group`` records become a part file (flattened on its
    own). ``close`` rewrites the parts into ``path`` under the unified schema and renames it
    into place. ``abort`` leaves nothing behind.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        row_group: int = DEFAULT_ROW_GROUP,
        max_depth: int = DEFAULT_MAX_DEPTH,
    ) -> None:
        self.path = Path(path)
        self.row_group = max(1, row_group)
        self.max_depth = max_depth
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._dir = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        self._parts: list[Path] = []
        self._types: dict[str, set[Any]] = {}  # field -> Arrow types seen, in first-seen order
        self._buffer: list[Record] = []
        self.rows = 0

    def add(self, record: Record) -> None:
        self._buffer.append(record)
        if len(self._buffer) >= self.row_group:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        import pyarrow.parquet as pq

        table = records_table(self._buffer, max_depth=self.max_depth)
        for f in table.schema:
            self._types.setdefault(f.name, set()).add(f.type)
        part = self._dir / f"part-{len(self._parts):06d}.parquet"
        pq.write_table(table, part, compression="zstd")
        self._parts.append(part)
        self.rows += len(self._buffer)
        self._buffer = []

    def schema(self) -> Any:
        """The unified schema of everything flushed so far."""
        import pyarrow as pa

        empty = records_table([])
        fields = [empty.schema.field(n) for n in FIXED_COLUMNS]
        fields += [pa.field(n, _unify(t)) for n, t in self._types.items() if n not in FIXED_COLUMNS]
        return pa.schema(fields)

    def close(self, metadata: Mapping[str, Any] | None = None) -> list[str]:
        """Write the file; returns its column names."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.flush()
        schema = self.schema()
        if metadata:
            schema = schema.with_metadata({"custos.export": json.dumps(metadata, sort_keys=True)})
        tmp = self._dir / "out.parquet"
        try:
            with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
                for part in self._parts:
                    t = pq.read_table(part)
                    cols = [
                        _conform(t.column(f.name), f.type) if f.name in t.column_names
                        else pa.nulls(len(t), f.type)
                        for f in schema
                    ]  # fmt: skip
                    writer.write_table(pa.Table.from_arrays(cols, schema=schema))
                    part.unlink()  # disk: keep about one copy of the data, not two
            os.replace(tmp, self.path)
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
        return list(schema.names)

    def abort(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


# --- Kafka --------------------------------------------------------------------------------------
@dataclass
class ExportResult:
    """What an export wrote."""

    path: Path
    topics: list[str]
    since_ms: int | None
    until_ms: int | None
    records: int = 0
    skipped_outside_window: int = 0
    decode_errors: int = 0
    truncated: bool = False  # stopped at max_records
    seconds: float = 0.0
    columns: list[str] = field(default_factory=list)
    # topic -> partition -> [start offset, end offset) that was read
    ranges: dict[str, dict[int, tuple[int, int]]] = field(default_factory=dict)

    def summary(self) -> str:
        window = f"{_iso(self.since_ms) or 'beginning'} .. {_iso(self.until_ms) or 'end'}"
        more = f", {self.skipped_outside_window:,} skipped (timestamp outside the window)" \
            if self.skipped_outside_window else ""  # fmt: skip
        cut = " (stopped at --max-records)" if self.truncated else ""
        return (f"{self.records:,} records of {', '.join(self.topics)} ({window}) into "
                f"{self.path}{cut}: {len(self.columns)} columns, {self.decode_errors:,} values "
                f"not JSON{more}; {self.seconds:.1f} s")  # fmt: skip


def _offset_ranges(
    consumer: Any, topic: str, since_ms: int | None, until_ms: int | None
) -> dict[int, tuple[int, int]]:
    """partition -> [start, end) offsets for the window, bounded by the end offsets now."""
    from confluent_kafka import TopicPartition

    from pipeline.kafka.clients import _watermarks

    md = consumer.list_topics(topic, timeout=10)
    meta = md.topics.get(topic)
    if meta is None or meta.error is not None:
        why = meta.error if meta is not None else "not in metadata"
        raise ExportError(f"cannot export {topic}: {why}", topic=topic)
    ranges: dict[int, tuple[int, int]] = {}
    parts = sorted(meta.partitions)
    marks = {p: _watermarks(consumer, TopicPartition(topic, p)) for p in parts}

    def lookup(ts: int | None, default: dict[int, int]) -> dict[int, int]:
        if ts is None:
            return default
        found = _offsets_for_times(consumer, [TopicPartition(topic, p, ts) for p in parts])
        # -1: no record at or after ts (so far) -> the partition's end offset.
        return {tp.partition: marks[tp.partition][1] if tp.offset < 0 else tp.offset
                for tp in found}  # fmt: skip

    starts = lookup(since_ms, {p: marks[p][0] for p in parts})
    ends = lookup(until_ms, {p: marks[p][1] for p in parts})
    for p in parts:
        low, high = marks[p]
        start, end = max(starts[p], low), min(ends[p], high)
        ranges[p] = (start, max(start, end))
    return ranges


def _offsets_for_times(consumer: Any, tps: list[Any], attempts: int = 20) -> list[Any]:
    from confluent_kafka import KafkaError as CKafkaError
    from confluent_kafka import KafkaException

    # librdkafka does not flag these retriable, yet they only mean "leader not elected yet".
    electing = {CKafkaError.NOT_LEADER_FOR_PARTITION, CKafkaError.LEADER_NOT_AVAILABLE,
                CKafkaError.UNKNOWN_TOPIC_OR_PART}  # fmt: skip
    for attempt in range(attempts):
        try:
            return list(consumer.offsets_for_times(tps, timeout=10))
        except KafkaException as exc:
            err = exc.args[0]
            if attempt == attempts - 1 or not (err.retriable() or err.code() in electing):
                raise
            time.sleep(0.25)
    raise AssertionError("unreachable")


def _read(
    consumer: Any,
    ranges: Mapping[tuple[str, int], tuple[int, int]],
    *,
    idle_timeout_s: float,
) -> Iterator[Any]:
    """Messages of every partition's [start, end), then stop (assign; no group, no commits)."""
    from confluent_kafka import KafkaError as CKafkaError
    from confluent_kafka import TopicPartition

    pending = {tp: end for tp, (start, end) in ranges.items() if end > start}
    if not pending:
        return
    consumer.assign([TopicPartition(t, p, ranges[(t, p)][0]) for t, p in pending])

    def done(tp: tuple[str, int]) -> None:
        if pending.pop(tp, None) is not None:
            consumer.pause([TopicPartition(*tp)])  # stop fetching past the end we promised

    last = time.monotonic()
    while pending:
        msgs = consumer.consume(num_messages=5_000, timeout=0.5)
        if not msgs and time.monotonic() - last > idle_timeout_s:
            left = ", ".join(f"{t}[{p}] before {e}" for (t, p), e in sorted(pending.items()))
            raise ExportError(f"no records for {idle_timeout_s:.0f} s, still expected: {left}")
        for msg in msgs:
            last = time.monotonic()
            tp = (msg.topic(), msg.partition())
            err = msg.error()
            if err is not None:
                if err.code() == CKafkaError._PARTITION_EOF:
                    # Reached what the partition holds now, which is at least the end offset:
                    # the remaining offsets were gaps (compaction, transaction markers).
                    done(tp)
                    continue
                if err.retriable():
                    continue
                raise ExportError(f"reading {tp[0]}[{tp[1]}]: {err}", topic=tp[0],
                                  partition=tp[1])  # fmt: skip
            end = pending.get(tp)
            if end is None:
                continue  # already finished: prefetched before the pause
            offset = msg.offset()
            if offset >= end:
                done(tp)
                continue
            yield msg
            if offset + 1 >= end:
                done(tp)


def export_topics(
    settings: Settings,
    topics: Sequence[str],
    since_ms: int | None,
    until_ms: int | None,
    out_path: Path | str,
    *,
    max_records: int | None = None,
    row_group: int = DEFAULT_ROW_GROUP,
    max_depth: int = DEFAULT_MAX_DEPTH,
    idle_timeout_s: float = 30.0,
) -> ExportResult:
    """Export the records of ``topics`` with timestamps in ``[since_ms, until_ms)`` to Parquet.

    ``None`` for ``since_ms`` / ``until_ms`` means the beginning / the end as of now. See the
    module docstring for which records, the columns and their types. Several topics go into
    one file (rows per partition in offset order; partitions interleave), e.g. both event
    topics for ``custos replay``, which reads the ``value`` column.
    """
    from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaException

    from pipeline.kafka.clients import make_consumer

    if since_ms is not None and until_ms is not None and until_ms <= since_ms:
        raise ExportError(f"empty window: until ({_iso(until_ms)}) is not after since "
                          f"({_iso(since_ms)})")  # fmt: skip
    t0 = time.perf_counter()
    out = Path(out_path)
    res = ExportResult(out, list(topics), since_ms, until_ms)
    # A group id is required by the client, but assign() never joins the group,
    # and with auto-commit and offset storing off nothing is ever committed.
    reader: dict[str, Any] = {
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "queued.max.messages.kbytes": 65_536,  # bounded prefetch
    }
    consumer = make_consumer(settings, f"custos-export-{uuid.uuid4().hex[:8]}",
                             manual_commit=False, bulk_fetch=False, **reader)  # fmt: skip
    writer = ParquetExportWriter(out, row_group=row_group, max_depth=max_depth)
    lo = -math.inf if since_ms is None else since_ms
    hi = math.inf if until_ms is None else until_ms
    windowed = since_ms is not None or until_ms is not None
    try:
        ranges: dict[tuple[str, int], tuple[int, int]] = {}
        for topic in topics:
            r = _offset_ranges(consumer, topic, since_ms, until_ms)
            res.ranges[topic] = r
            ranges.update({(topic, p): se for p, se in r.items()})
        for msg in _read(consumer, ranges, idle_timeout_s=idle_timeout_s):
            kind, ts = msg.timestamp()
            stamp = None if kind == TIMESTAMP_NOT_AVAILABLE else int(ts)
            if windowed and not (stamp is not None and lo <= stamp < hi):
                res.skipped_outside_window += 1
                continue
            writer.add(Record(msg.topic(), msg.partition(), msg.offset(), stamp, msg.key(),
                              msg.headers(), msg.value()))  # fmt: skip
            res.records += 1
            if max_records is not None and res.records >= max_records:
                res.truncated = True
                break
        res.seconds = time.perf_counter() - t0
        res.columns = writer.close(
            {
                "topics": list(topics),
                "since_ms": since_ms,
                "until_ms": until_ms,
                "ranges": {t: {str(p): list(se) for p, se in r.items()}
                           for t, r in res.ranges.items()},
                "records": res.records,
                "truncated": res.truncated,
                "max_depth": max_depth,
                "exported_at": _iso(int(time.time() * 1000)),
            }
        )  # fmt: skip
    except KafkaException as exc:
        writer.abort()
        raise ExportError(f"cannot export {', '.join(topics)} from "
                          f"{settings.bootstrap_servers}: {exc.args[0]}") from exc  # fmt: skip
    except BaseException:
        writer.abort()
        raise
    finally:
        consumer.close()
    res.decode_errors = _count_decode_errors(out)
    res.seconds = time.perf_counter() - t0
    return res


def _count_decode_errors(path: Path) -> int:
    import pyarrow.parquet as pq

    col = pq.read_table(path, columns=["decode_error"]).column(0)
    return int(len(col) - col.null_count)


def export_topic(
    settings: Settings,
    topic: str,
    since_ms: int | None,
    until_ms: int | None,
    out_path: Path | str,
    *,
    max_records: int | None = None,
    row_group: int = DEFAULT_ROW_GROUP,
    max_depth: int = DEFAULT_MAX_DEPTH,
    idle_timeout_s: float = 30.0,
) -> ExportResult:
    """:func:`export_topics` for one topic."""
    return export_topics(settings, [topic], since_ms, until_ms, out_path,
                         max_records=max_records, row_group=row_group, max_depth=max_depth,
                         idle_timeout_s=idle_timeout_s)  # fmt: skip
