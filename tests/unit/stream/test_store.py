"""Staged state: a unit of work reads its own writes; the table sees them only on commit."""

from __future__ import annotations

import pytest

from pipeline.stream.store import Staged


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
