"""Where simulated messages go: Kafka, a JSONL file, a Parquet file, memory or nowhere.

Every sink takes ``write(topic, key, value)`` per message and ``close()`` at the end.
:func:`open_sink` picks one from an output path (``.jsonl`` / ``.ndjson`` / ``.json`` →
JSONL, ``.parquet`` → Parquet) or Kafka when no path is given - what a CLI needs.

>>> sink = MemorySink()
>>> sink.write("identity.events", b"usr-1", b'{"class_uid":3002}')
>>> sink.close(); len(sink.messages), sink.closed
(1, True)
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

import msgspec

from pipeline.errors import KafkaError

if TYPE_CHECKING:
    from pipeline.config import Settings

__all__ = [
    "JsonlSink",
    "KafkaSink",
    "MemorySink",
    "NullSink",
    "ParquetSink",
    "Sink",
    "open_sink",
]

_JSONL_SUFFIXES: Final = (".jsonl", ".ndjson", ".json")


@runtime_checkable
class Sink(Protocol):
    """Receives serialised events in event-time order."""

    def write(self, topic: str, key: bytes, value: bytes) -> None: ...

    def close(self) -> None: ...


class NullSink:
    """Discards messages (throughput measurements)."""

    def __init__(self) -> None:
        self.count = 0

    def write(self, topic: str, key: bytes, value: bytes) -> None:
        self.count += 1

    def close(self) -> None:
        pass


class MemorySink:
    """Keeps ``(topic, key, value)`` tuples in a list (tests, notebooks)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, bytes]] = []
        self.closed = False

    def write(self, topic: str, key: bytes, value: bytes) -> None:
        self.messages.append((topic, key, value))

    def close(self) -> None:
        self.closed = True


class JsonlSink:
    """One event JSON per line (the topic is implied by ``class_uid``)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._fh: IO[bytes] = self.path.open("wb", buffering=1 << 20)
        self._write = self._fh.write

    def write(self, topic: str, key: bytes, value: bytes) -> None:
        self._write(value + b"\n")

    def close(self) -> None:
        self._fh.close()


class _HeadMeta(msgspec.Struct, gc=False):
    uid: str = ""


class _Head(msgspec.Struct, gc=False):
    """The few fields the Parquet sink flattens (everything else is skipped by msgspec)."""

    class_uid: int = 0
    time: int = 0
    metadata: _HeadMeta = msgspec.field(default_factory=_HeadMeta)


class ParquetSink:
    """Columns ``uid``, ``time`` (ms), ``class_uid``, ``identity_uid``, ``topic``, ``event`` (JSON).

    Rows are buffered and written in row groups of ``row_group`` messages (zstd-compressed).
    """

    def __init__(self, path: Path | str, *, row_group: int = 100_000) -> None:
        import pyarrow as pa  # lazy: only Parquet users pay for the import

        self.path = Path(path)
        self.row_group = row_group
        self._pa = pa
        self._schema = pa.schema(
            [
                ("uid", pa.string()),
                ("time", pa.int64()),
                ("class_uid", pa.int32()),
                ("identity_uid", pa.string()),
                ("topic", pa.string()),
                ("event", pa.string()),
            ]
        )
        self._writer: Any = None
        self._decode = msgspec.json.Decoder(_Head).decode
        self._cols: tuple[list[Any], ...] = ([], [], [], [], [], [])

    def write(self, topic: str, key: bytes, value: bytes) -> None:
        head = self._decode(value)
        uid, time, cls, ident, topics, event = self._cols
        uid.append(head.metadata.uid)
        time.append(head.time)
        cls.append(head.class_uid)
        ident.append(key)
        topics.append(topic)
        event.append(value)  # bytes: Arrow validates UTF-8 when building the string column
        if len(uid) >= self.row_group:
            self._flush()

    def _flush(self) -> None:
        if not self._cols[0]:
            return
        import pyarrow.parquet as pq

        table = self._pa.Table.from_arrays(
            [self._pa.array(c, type=f.type) for c, f in zip(self._cols, self._schema, strict=True)],
            schema=self._schema,
        )
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, self._schema, compression="zstd")
        self._writer.write_table(table)
        for c in self._cols:
            c.clear()

    def close(self) -> None:
        self._flush()
        if self._writer is None:  # no events: still leave a valid, empty file
            import pyarrow.parquet as pq

            pq.write_table(self._schema.empty_table(), self.path, compression="zstd")
        else:
            self._writer.close()


class KafkaSink:
    """Batched produce through :func:`pipeline.kafka.clients.make_producer`, keyed by identity.

    A full local queue (``BufferError``) is drained by polling, then the message is retried;
    ``poll(0)`` every ``poll_every`` messages serves delivery reports. ``close()`` flushes and
    raises :class:`~pipeline.errors.KafkaError` if any message failed or was left undelivered.
    """

    def __init__(
        self,
        settings: Settings,
        producer: Any = None,
        *,
        poll_every: int = 5_000,
        flush_timeout_s: float = 120.0,
    ) -> None:
        self.errors = 0
        self.first_error: str | None = None
        if producer is None:
            from pipeline.kafka.clients import make_producer

            producer = make_producer(
                settings,
                **{"on_delivery": self._on_delivery, "delivery.report.only.error": True},
            )
        self._producer = producer
        self._produce = producer.produce
        self._poll_every = poll_every
        self._flush_timeout_s = flush_timeout_s
        self._since_poll = 0
        self.produced = 0

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors += 1
            if self.first_error is None:
                self.first_error = str(err)

    def write(self, topic: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                self._produce(topic, value, key)
                break
            except BufferError:
                self._producer.poll(0.1)  # the queue is full: let librdkafka send some
        self.produced += 1
        self._since_poll += 1
        if self._since_poll >= self._poll_every:
            self._since_poll = 0
            self._producer.poll(0)

    def close(self) -> None:
        left = self._producer.flush(self._flush_timeout_s)
        if left:
            raise KafkaError(f"{left} simulated events still undelivered after flush")
        if self.errors:
            raise KafkaError(f"{self.errors} simulated events failed: {self.first_error}")


def open_sink(settings: Settings, out: Path | str | None) -> JsonlSink | ParquetSink | KafkaSink:
    """A file sink chosen by suffix, or Kafka when ``out`` is None."""
    if out is None:
        return KafkaSink(settings)
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return ParquetSink(path)
    if suffix in _JSONL_SUFFIXES:
        return JsonlSink(path)
    raise ValueError(f"unknown output format {suffix!r}: use .jsonl or .parquet (or Kafka)")
