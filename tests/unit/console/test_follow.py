"""A replay's output served by the console (``custos console --from DIR``): loaded once."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.console.follow import load_replay
from pipeline.console.store import ConsoleStore
from tests.unit.console.test_web import finding


def test_a_replay_directory_is_served_once(tmp_path: Path) -> None:
    out = tmp_path / "replay"
    out.mkdir()
    lines = [json.dumps(finding(f"r-{i}")) for i in range(3)]
    (out / "alerts.jsonl").write_text("\n".join(lines) + "\n")
    store = ConsoleStore(tmp_path / "c.db")
    assert load_replay(store, out) == 3
    assert load_replay(store, out) == 0  # loaded again: nothing new
    with open(out / "alerts.jsonl", "a") as fh:
        fh.write(json.dumps(finding("r-3")) + "\n")
    assert load_replay(store, out) == 1
