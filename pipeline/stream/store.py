"""Identity state as the worker keeps it: in memory by partition, written through to a
compacted changelog, and writes held back until a unit of work's outputs are delivered.

An identity has up to two values: its state (what every event reads) and, for the few with an
incident, held events or feedback, a side part (:func:`~pipeline.detection.side_key`). A unit
of work writes both to the same changelog partition, the side part first; a crash between the
two leaves the side part ahead of the state. So a side part's record also keeps the value before
it, and each record names the unit that wrote it (:func:`~pipeline.stream.offsets.unit_of`): on
restore, a side part written by a later unit than its identity's state is rolled back to the
value before (:meth:`PartitionStore.settle`), and the re-read events apply to both again.

Snapshot mode (``deferred``, the worker's ``snapshot_interval_s`` > 0): writes go to memory
only and mark the key dirty; :meth:`PartitionStore.flush` writes every dirty value at once,
side parts first, so "the value before" is the side part's value when it was last written out
(the one a restore can find beside its state), not the value before one unit. A deleted side
part is written out as "none, with the value before" and removed for good (a tombstone) only
after its state, in the same flush. The worker writes one :data:`MARKER` record per partition
after each flush: the input offsets the partition's states include from then on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Any

import msgspec
from aiokafka.partitioner import murmur2

from pipeline.detection import SIDE_SUFFIX, side_key, side_owner
from pipeline.stream.offsets import Source, envelope, unit_of, unwrap, wrap

__all__ = ["MARKER", "Emit", "PartitionStore", "Staged"]

#: The changelog key of a partition's snapshot marker (the worker's, see hot.py): identity uids
#: are printable, so no identity's key starts with a NUL.
MARKER = b"\0snapshot"


#: Where a state write goes besides memory: (partition, key, value or None for a delete).
Emit = Callable[[int, bytes, bytes | None], None]

# A parsed identity envelope: (stored value, where its core starts, offsets applied, the core
# itself when this store wrote it, else None).
_Envelope = tuple[bytes, int, dict[Source, int], bytes | None]

#: What :meth:`Staged.get` finds for a key the unit did not write (None means deleted).
_UNSTAGED: Any = object()

# A side part's record: (value, the value before it), either None when there was none.
_PAIR_ENCODER = msgspec.msgpack.Encoder()
_PAIR_DECODER = msgspec.msgpack.Decoder(tuple[bytes | None, bytes | None])


def _pair(stored: bytes) -> tuple[bytes | None, bytes | None]:
    return _PAIR_DECODER.decode(unwrap(stored)[0])


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

    #: Identity envelopes kept per generation (see ``_envelopes``).
    ENVELOPES = 25_000

    def __init__(self, partitions: int, emit: Emit, *, deferred: bool = False) -> None:
        self.partitions = partitions
        self.emit = emit
        # Snapshot mode: writes are not emitted, their keys are noted here (key → partition)
        # until the next flush (a deletion's partition too: it is no longer filed).
        self.deferred = deferred
        self.dirty: dict[str, int] = {}
        self.states: dict[str, bytes] = {}  # uid → wrapped value
        self.where: dict[str, int] = {}  # uid → its partition
        self.events: dict[str, Any] = {}  # identity uid → one of its records in this unit
        # Offsets the next write of an identity includes (pipeline.stream.offsets): set by the
        # unit of work before its state is committed; a write without marks keeps the old ones.
        self.marks: dict[str, dict[Source, int]] = {}
        # Offsets (and partition) of identities whose state the core holds in memory, newer
        # than the value here (Detection.defer_writes): what their next write includes.
        self.pending: dict[str, tuple[dict[Source, int], int]] = {}
        # The number of the unit of work writing now, recorded in every value it writes; above
        # every number restored, so a later unit's writes are recognised as later (settle).
        self.unit = 1
        self.sides: set[str] = set()  # the keys of side parts held (deleted ones included)
        # Parsed envelopes of recently used identity states: uid → (the stored value, where its
        # core starts, the offsets it includes). Each unit reads an identity's offsets
        # (applied), then its core (get), then writes it; active identities come back unit
        # after unit, so one parse (or none, after our own write) serves them all. An entry
        # holds only while ``states`` holds that very value (checked by identity: no write,
        # load or roll-back can leave it stale). Two generations of at most ENVELOPES each
        # bound its memory (~0.5 KB an entry) without LRU bookkeeping on every read. After
        # our own write an entry also holds the core written, and get returns that very
        # object: no copy, and the core's reader (Detection's decoded-state cache, which holds
        # the same object) finds it unchanged by identity, without comparing its bytes.
        self._envelopes: dict[str, _Envelope] = {}
        self._older: dict[str, _Envelope] = {}

    def forget(self) -> None:
        """End of a unit of work: the next unit has a new number. Marks of identities the unit
        did not write (the core keeps their state in memory: deferred writes) wait in
        ``pending`` for the write that will include them."""
        if self.marks:
            events, pending = self.events, self.pending
            for uid, marks in self.marks.items():
                event = events.get(uid)
                p = (int(event.message.partition) if event is not None
                     else self.partition_of(uid))  # fmt: skip
                pending[uid] = (marks, p)
        self.marks = {}
        self.unit += 1

    def identities(self) -> int:
        """How many identity states are held (side parts not counted), those only in the core's
        memory so far included."""
        states = self.states
        return len(states) - len(self.sides) + sum(1 for u in self.pending if u not in states)

    def applied(self, key: str) -> dict[Source, int]:
        """The input offsets ``key``'s state already includes (the caller's own copy)."""
        pending = self.pending.get(key)
        if pending is not None:  # newer in the core's memory than here
            return dict(pending[0])
        stored = self.states.get(key)
        if stored is None:
            return {}
        # _envelope's common case inline: read for every event's identity, once per unit.
        known = self._envelopes.get(key)
        if known is not None and known[0] is stored:
            return dict(known[2])
        return dict(self._envelope(key, stored)[1])

    def _envelope(self, key: str, stored: bytes) -> tuple[int, dict[Source, int]]:
        """(where the core starts, offsets applied) of an identity's ``stored`` state, parsed
        once (the returned offsets are shared: never changed)."""
        known = self._envelopes.get(key)
        if known is not None and known[0] is stored:
            return known[1], known[2]
        known = self._older.get(key)
        if known is None or known[0] is not stored:
            known = (stored, *envelope(stored), None)
        self._keep(key, known)  # young again while used
        return known[1], known[2]

    def _keep(self, key: str, parsed: _Envelope) -> None:
        young = self._envelopes
        if len(young) >= self.ENVELOPES and key not in young:
            self._older, young = young, {}
            self._envelopes = young
        young[key] = parsed

    def remember(self, uid: str, event: Any, batch: dict[str, Any]) -> None:
        """Note ``event`` as ``uid``'s in a batch's own map."""
        batch[uid] = event

    def partition_of(self, key: str) -> int:
        key = side_owner(key) or key  # a side part lives beside its identity's state
        event = self.events.get(key)
        if event is not None:
            return int(event.message.partition)
        known = self.where.get(key)
        if known is not None:
            return known
        pending = self.pending.get(key)
        if pending is not None:  # a new identity the core holds unwritten
            return pending[1]
        return int(murmur2(key.encode()) & 0x7FFFFFFF) % self.partitions

    # --- restore and hand-over (the worker's rebalance callbacks) ---------------------------

    def load(self, partition: int, key: bytes, value: bytes | None) -> None:
        """One changelog record, read back in order (None: the identity was deleted)."""
        if key.startswith(b"\0"):  # a snapshot marker: the worker's, not an identity
            return
        uid = key.decode("utf-8", "replace")
        if value is None:
            self.states.pop(uid, None)
            self.where.pop(uid, None)
            self.sides.discard(uid)
        else:
            self.states[uid] = value
            self.where[uid] = partition
            if side_owner(uid) is not None:
                self.sides.add(uid)

    def settle(self, keys: Iterable[bytes]) -> int:
        """After a partition's changelog is read back (``keys``: its records' keys): number the
        next units above every unit restored, and roll back each side part that a unit wrote
        after its identity's last state write (that unit never finished: its events are
        re-read and apply again). Returns how many side parts were rolled back."""
        rolled = 0
        self._envelopes, self._older = {}, {}  # restored values replaced some: not kept alive
        for raw in set(keys):
            if raw.startswith(b"\0"):
                continue
            key = raw.decode("utf-8", "replace")
            stored = self.states.get(key)
            if stored is None:
                continue
            unit = unit_of(stored)
            self.unit = max(self.unit, unit + 1)
            owner = side_owner(key)
            if owner is None:
                continue
            state = self.states.get(owner)
            written = unit_of(state) if state is not None else 0
            if unit > written:
                before = _pair(stored)[1]
                self.states[key] = wrap(_PAIR_ENCODER.encode((before, before)), {}, written)
                rolled += 1
                if self.deferred:  # written out at the next flush, beside its state
                    self.dirty[key] = self.where[key]
        return rolled

    def drop(self, partitions: set[int]) -> list[str]:
        """Forget the identities of partitions another worker now owns (returns their keys,
        side parts included)."""
        gone = [uid for uid, p in self.where.items() if p in partitions]
        for uid in gone:
            del self.states[uid]
            del self.where[uid]
        # Identities the core holds unwritten there (its forget_states drops them too).
        left = [uid for uid, (_, p) in self.pending.items() if p in partitions]
        for uid in left:
            del self.pending[uid]
        known = set(gone)
        gone += [uid for uid in left if uid not in known]
        # Unwritten changes of those partitions die with them (the new owner replays them).
        self.dirty = {k: p for k, p in self.dirty.items() if p not in partitions}
        self.sides.difference_update(gone)
        self._envelopes, self._older = {}, {}  # theirs now; ours are parsed again on use
        return gone

    def owned(self) -> set[int]:
        return set(self.where.values())

    # --- snapshot mode ------------------------------------------------------------------------

    def flush(self, partitions: set[int] | None = None) -> int:
        """Emit every dirty value (of ``partitions``; None: all): side parts, then states, then
        a tombstone for each side part deleted (its deletion and its state are out before it).
        Returns how many records were emitted."""
        mine = [(k, p) for k, p in self.dirty.items() if partitions is None or p in partitions]
        n = self._emit_now(mine)
        for key in [k for k in self.sides if k not in self.dirty]:
            p = self.where.get(key, -1)
            if partitions is not None and p not in partitions:
                continue
            stored = self.states.get(key)
            if stored is not None and _pair(stored)[0] is None:
                del self.states[key]
                self.where.pop(key, None)
                self.sides.discard(key)
                self.emit(p, key.encode(), None)
                n += 1
        return n

    def write_through(self, uids: Iterable[str]) -> int:
        """Emit now the dirty values of these identities (a side part before its state): for
        units of work with no input record a restart could replay (ticks, feedback)."""
        dirty = self.dirty
        mine: dict[str, int] = {}
        for uid in uids:
            uid = side_owner(uid) or uid
            for key in (side_key(uid), uid):
                p = dirty.get(key)
                if p is not None:
                    mine[key] = p
        return self._emit_now(list(mine.items()))

    def _emit_now(self, keys: list[tuple[str, int]]) -> int:
        states, dirty, emit = self.states, self.dirty, self.emit
        sides = [(k, p) for k, p in keys if k.endswith(SIDE_SUFFIX)]
        for key, p in sides:
            emit(p, key.encode(), states.get(key))
            del dirty[key]
        for key, p in keys:
            if key in dirty:
                emit(p, key.encode(), states.get(key))
                del dirty[key]
        return len(keys)

    # --- the mapping the core sees ----------------------------------------------------------

    def _value(self, key: str) -> bytes | None:
        stored = self.states.get(key)
        if stored is None:
            return None
        if key.endswith(SIDE_SUFFIX):
            return _pair(stored)[0]  # None: deleted, kept only for a roll-back
        return stored[self._envelope(key, stored)[0] :]

    def __getitem__(self, key: str) -> bytes:
        value = self._value(key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        # _value inline: every event reads its identity's state and side part through here.
        stored = self.states.get(key)
        if stored is None:
            return default
        if key.endswith(SIDE_SUFFIX):
            value = _pair(stored)[0]  # None: deleted, kept only for a roll-back
            return default if value is None else value
        known = self._envelopes.get(key)  # _envelope's common case, inline
        if known is not None and known[0] is stored:
            core = known[3]  # stored[known[1]:] as written (stored is its envelope + it)
            return core if core is not None else stored[known[1] :]
        return stored[self._envelope(key, stored)[0] :]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._value(key) is not None

    def __setitem__(self, key: str, value: bytes) -> None:
        if key.endswith(SIDE_SUFFIX):
            self._write(key, value)
            return
        self.write_states(((key, value),))

    def write_states(self, writes: Iterable[tuple[str, bytes | None]]) -> None:
        """``self[key] = value`` (None: ``self.pop(key, None)``) for identity states, not side
        parts, in order: a unit of work's commit (:meth:`Staged.commit`), one loop for the
        write nearly every event causes instead of a call chain per write."""
        states, where, events, marks_of = self.states, self.where, self.events, self.marks
        emit, unit, sides, limit = self.emit, self.unit, self.sides, self.ENVELOPES
        deferred, dirty = self.deferred, self.dirty
        for key, value in writes:
            if value is None:
                self.pop(key, None)
                continue
            # partition_of, inline (an identity's state: its own key)
            event = events.get(key)
            if event is not None:
                p = int(event.message.partition)
            else:
                known = where.get(key)
                p = (known if known is not None
                     else int(murmur2(key.encode()) & 0x7FFFFFFF) % self.partitions)  # fmt: skip
            marks = marks_of.pop(key, None)
            pending = self.pending.pop(key, None) if self.pending else None
            if marks is None:
                if pending is not None:  # a deferred state, written now (its marks kept)
                    marks = pending[0]
                    if event is None:
                        p = pending[1]
                else:
                    old = states.get(key)
                    marks = self._envelope(key, old)[1] if old is not None else {}
            stored = wrap(value, marks, unit)
            states[key] = stored
            # The next unit reads these offsets back without parsing them. The marks handed
            # in become the store's: the unit that set them has finished with them.
            young = self._envelopes  # _keep, inline
            if len(young) >= limit and key not in young:
                self._older, young = young, {}
                self._envelopes = young
            young[key] = (stored, len(stored) - len(value), marks, value)
            where[key] = p
            if deferred:
                dirty[key] = p
                continue
            emit(p, key.encode(), stored)
            if sides and key + SIDE_SUFFIX in sides:
                self._tidy(key, p)

    def _write(self, key: str, value: bytes | None) -> None:
        """A side part's write (None: deleted), kept with the value before this unit (in
        snapshot mode: the value last written out, kept across every rewrite until a flush)."""
        p = self.partition_of(key)
        old = self.states.get(key)
        before = None
        if old is not None:  # the value before this unit (kept across a rewrite in it)
            now, then = _pair(old)
            kept = key in self.dirty if self.deferred else unit_of(old) == self.unit
            before = then if kept else now
        if value is None and before is None:
            self.states.pop(key, None)
            self.where.pop(key, None)
            self.sides.discard(key)
            if old is not None:
                self._out(p, key, None)
            return
        stored = wrap(_PAIR_ENCODER.encode((value, before)), {}, self.unit)
        self.sides.add(key)
        self.states[key] = stored
        self.where[key] = p
        self._out(p, key, stored)

    def _out(self, p: int, key: str, value: bytes | None) -> None:
        """A write: emitted now, or noted dirty until the next flush (snapshot mode)."""
        if self.deferred:
            self.dirty[key] = p
        else:
            self.emit(p, key.encode(), value)

    def _tidy(self, uid: str, p: int) -> None:
        """Delete a deleted side part for good once a later unit wrote the state after it
        (no roll-back can need the value before any more)."""
        key = side_key(uid)
        old = self.states.get(key)
        if old is not None and _pair(old)[0] is None and unit_of(old) < self.unit:
            del self.states[key]
            self.where.pop(key, None)
            self.sides.discard(key)
            self.emit(p, key.encode(), None)

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        if side_owner(key) is not None:  # kept as "none" with the value before, for a roll-back
            self._write(key, None)
            return
        p = self.partition_of(key)
        del self.states[key]
        self.where.pop(key, None)
        self._out(p, key, None)

    def __iter__(self) -> Iterator[str]:
        return iter([k for k in self.states if k in self])

    def __len__(self) -> int:
        return sum(1 for k in self.states if k in self)


class Staged(MutableMapping[str, bytes]):
    """State writes of one unit of work, held back until its outputs are delivered.

    Results before state: if the worker dies after writing an identity's new state but before
    its findings and commands reach the broker, the restarted worker re-reads the events, finds
    the incident already recorded in the state and never reports it. Reads see the staged
    writes first; :meth:`commit` writes them to the table (its changelog) afterwards.
    """

    def __init__(self, base: MutableMapping[str, bytes]) -> None:
        self.base = base
        self._base_get = base.get
        self.writes: dict[str, bytes | None] = {}  # None: deleted

    def __getitem__(self, key: str) -> bytes:
        if key in self.writes:
            value = self.writes[key]
            if value is None:
                raise KeyError(key)
            return value
        return self.base[key]

    def get(self, key: str, default: Any = None) -> Any:
        # One lookup, not two: every event's identity state (and side part) is read here.
        value = self.writes.get(key, _UNSTAGED)
        if value is _UNSTAGED:
            return self._base_get(key, default)
        return default if value is None else value

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
        """Write through to the base: side parts before states (see the module docstring)."""
        writes = self.writes
        base = self.base
        sides = [k for k in writes if k.endswith(SIDE_SUFFIX)]
        for key in sides:
            value = writes[key]
            if value is None:
                base.pop(key, None)
            else:
                base[key] = value
        rest: Iterable[tuple[str, bytes | None]] = writes.items()
        if sides:
            rest = [(k, v) for k, v in rest if not k.endswith(SIDE_SUFFIX)]
        if isinstance(base, PartitionStore):
            base.write_states(rest)
        else:
            for key, value in rest:
                if value is None:
                    base.pop(key, None)
                else:
                    base[key] = value
        n = len(writes)
        self.writes.clear()
        return n
