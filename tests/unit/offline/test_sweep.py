"""The cross-world sweep: every (world, seed, directory) row, held-out marking, outputs."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from pipeline.config import Settings
from pipeline.errors import CustosError
from pipeline.offline.sweep import TUNED_ON, load_world, run_sweep, sweep_table, world_names


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    home = tmp_path_factory.mktemp("home")
    return Settings(home=str(home), models_dir=str(home / "no-models"))


def test_world_names_include_the_simulator_and_the_external_world() -> None:
    names = world_names()
    assert "sim:default" in names and "agentdojo" in names


def test_worlds_are_reproducible_and_agentdojo_has_no_directory(settings: Settings) -> None:
    a = load_world(settings, "agentdojo", identities=12, duration_s=2 * 86_400, seed=3,
                   with_directory=False)  # fmt: skip
    b = load_world(settings, "agentdojo", identities=12, duration_s=2 * 86_400, seed=3,
                   with_directory=False)  # fmt: skip
    assert [e.uid for e in a[0]] == [e.uid for e in b[0]] and a[3] is None
    assert a[1] and all(r.identity_uid.startswith("agt") or r.identity_uid for r in a[1])
    with pytest.raises(CustosError, match="no directory"):
        load_world(settings, "agentdojo", identities=12, duration_s=86_400, seed=3,
                   with_directory=True)  # fmt: skip
    with pytest.raises(CustosError, match="unknown world"):
        load_world(settings, "mars", identities=12, duration_s=86_400, seed=3,
                   with_directory=False)  # fmt: skip


def test_sweep_rows_tables_and_files(settings: Settings, tmp_path: Path) -> None:
    lines: list[str] = []
    rows = run_sweep(settings, ["sim:default", "agentdojo"], [1], identities=40,
                     duration_s=86_400, out_dir=tmp_path, echo=lines.append)  # fmt: skip
    # sim:default with and without the directory; agentdojo only without.
    assert [(r.world, r.directory) for r in rows] == [
        ("sim:default", False), ("sim:default", True), ("agentdojo", False)
    ]
    assert [r.held_out for r in rows] == [w not in TUNED_ON for w in
                                          ("sim:default", "sim:default", "agentdojo")]
    for r in rows:
        assert r.campaigns > 0 and 0 <= r.campaigns_detected <= r.campaigns
        assert sum(n for _, n in r.scenarios.values()) == r.campaigns
        assert r.false_per_1000_identity_days >= 0 and r.identities > 0
    table = sweep_table(rows)
    assert table[0].startswith("world") and len(table) >= 1 + len(rows) + 2
    assert any("TUNED" in line for line in lines) and any("agentdojo" in line for line in lines)
    saved = msgspec.json.decode((tmp_path / "sweep.json").read_bytes())
    assert [s["world"] for s in saved] == [r.world for r in rows]
    assert (tmp_path / "sweep.md").read_text().startswith("| world |")
