"""Staged state: a unit of work reads its own writes; the table sees them only on commit.
Side parts: written before their identity's state, rolled back on restore when that state
write never landed."""

from __future__ import annotations

import pytest

from pipeline.detection import side_key
from pipeline.stream.offsets import unit_of, unwrap
from pipeline.stream.store import PartitionStore, Staged


def test_staged_writes_are_visible_to_the_unit_and_reach_the_table_on_commit() -> None:
    table = {"a": b"old-a", "b": b"old-b"}
    staged = Staged(table)
    staged["a"] = b"new-a"
    staged["c"] = b"new-c"
    del staged["b"]
    assert staged["a"] == b"new-a" and staged.get("b") is None and "c" in staged
    assert sorted(staged) == ["a", "c"] and len(staged) == 2
    assert table == {"a": b"old-a", "b": b"old-b"}  # nothing written before delivery
    assert staged.commit() == 3
    assert table == {"a": b"new-a", "c": b"new-c"}
    assert staged.writes == {}


def test_deleting_what_is_not_there_is_an_error() -> None:
    with pytest.raises(KeyError):
        del Staged({})["x"]


def test_partition_store_files_identities_under_their_events_partition_and_writes_through() -> None:
    from types import SimpleNamespace

    from pipeline.stream.offsets import unwrap
    from pipeline.stream.store import PartitionStore

    emitted: list[tuple[int, bytes, bytes | None]] = []
    store = PartitionStore(6, lambda p, k, v: emitted.append((p, k, v)))
    store.events = {"a": SimpleNamespace(message=SimpleNamespace(partition=4))}
    store.marks = {"a": {(1, 4): 17}}
    store["a"] = b"\x94state-a"
    store["b"] = b"\x94state-b"  # no event in this unit: the partition its key hashes to
    assert emitted[0][:2] == (4, b"a") and unwrap(emitted[0][2] or b"") == (
        b"\x94state-a", {(1, 4): 17})  # fmt: skip
    assert store["a"] == b"\x94state-a" and store.applied("a") == {(1, 4): 17}
    assert store.get("zz") is None and "a" in store and len(store) == 2
    store.events = {}
    store["a"] = b"\x94state-a2"  # later (a tick): where it was filed, offsets kept
    assert emitted[-1][0] == 4 and store.applied("a") == {(1, 4): 17}
    part_b = emitted[1][0]
    del store["b"]
    assert emitted[-1] == (part_b, b"b", None)  # a tombstone in the changelog
    # Hand-over: another worker's partitions are forgotten, restored ones come back.
    assert store.drop({4}) == ["a"] and len(store) == 0
    store.load(4, b"a", emitted[2][2])
    assert store["a"] == b"\x94state-a2" and store.owned() == {4}
    store.load(4, b"a", None)
    assert "a" not in store


def test_a_commit_writes_what_writing_one_by_one_writes() -> None:
    """Staged.commit hands a PartitionStore its states in one call (write_states): the same
    records, in the same order, as a commit into any other mapping (one write at a time),
    deletes and side parts included."""
    from collections import UserDict
    from types import SimpleNamespace

    class OneByOne(UserDict[str, bytes]):  # not a PartitionStore: Staged writes key by key
        def __init__(self, store: PartitionStore) -> None:
            self.data = store  # type: ignore[assignment]

    logs = []
    for direct in (True, False):
        emitted, store = _changelog()
        store.partitions = 6
        for unit in range(4):
            store.forget()
            store.events = {"a": SimpleNamespace(message=SimpleNamespace(partition=2))}
            store.marks = {"a": {(1, 2): unit}, "c": {(1, 0): 3, (2, 5): unit}}
            staged = Staged(store if direct else OneByOne(store))
            staged["a"] = b"\x94a%d" % unit
            staged["b"] = b"\x94b"  # no event, no marks: its key's partition, offsets kept
            staged["c"] = b"\x94c"
            staged[side_key("a")] = b"\x91side"
            if unit == 2:
                del staged["b"]
                del staged[side_key("a")]
            staged.commit()
        logs.append((emitted, store.states, store.where, store._envelopes))
    assert logs[0] == logs[1]
    emitted = logs[0][0]
    assert len(emitted) == 4 * 4 and emitted[0][1] == b"a\x00side" and emitted[1][1] == b"a"
    assert (emitted[9][1:], emitted[10][1:]) == ((b"a", emitted[9][2]), (b"b", None))


Records = list[tuple[int, bytes, bytes | None]]


def _changelog() -> tuple[Records, PartitionStore]:
    emitted: list[tuple[int, bytes, bytes | None]] = []
    return emitted, PartitionStore(1, lambda p, k, v: emitted.append((p, k, v)))


def _restore(records: Records) -> tuple[PartitionStore, int]:
    """A new owner reads the changelog back: the store and how many side parts rolled back."""
    store = PartitionStore(1, lambda p, k, v: None)
    for p, k, v in records:
        store.load(p, k, v)
    return store, store.settle(k for _, k, _ in records)


def test_a_side_part_is_written_before_its_state_and_next_to_it() -> None:
    """One unit writes both to the same partition, the side part first (Staged.commit)."""
    emitted, store = _changelog()
    staged = Staged(store)
    staged["a"] = b"\x94state-1"
    staged[side_key("a")] = b"side-1"
    staged.commit()
    assert [k for _, k, _ in emitted] == [b"a\x00side", b"a"]
    assert {p for p, _, _ in emitted} == {0}
    assert store["a\x00side"] == b"side-1" and store.identities() == 1
    restored, rolled = _restore(emitted)
    assert restored["a\x00side"] == b"side-1" and rolled == 0


def test_a_side_part_whose_state_write_never_landed_is_rolled_back_on_restore() -> None:
    """kill -9 between a unit's side-part write and its state write: the restored side part is
    the one that goes with the restored state, and the unit's events apply to both again."""
    emitted, store = _changelog()
    for n in (1, 2):  # two units that finished
        staged = Staged(store)
        staged["a"] = b"\x94state-%d" % n
        staged[side_key("a")] = b"side-%d" % n
        staged.commit()
        store.forget()
    staged = Staged(store)
    staged["a"] = b"\x94state-3"
    staged[side_key("a")] = b"side-3"
    staged.commit()
    cut = emitted[:-1]  # the third unit's state write was lost
    assert cut[-1][1] == b"a\x00side"
    restored, rolled = _restore(cut)
    assert restored["a"] == b"\x94state-2"
    assert restored[side_key("a")] == b"side-2" and rolled == 1
    # A new identity whose first unit was cut the same way has no side part at all.
    emitted, store = _changelog()
    staged = Staged(store)
    staged["b"] = b"\x94state-1"
    staged[side_key("b")] = b"side-1"
    staged.commit()
    restored, _ = _restore(emitted[:-1])
    assert side_key("b") not in restored and "b" not in restored
    # Later units are numbered above every restored one: their writes count as later.
    assert restored.unit > max(unit_of(v or b"") for _, _, v in emitted)


def test_a_deleted_side_part_stays_recoverable_until_a_later_state_write() -> None:
    emitted, store = _changelog()
    staged = Staged(store)
    staged["a"] = b"\x94state-1"
    staged[side_key("a")] = b"side-1"
    staged.commit()
    store.forget()
    staged = Staged(store)
    staged["a"] = b"\x94state-2"
    del staged[side_key("a")]  # the incident closed: nothing left on the side
    staged.commit()
    assert side_key("a") not in store and len(store) == 1
    # Not a tombstone yet: the value before stays in the changelog for a roll-back...
    assert emitted[-2][1] == b"a\x00side" and emitted[-2][2] is not None
    restored, _ = _restore(emitted[:-1])  # ... which a cut before the state write needs
    assert restored[side_key("a")] == b"side-1"
    restored, _ = _restore(emitted)
    assert side_key("a") not in restored
    store.forget()
    store["a"] = b"\x94state-3"
    assert emitted[-1] == (0, b"a\x00side", None)  # now it goes for good
    assert store.sides == set() and store.identities() == 1


def test_a_damaged_value_header_is_refused() -> None:
    """A header that promises more offset entries than the value holds is a struct.error,
    even when what is left happens to be a whole number of entries."""
    import struct

    from pipeline.stream.offsets import unwrap, wrap

    value = wrap(b"\x94core", {(1, 0): 41, (2, 3): 7}, unit=12)
    assert unwrap(value) == (b"\x94core", {(1, 0): 41, (2, 3): 7})
    for damaged in (value[:5], b"\xc1\x02" + value[2:13], value[:1] + b"\xff" + value[2:]):
        with pytest.raises(struct.error):
            unwrap(damaged)


def test_a_unit_number_is_packed_as_the_last_entry_whatever_the_offsets() -> None:
    """The writer's common path (the unit's entry appended, no merged dict) gives the bytes the
    general one does, across the entry limit too (the oldest sources are dropped first)."""
    from pipeline.stream.offsets import unwrap, wrap

    unit_entry = (255, 65535)  # where the unit's number is kept (offsets.py)
    for n in (0, 1, 2, 3, 254, 255, 300):
        applied = {(1 + i % 3, 1000 - i): 10**12 + i for i in range(n)}
        value = wrap(b"\x94core", applied, unit=9)
        assert value == wrap(b"\x94core", {**applied, unit_entry: 9})  # the general path
        core, back = unwrap(value)
        assert core == b"\x94core" and value[1] == min(n + 1, 255)
        assert back == dict(sorted(applied.items())[-254:] if n >= 255 else applied)


def test_the_offsets_a_unit_reads_follow_every_change_of_the_stored_value() -> None:
    """applied() and get() parse an identity's envelope once per unit; what they answer must
    still be the stored value's own: after a caller changes its copy, a write, a restore."""
    from pipeline.stream.offsets import wrap

    store = PartitionStore(1, lambda p, k, v: None)
    store.load(0, b"a", wrap(b"\x94one", {(1, 0): 5}, unit=3))
    mine = store.applied("a")
    mine[(1, 0)] = 99  # the unit's own marks: not the store's
    assert store.applied("a") == {(1, 0): 5} and store["a"] == b"\x94one"
    store.load(0, b"a", wrap(b"\x94two", {(1, 0): 7}, unit=4))  # same unit, a new value
    assert store.applied("a") == {(1, 0): 7} and store.get("a") == b"\x94two"
    store["a"] = b"\x94three"  # a write without marks keeps the stored ones
    assert store.applied("a") == {(1, 0): 7} and store["a"] == b"\x94three"
    store.marks = {"a": {(1, 0): 8}}
    store["a"] = b"\x94four"
    assert store.applied("a") == {(1, 0): 8} and store.get("a") == b"\x94four"
    assert store.drop({0}) == ["a"] and store.get("a") is None and store.applied("a") == {}


def test_the_offsets_read_after_a_write_are_the_callers_own_copy() -> None:
    """applied() answers from the envelope kept at the write: the unit's marks set on that
    answer must change neither the stored value's offsets nor a later write without marks."""
    store = PartitionStore(1, lambda p, k, v: None)
    store.marks = {"a": {(1, 0): 5}}
    store["a"] = b"\x94one"
    mine = store.applied("a")
    mine[(1, 0)] = 99  # a unit's mark that is never committed
    assert store.applied("a") == {(1, 0): 5} and store.applied("a") is not mine
    store["a"] = b"\x94two"  # a write without marks keeps the stored ones, not the unit's
    assert unwrap(store.states["a"])[1] == {(1, 0): 5} and store.applied("a") == {(1, 0): 5}


def test_parsed_offsets_are_kept_for_recent_identities_only() -> None:
    """The parsed envelopes the store keeps are bounded (two generations), and what it answers
    is the same whether an identity's envelope is kept, aged or dropped."""
    from pipeline.stream.offsets import wrap

    store = PartitionStore(1, lambda p, k, v: None)
    store.ENVELOPES = 4
    for i in range(20):
        store.load(0, b"u%d" % i, wrap(b"\x94s%d" % i, {(1, 0): i}, unit=1))
    for _ in range(2):  # the second pass reads envelopes kept, aged and evicted
        for i in range(20):
            assert store.applied(f"u{i}") == {(1, 0): i} and store[f"u{i}"] == b"\x94s%d" % i
            assert len(store._envelopes) <= 4 and len(store._older) <= 4
    store.marks = {"u3": {(1, 0): 30}}
    store["u3"] = b"\x94new"  # kept with the offsets it was written with
    assert store.applied("u3") == {(1, 0): 30} and store._envelopes["u3"][0] is store.states["u3"]


def test_get_returns_the_state_written_itself_and_a_restored_one_unwrapped() -> None:
    """After a write, get hands back the very core written (Detection's decoded-state cache
    recognises it by identity); a value restored from the changelog is unwrapped."""
    emitted, store = _changelog()
    core = b"\x94" + bytes(600)
    store.marks = {"a": {(1, 0): 5}}
    store["a"] = core
    assert store.get("a") is core and store["a"] == core
    restored, _ = _restore(emitted)
    got = restored.get("a")
    assert got == core and got is not core and restored.get("a") == core


# --- snapshot mode (deferred): writes held in memory until a flush ----------------------------


def _deferred() -> tuple[Records, PartitionStore]:
    emitted: list[tuple[int, bytes, bytes | None]] = []
    return emitted, PartitionStore(1, lambda p, k, v: emitted.append((p, k, v)), deferred=True)


def _unit(store: PartitionStore, n: int, side: bytes | None = b"") -> None:
    """One unit of work writing identity a's state and (None: deleting) its side part."""
    staged = Staged(store)
    staged["a"] = b"\x94state-%d" % n
    if side is None:
        del staged[side_key("a")]
    else:
        staged[side_key("a")] = side or b"side-%d" % n
    staged.commit()
    store.forget()


def test_deferred_writes_are_emitted_once_each_at_the_flush_side_parts_first() -> None:
    emitted, store = _deferred()
    for n in (1, 2, 3):
        _unit(store, n)
    store["b"] = b"\x94b"
    del store["b"]  # written and deleted within the interval: a tombstone at the flush
    assert emitted == [] and set(store.dirty) == {"a", side_key("a"), "b"}
    assert store["a"] == b"\x94state-3" and store[side_key("a")] == b"side-3"
    assert store.flush() == 3
    assert [k for _, k, _ in emitted] == [b"a\x00side", b"a", b"b"]
    assert emitted[2][2] is None and store.dirty == {}
    restored, rolled = _restore(emitted)
    assert restored["a"] == b"\x94state-3" and restored[side_key("a")] == b"side-3"
    assert rolled == 0 and "b" not in restored
    assert store.flush() == 0 and len(emitted) == 3  # nothing changed since


def test_a_snapshot_cut_between_side_part_and_state_rolls_back_to_the_last_snapshot() -> None:
    """Three units between two snapshots, then a kill after the second snapshot's side part:
    the side part goes back to its value at the first snapshot - the one beside the restored
    state - not to its value before the last unit (write-through's roll-back)."""
    emitted, store = _deferred()
    _unit(store, 1)
    store.flush()
    first = len(emitted)
    for n in (2, 3, 4):
        _unit(store, n)
    store.flush()
    cut = emitted[: first + 1]
    assert cut[-1][1] == b"a\x00side"
    restored, rolled = _restore(cut)
    assert restored["a"] == b"\x94state-1" and restored[side_key("a")] == b"side-1"
    assert rolled == 1
    restored, rolled = _restore(emitted)  # the whole snapshot: nothing to roll back
    assert restored[side_key("a")] == b"side-4" and rolled == 0


def test_a_side_part_deleted_between_snapshots_goes_after_its_state_in_the_next() -> None:
    emitted, store = _deferred()
    _unit(store, 1)
    store.flush()
    first = len(emitted)
    _unit(store, 2, side=None)  # the incident closed
    _unit(store, 3)  # and another opened: the side part is back, still unflushed
    _unit(store, 4, side=None)
    assert side_key("a") not in store and store.sides == {side_key("a")}
    store.flush()
    keys = [k for _, k, _ in emitted[first:]]
    assert keys == [b"a\x00side", b"a", b"a\x00side"]
    assert emitted[first][2] is not None and emitted[-1][2] is None  # kept, then a tombstone
    restored, _ = _restore(emitted[: first + 1])  # cut before the state: back to snapshot one
    assert restored[side_key("a")] == b"side-1" and restored["a"] == b"\x94state-1"
    restored, _ = _restore(emitted[: first + 2])  # cut before the tombstone: deleted
    assert side_key("a") not in restored and restored["a"] == b"\x94state-4"
    assert store.sides == set() and store.identities() == 1


def test_write_through_emits_an_identitys_dirty_side_part_and_state_only() -> None:
    """A tick's or feedback's state is written at once, with its side part if that changed
    since the last snapshot (else a restore pairs the new state with an old side part)."""
    emitted, store = _deferred()
    _unit(store, 1)
    store["b"] = b"\x94b"
    assert store.write_through(["a"]) == 2
    assert [k for _, k, _ in emitted] == [b"a\x00side", b"a"] and set(store.dirty) == {"b"}
    restored, rolled = _restore(emitted)
    assert restored[side_key("a")] == b"side-1" and rolled == 0
    assert store.write_through(["a"]) == 0  # nothing left to write


def test_a_handed_over_partition_takes_its_unwritten_changes_with_it() -> None:
    emitted: list[tuple[int, bytes, bytes | None]] = []
    store = PartitionStore(2, lambda p, k, v: emitted.append((p, k, v)), deferred=True)
    from types import SimpleNamespace

    for p, key in enumerate(("x", "y")):
        store.events = {key: SimpleNamespace(message=SimpleNamespace(partition=p))}
        store[key] = b"\x94" + key.encode()
    assert store.dirty == {"x": 0, "y": 1}
    store.drop({0})
    assert set(store.dirty.values()) == {1}
    store.flush()
    assert {p for p, _, _ in emitted} == {1}


def test_a_snapshot_marker_is_not_an_identity() -> None:
    from pipeline.stream.store import MARKER

    emitted, store = _deferred()
    _unit(store, 1)
    store.flush()
    emitted.append((0, MARKER, b"\x81\xa1t\x05"))
    restored, rolled = _restore(emitted)
    assert sorted(restored) == ["a", side_key("a")] and restored.identities() == 1
    assert rolled == 0 and restored.owned() == {0}
