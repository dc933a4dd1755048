"""Identity state as the worker keeps it: a faust table seen as ``str -> bytes``, and writes
held back until a unit of work's outputs are delivered."""

from __future__ import annotations

import weakref
from collections.abc import Iterator, MutableMapping
from typing import Any

from aiokafka.partitioner import murmur2
from faust.streams import _current_event

from pipeline.stream.offsets import Source, unwrap, wrap

__all__ = ["Staged", "TableStore"]


class TableStore(MutableMapping[str, bytes]):
    """A faust table seen as ``str → bytes`` (what the pure core expects).

    faust's RocksDB store files a written key under the partition of the *current event*.
    The pure core writes back once per identity after a whole micro-batch, so before each
    write this sets the current event to one of that identity's own events (or, for timer
    writes, to a recent event of the partition the key hashes to).
    """

    def __init__(self, table: Any, partitions: int) -> None:
        self.table = table
        self.partitions = partitions
        self.events: dict[str, Any] = {}  # identity uid → one of its events in this batch
        self.by_partition: dict[int, Any] = {}  # partition → a recent event from it
        # Offsets the next write of an identity includes (pipeline.stream.offsets): set by the
        # unit of work before its state is committed; a write without marks keeps the old ones.
        self.marks: dict[str, dict[Source, int]] = {}
        # Values read by applied() in this unit of work: the core reads the same identity
        # right after, and one RocksDB get per identity and batch is enough (forget() per unit).
        self._read: dict[str, bytes | None] = {}

    def forget(self) -> None:
        """End of a unit of work: later units read the table afresh (rebalances move it)."""
        self._read.clear()
        self.marks = {}

    def _value(self, key: str) -> bytes | None:
        if key in self._read:
            return self._read[key]
        return self.table.get(key.encode())  # type: ignore[no-any-return]

    def applied(self, key: str) -> dict[Source, int]:
        """The input offsets ``key``'s stored state already includes."""
        value = self._read[key] = self.table.get(key.encode())
        return unwrap(value)[1] if value is not None else {}

    def remember(self, uid: str, event: Any, batch: dict[str, Any]) -> None:
        """Note ``event`` as ``uid``'s in a batch's own map (agents interleave at awaits)."""
        batch[uid] = event
        self.by_partition[event.message.partition] = event

    def _enter(self, key: str) -> None:
        event = self.events.get(key)
        if event is None:
            part = (murmur2(key.encode()) & 0x7FFFFFFF) % self.partitions
            event = self.by_partition.get(part)
        if event is not None:
            _current_event.set(weakref.ref(event))

    def __getitem__(self, key: str) -> bytes:
        value = self._value(key)
        if value is None:
            raise KeyError(key)
        return unwrap(value)[0]

    def get(self, key: str, default: Any = None) -> Any:
        value = self._value(key)
        return default if value is None else unwrap(value)[0]

    def __setitem__(self, key: str, value: bytes) -> None:
        marks = self.marks.pop(key, None)
        if marks is None:
            marks = self.applied(key)
        self._read.pop(key, None)
        self._enter(key)
        self.table[key.encode()] = wrap(value, marks)

    def __delitem__(self, key: str) -> None:
        self._read.pop(key, None)
        self._enter(key)
        del self.table[key.encode()]

    def __iter__(self) -> Iterator[str]:
        return (k.decode() for k in self.table.keys())

    def __len__(self) -> int:
        return len(self.table)


class Staged(MutableMapping[str, bytes]):
    """State writes of one unit of work, held back until its outputs are delivered.

    Results before state: if the worker dies after writing an identity's new state but before
    its findings and commands reach the broker, the restarted worker re-reads the events, finds
    the incident already recorded in the state and never reports it. Reads see the staged
    writes first; :meth:`commit` writes them to the table (its changelog) afterwards.
    """

    def __init__(self, base: MutableMapping[str, bytes]) -> None:
        self.base = base
        self.writes: dict[str, bytes | None] = {}  # None: deleted

    def __getitem__(self, key: str) -> bytes:
        if key in self.writes:
            value = self.writes[key]
            if value is None:
                raise KeyError(key)
            return value
        return self.base[key]

    def get(self, key: str, default: Any = None) -> Any:
        if key in self.writes:
            value = self.writes[key]
            return default if value is None else value
        return self.base.get(key, default)

    def __setitem__(self, key: str, value: bytes) -> None:
        self.writes[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self.writes[key] = None

    def __contains__(self, key: object) -> bool:
        if key in self.writes:
            return self.writes[key] is not None
        return key in self.base

    def __iter__(self) -> Iterator[str]:
        seen = set(self.writes)
        yield from (k for k, v in self.writes.items() if v is not None)
        yield from (k for k in self.base if k not in seen)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def commit(self) -> int:
        for key, value in self.writes.items():
            if value is None:
                self.base.pop(key, None)
            else:
                self.base[key] = value
        n = len(self.writes)
        self.writes.clear()
        return n
