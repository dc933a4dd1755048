"""The compiled kernel's small pieces against their plain-Python definitions."""

from __future__ import annotations

import math
import random

import numpy as np

from pipeline.baselines import kernel
from pipeline.baselines.layout import _N_DEV, BaselineState, _signed


def test_popcount_and_distinct_read_unsigned_patterns_stored_signed() -> None:
    rng = random.Random(5)
    for _ in range(500):
        bits = rng.getrandbits(64) if rng.random() < 0.8 else (1 << 64) - 1
        stored = _signed(bits)
        assert kernel.popcount(stored) == bits.bit_count()
        zeros = 64 - bits.bit_count()
        want = 64.0 * math.log(64.0 / zeros) if zeros else 64.0 * math.log(128.0)
        assert kernel.distinct(stored) == want


def test_strongest_dimensions_are_a_stable_descending_sort_cut_at_the_limit() -> None:
    rng = random.Random(9)
    for _ in range(300):
        dev = np.array([rng.choice((0.0, 0.3, 0.5, 0.5, 0.9, rng.random())) for _ in range(_N_DEV)])
        thr, limit = rng.choice((0.3, 0.5)), rng.randint(0, 8)
        values = dev.tolist()
        want = sorted((i for i in range(_N_DEV) if values[i] >= thr),
                      key=values.__getitem__, reverse=True)[:limit]  # fmt: skip
        assert kernel._strongest(dev, thr, limit).tolist() == want


def test_bits_round_trip_through_the_state_arrays() -> None:
    s = BaselineState(6)
    s.task_bits = (1 << 63) | 5
    s.cp_bloom = [(1 << 64) - 1, 0, 1 << 63, 7]
    assert s.task_bits == (1 << 63) | 5 and int(s.iv[11]) < 0  # stored as int64
    assert s.cp_bloom == [(1 << 64) - 1, 0, 1 << 63, 7]
    assert kernel.bloom_has(s.iv, 0) is True  # probe bits 0 and 0: word 0 is all ones


def test_warm_up_compiles_every_kernel() -> None:
    kernel.warm_up()
    for fn in (kernel.observe, kernel.learn, kernel.deviations, kernel.encode, kernel.decode,
               kernel.current_rate, kernel.score, kernel.learn_pair):  # fmt: skip
        assert fn.signatures, fn  # type: ignore[attr-defined]
