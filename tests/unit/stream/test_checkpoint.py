from __future__ import annotations

from pathlib import Path

from pipeline.stream.offsets import SharedCheckpoint


def test_shared_models_are_serialised_when_saved_not_per_unit(tmp_path: Path) -> None:
    models = {"v": 0}
    calls: list[int] = []

    def serialise() -> bytes:
        calls.append(models["v"])
        return f"models@{models['v']}".encode()

    ck = SharedCheckpoint(tmp_path / "ck.msgpack")
    assert not ck.holds() and not ck.save()  # nothing to save yet
    for unit in range(1, 6):  # five units of work, each learning something
        models["v"] = unit
        ck.snapshot({(1, 0): unit * 10}, serialise)
    assert calls == [] and ck.holds()  # nothing serialised between units
    ck.snapshot({(1, 0): 55}, None)  # a unit that taught the models nothing
    assert ck.save()
    assert calls == [5]  # once, at the save: the models as the latest offsets describe them
    again = SharedCheckpoint(tmp_path / "ck.msgpack")
    assert again.load() == (b"models@5", {(1, 0): 55})
    # Nothing changed since: no serialisation, nothing written.
    assert not ck.save() and calls == [5]
    ck.snapshot({(1, 0): 60}, None)
    assert ck.save() and calls == [5]  # new offsets, the same models' bytes
    assert SharedCheckpoint(tmp_path / "ck.msgpack").load() == (b"models@5", {(1, 0): 60})


def test_a_loaded_checkpoint_counts_as_held_and_a_new_snapshot_replaces_it(
    tmp_path: Path,
) -> None:
    first = SharedCheckpoint(tmp_path / "ck.msgpack")
    first.snapshot({(2, 3): 7}, lambda: b"old")
    first.save()
    ck = SharedCheckpoint(tmp_path / "ck.msgpack")
    assert ck.load() == (b"old", {(2, 3): 7}) and ck.holds()
    ck.snapshot({(2, 3): 9}, lambda: b"new")
    assert ck.current() == b"new" and ck.save()
    assert SharedCheckpoint(tmp_path / "ck.msgpack").load() == (b"new", {(2, 3): 9})
