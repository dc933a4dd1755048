"""Custos's processes run OpenBLAS on one thread unless the operator says otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

_PROBE = (
    "import pipeline.cli.main, numpy, threadpoolctl; "
    "print(max(i['num_threads'] for i in threadpoolctl.threadpool_info() "
    "if i['internal_api'] == 'openblas'))"
)


def _threads(env: dict[str, str]) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                         text=True, check=True, timeout=60)  # fmt: skip
    return int(out.stdout.strip())


def test_one_blas_thread_by_default() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    assert _threads(env) == 1


def test_operator_setting_wins() -> None:
    assert _threads({**os.environ, "OPENBLAS_NUM_THREADS": "2"}) == 2
