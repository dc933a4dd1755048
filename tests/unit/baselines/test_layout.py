"""Unit tests for the deviation vector (pipeline.baselines.layout)."""

from __future__ import annotations

from pipeline.baselines.features import CATEGORICAL
from pipeline.baselines.layout import DEVIATIONS

# --- deviation vector -------------------------------------------------------------------------


def test_deviation_dimensions() -> None:
    assert DEVIATIONS == (
        "bytes_out",
        "bytes_in",
        "n_resources",
        "sensitivity",
        "failure",
        "no_mfa",
        "chain_depth",
        "burst",
        "off_hours",
        "task_volume",
        "task_resources",
        "hour_volume",
        "drift",
        "step",
        *CATEGORICAL,
    )
