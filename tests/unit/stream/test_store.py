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
