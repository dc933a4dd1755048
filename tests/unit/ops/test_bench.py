"""The bench's offline figures: every key the issue asks for, each a real measurement."""

from __future__ import annotations

from pipeline.config import Settings
from pipeline.detection import side_owner
from pipeline.ops.bench import bench_offline
from pipeline.scores.directory import Directory


def test_offline_figures_have_state_percentiles_and_stage_costs() -> None:
    out, raw = bench_offline(Settings(), identities=60, duration_s=1800, seed=3,
                             directory=Directory([]))  # fmt: skip
    assert out["events"] == len(raw) > 0
    p50, p99, top = (out["bytes_per_identity_p50"], out["bytes_per_identity_p99"],
                     out["max_bytes_per_identity"])  # fmt: skip
    assert 0 < p50 <= p99 <= top
    # States and side parts are sized apart; the run's store holds both (the memory phase
    # copies it), and no state carries its incident any more.
    store = out["store"]
    sides = [k for k in store if side_owner(k) is not None]
    assert out["identities_seen"] == len(store) - len(sides) and out["side_parts"] == len(sides)
    assert top == max(len(v) for k, v in store.items() if side_owner(k) is None)
    stages = out["us_per_event"]
    assert set(stages) == {"decode", "features", "baselines", "detector", "rules",
                           "state_codec", "rest", "whole"}  # fmt: skip
    assert all(v >= 0 for v in stages.values())
    parts = sum(v for k, v in stages.items() if k not in ("rest", "whole"))
    # rest is what the whole core took beyond its stages timed alone (never negative)
    assert parts > 0 and abs(stages["rest"] - max(0.0, stages["whole"] - parts)) < 0.1
