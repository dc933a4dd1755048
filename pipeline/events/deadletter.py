"""Dead-letter records for input that breaks the event contract (pure: no Kafka here).

The record keeps the original key and value byte for byte; everything Custos adds travels in
headers, so a fixed event can be re-published from the dead-letter topic unchanged. Every
dead-letter topic's headers come from :func:`dead_letter_headers` (the responder's refused
commands too), so readers find the reason and source position under the same names.

>>> from pipeline.errors import InvalidEvent
>>> err = InvalidEvent("invalid_json", "unexpected character")
>>> dl = dead_letter(err, key=b"u1", value=b"{oops", topic="identity.events", partition=2,
...                  offset=41, timestamp_ms=1700000000000, now_ms=1700000000500)
>>> dl.value, dict(dl.headers)["custos.source.offset"]
(b'{oops', b'41')
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.errors import InvalidEvent

HEADER_PREFIX = "custos."


@dataclass(frozen=True, slots=True)
class DeadLetter:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, str | bytes | None]]
    reason: str


def dead_letter_headers(
    reason: str,
    *,
    partition: int,
    offset: int,
    topic: str | None = None,
    detail: str | None = None,
    now_ms: int | None = None,
    timestamp_ms: int | None = None,
) -> list[tuple[str, str | bytes | None]]:
    """Why a record was dead-lettered and where it came from; what is ``None`` is left out.

    >>> dead_letter_headers("unsigned", partition=0, offset=7)  # doctest: +NORMALIZE_WHITESPACE
    [('custos.reason', b'unsigned'), ('custos.source.partition', b'0'),
     ('custos.source.offset', b'7')]
    """
    headers: list[tuple[str, str | bytes | None]] = [("custos.reason", reason.encode())]
    if detail is not None:
        # Bounded: a detail quoting a 1 MB payload must not make the DLQ record oversized too.
        headers.append(("custos.detail", detail[:1000].encode("utf-8", "replace")))
    if topic is not None:
        headers.append(("custos.source.topic", topic.encode()))
    headers += [("custos.source.partition", str(partition).encode()),
                ("custos.source.offset", str(offset).encode())]  # fmt: skip
    if now_ms is not None:
        headers.append(("custos.dlq.time", str(now_ms).encode()))
    if timestamp_ms is not None:
        headers.append(("custos.source.timestamp", str(timestamp_ms).encode()))
    return headers


def dead_letter(
    error: InvalidEvent,
    *,
    key: bytes | None,
    value: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    now_ms: int,
    source_headers: Sequence[tuple[str, str | bytes | None]] | None = None,
) -> DeadLetter:
    """Build the dead-letter record for one rejected input message."""
    headers = dead_letter_headers(error.reason, partition=partition, offset=offset, topic=topic,
                                  detail=error.detail, now_ms=now_ms,
                                  timestamp_ms=timestamp_ms)  # fmt: skip
    if key is None and value is None:
        # A tombstone has no bytes to keep; Kafka clients refuse a record with neither key
        # nor value, so the dead letter carries an empty value and says what it was.
        headers.append(("custos.source.tombstone", b"1"))
        value = b""
    # Producers' own headers are kept (minus ours, which would be ambiguous) for tracing.
    for name, val in source_headers or []:
        # Case and padding do not make a spoofed "Custos.Reason" any less ours to a reader.
        if not str(name).strip().casefold().startswith(HEADER_PREFIX):
            headers.append((name, val))
    return DeadLetter(key=key, value=value, headers=headers, reason=error.reason)


class ReasonCounter:
    """Thread-safe counters of dead-lettered messages per (source topic, reason)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()

    def add(self, topic: str, reason: str, n: int = 1) -> None:
        with self._lock:
            self._counts[(topic, reason)] += n

    def by_reason(self) -> dict[str, int]:
        with self._lock:
            out: Counter[str] = Counter()
            for (_, reason), n in self._counts.items():
                out[reason] += n
            return dict(out)

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())
