"""Identity state as the worker keeps it: in memory by partition, written through to a
compacted changelog, and writes held back until a unit of work's outputs are delivered."""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

from aiokafka.partitioner import murmur2

from pipeline.stream.offsets import Source, unwrap, wrap

__all__ = ["Emit", "PartitionStore", "Staged"]


#: Where a state write goes besides memory: (partition, key, value or None for a delete).
Emit = Callable[[int, bytes, bytes | None], None]


class PartitionStore(MutableMapping[str, bytes]):
    """Identity state in memory, filed by input partition, written through to a changelog.

    The pure core sees ``str → bytes``. Each stored value is the core state behind the input
    offsets it includes (:func:`~pipeline.stream.offsets.wrap`), and every write is also
    handed to ``emit`` - the worker produces it to a compacted changelog topic, keyed by the
    identity, in the partition its events arrive on - so a worker that takes the partition
    over (a restart, a rebalance) restores it with :meth:`load`. A write goes to the
    partition of one of the identity's events in the unit of work (``events``), else to the
    one it was last filed under, else to the one its key hashes to (murmur2, as producers).
    """

    def __init__(self, partitions: int, emit: Emit) -> None:
        self.partitions = partitions
        self.emit = emit
        self.states: dict[str, bytes] = {}  # uid → wrapped value
        self.where: dict[str, int] = {}  # uid → its partition
        self.events: dict[str, Any] = {}  # identity uid → one of its records in this unit
        # Offsets the next write of an identity includes (pipeline.stream.offsets): set by the
        # unit of work before its state is committed; a write without marks keeps the old ones.
        self.marks: dict[str, dict[Source, int]] = {}

    def forget(self) -> None:
        """End of a unit of work: its marks never outlive it."""
        self.marks = {}

    def applied(self, key: str) -> dict[Source, int]:
        """The input offsets ``key``'s stored state already includes."""
        value = self.states.get(key)
        return unwrap(value)[1] if value is not None else {}

    def remember(self, uid: str, event: Any, batch: dict[str, Any]) -> None:
        """Note ``event`` as ``uid``'s in a batch's own map."""
        batch[uid] = event

    def partition_of(self, key: str) -> int:
        event = self.events.get(key)
        if event is not None:
            return int(event.message.partition)
        known = self.where.get(key)
        if known is not None:
            return known
        return int(murmur2(key.encode()) & 0x7FFFFFFF) % self.partitions

    # --- restore and hand-over (the worker's rebalance callbacks) ---------------------------

    def load(self, partition: int, key: bytes, value: bytes | None) -> None:
        """One changelog record, read back in order (None: the identity was deleted)."""
        uid = key.decode("utf-8", "replace")
        if value is None:
            self.states.pop(uid, None)
            self.where.pop(uid, None)
        else:
            self.states[uid] = value
            self.where[uid] = partition

    def drop(self, partitions: set[int]) -> list[str]:
        """Forget the identities of partitions another worker now owns (returns them)."""
        gone = [uid for uid, p in self.where.items() if p in partitions]
        for uid in gone:
            del self.states[uid]
            del self.where[uid]
        return gone

    def owned(self) -> set[int]:
        return set(self.where.values())

    # --- the mapping the core sees ----------------------------------------------------------

    def __getitem__(self, key: str) -> bytes:
        return unwrap(self.states[key])[0]

    def get(self, key: str, default: Any = None) -> Any:
        value = self.states.get(key)
        return default if value is None else unwrap(value)[0]

    def __contains__(self, key: object) -> bool:
        return key in self.states

    def __setitem__(self, key: str, value: bytes) -> None:
        marks = self.marks.pop(key, None)
        if marks is None:
            marks = self.applied(key)
        p = self.partition_of(key)
        stored = self.states[key] = wrap(value, marks)
        self.where[key] = p
        self.emit(p, key.encode(), stored)

    def __delitem__(self, key: str) -> None:
        p = self.partition_of(key)
        del self.states[key]
        self.where.pop(key, None)
        self.emit(p, key.encode(), None)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.states))

    def __len__(self) -> int:
        return len(self.states)


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
