"""Custos's processes collect cyclic garbage less often than Python's default, unless the
operator says otherwise; a malformed setting is refused with a clear error."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipeline.cli import GC_THRESHOLD, _gc_threshold

_PROBE = "import pipeline.cli.main, gc; print(*gc.get_threshold())"


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CUSTOS_GC_THRESHOLD"}
    return {**env, **extra}


def test_default_threshold_in_a_custos_process() -> None:
    out = _run(_env())
    assert out.returncode == 0, out.stderr
    assert tuple(map(int, out.stdout.split())) == GC_THRESHOLD
    assert GC_THRESHOLD[0] > 700  # Python's default is what this replaces


def test_operator_setting_wins() -> None:
    out = _run(_env(CUSTOS_GC_THRESHOLD="700,10,10"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["700", "10", "10"]


@pytest.mark.parametrize("raw", ["700,10", "a,b,c", "-1,10,10", "1,2,3,4"])
def test_malformed_setting_refused(raw: str) -> None:
    with pytest.raises(SystemExit, match="CUSTOS_GC_THRESHOLD"):
        _gc_threshold(raw)
    out = _run(_env(CUSTOS_GC_THRESHOLD=raw))
    assert out.returncode != 0
    assert "CUSTOS_GC_THRESHOLD" in out.stderr
