"""The layout every part of a baseline shares: the deviation vector, :class:`BaselineState`'s
fields, the indices into them, and the few helpers that read a state's sketches.

:class:`~pipeline.baselines.baselines.BaselineModel` is composed from one piece per concern -
:mod:`~.learning`, :mod:`~.deviations` (with :mod:`~.explain`), :mod:`~.merge`, :mod:`~.codec` -
and they all index the same flat lists, so the indices live here once. The underscore names
are private to ``pipeline.baselines``: its modules share them, nothing outside should.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from pipeline.baselines.features import (
    CATEGORICAL,
    CATEGORICAL_INDEX,
    MAX_EXTRA_PARTIES,
    NUMERIC,
    SENSITIVITY_NAMES,
)

__all__ = ["DEVIATIONS", "DEVIATION_INDEX", "BaselineState"]

#: The deviation vector's dimensions, in order (the table in :mod:`~.baselines`).
DEVIATIONS: Final[tuple[str, ...]] = (
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
DEVIATION_INDEX: Final[dict[str, int]] = {name: i for i, name in enumerate(DEVIATIONS)}

_N_NUM: Final = len(NUMERIC)
_N_CAT: Final = len(CATEGORICAL)
_N_DEV: Final = len(DEVIATIONS)
_N_RANKS: Final = len(SENSITIVITY_NAMES)
_D_CAT0: Final = DEVIATION_INDEX[CATEGORICAL[0]]
(
    _D_BYTES_OUT,
    _D_BYTES_IN,
    _D_NRES,
    _D_SENS,
    _D_FAIL,
    _D_NOMFA,
    _D_CHAIN,
    _D_BURST,
    _D_HOURS,
    _D_TASK_VOL,
    _D_TASK_RES,
    _D_HOUR_VOL,
    _D_DRIFT,
    _D_STEP,
) = range(_D_CAT0)
_X_BYTES_OUT, _X_BYTES_IN, _X_FAIL, _X_NOMFA, _X_SENS, _X_NRES, _X_CHAIN = range(_N_NUM)
# EW weight groups: (group, numeric index that must be non-zero for the group to learn, or
# -1 for always, member features). Volumes are learned only from events that carry them: a
# logon has no bytes, and averaging its "0" in would make every API call look huge.
_GROUPS: Final = (
    (0, -1, (_X_FAIL, _X_NOMFA, _X_CHAIN)),
    (1, _X_BYTES_OUT, (_X_BYTES_OUT,)),
    (2, _X_BYTES_IN, (_X_BYTES_IN,)),
    (3, _X_NRES, (_X_SENS, _X_NRES)),
)
_N_GROUPS: Final = len(_GROUPS)
# (deviation index, numeric index, weight group, variance floor) of the z-scored features. The
# floors keep a perfectly regular identity from turning noise into huge z: sd 0.25 in log
# bytes ≈ x1.3.
_ZSPEC: Final = (
    (_D_BYTES_OUT, _X_BYTES_OUT, 1, 0.0625),
    (_D_BYTES_IN, _X_BYTES_IN, 2, 0.0625),
    (_D_NRES, _X_NRES, 3, 1.0),
)
# Aggregates (BaselineState.agg): running task / hour sums and EW stats of completed totals.
(
    _A_TASK_BYTES, _A_TASK_CALLS, _A_TASK2_BYTES, _A_TASK2_CALLS, _A_TW, _A_TB_MEAN, _A_TB_VAR,
    _A_TR_MEAN, _A_TR_VAR, _A_HOUR_BYTES, _A_HW, _A_HB_MEAN, _A_HB_VAR, _A_SW, _A_SLOW_MEAN,
    _A_SLOW_VAR, _A_CUSUM, _A_CP_SEEN, _A_CP_NEW, _A_ST_SEEN, _A_ST_NEW, _A_DAY_SUM, _A_DAY_N,
    _A_DAY_MEAN, _A_DW, _A_DVAR,
) = range(26)  # fmt: skip
_N_AGG: Final = 26
# Counterparties: a 256-bit Bloom filter (2 probes) of every one an identity wrote to, so a
# first payee is "never seen" however many regular ones there are (6 slots churn), with an
# EW count of writes and of writes to a new one (how usual a new counterparty is).
_CP_WORDS: Final = 4
_CP_BITS: Final = 64 * _CP_WORDS
# Steps: the same kind of filter of the (previous call in the task -> this call) pairs of
# operations an identity made, and EW counts of steps and of new ones. An agent steered by
# injected content makes its usual calls in an order, or a call at a point of a task, it never
# did: the tools are familiar, the sequence is not.
_ST_WORDS: Final = 4
#: Length of the kernel's hash array: the categorical hashes, then a write's further parties.
_N_HS: Final = len(CATEGORICAL) + MAX_EXTRA_PARTIES
# Drift: the identity's last days against its last weeks. Each UTC day's mean log bytes_out is
# compared with the long-horizon mean, in units of how much its days usually differ (learned
# from successive days, so a ramp does not widen its own yardstick; floored at 5 %: a smaller
# change of typical size is not worth an analyst's time). A one-sided CUSUM of those
# daily z-scores (each adds z - _DRIFT_SLACK, floored at 0) counts from _DRIFT_H: a ramp of a few
# percent a day crosses it within days, while stationary days cross it about once in 1,300.
# Per day, not per event: an identity's events mix operations of very different sizes, so one
# event says little about a 5 % change in the mean and a busy identity would alarm far sooner
# than a quiet one.
_DRIFT_MIN_W: Final = 300.0  # long-horizon events before drift is judged
_DRIFT_DAY_MIN_N: Final = 20.0  # events with bytes_out that make a day count
_DRIFT_MIN_DAYS: Final = 3.0  # days of spread learned before days are judged
_DRIFT_DAY_KEEP: Final = 0.5 ** (1.0 / 14.0)  # the days' spread: half-life 14 days
_DRIFT_VAR_FLOOR: Final = 0.05**2
_DRIFT_SLACK: Final = 0.5
_DRIFT_H: Final = 6.0
_TAINT_TASK: Final = 1  # BaselineState.taint bits: the task / hour / other task held back
_TAINT_HOUR: Final = 2  # an event (its total is not learned)
_TAINT_TASK2: Final = 4
_TAINT_DRIFT: Final = 8  # a day closed above the drift line: one report due (not a taint)
_C_COUNTERPARTY: Final = CATEGORICAL_INDEX["counterparty"]

_HOUR_MS: Final = 3_600_000
_DAY_MS: Final = 86_400_000
_N_BUCKETS: Final = 48  # 24 hours x (weekday, weekend)
# hour_of_week (Monday 00:00 = 0) → profile bucket; weekend = Saturday and Sunday.
_BUCKET: Final[tuple[int, ...]] = tuple(h % 24 + (24 if h >= 120 else 0) for h in range(168))
_NAME_BYTES: Final = 12  # bytes kept per "most used" name (explanations only)
# Counts stay below 2 x half-life (a merge halves until they do), then grow by at most one
# half-life before the next halving: < 3 x 16000 < 2^16, the u16 wire format.
_MAX_HALF_LIFE: Final = 16_000
_U16: Final = 0xFFFF


# BaselineState's storage: three flat typed arrays the compiled kernel (:mod:`~.kernel`)
# reads and writes in place, plus the three slot arrays and the names (Python strings, for
# explanations only). Offsets into the float64 array ``fv``:
_F_W: Final = 0  # EW weight sum per _GROUPS entry
_F_MEAN: Final = _F_W + _N_GROUPS
_F_VAR: Final = _F_MEAN + _N_NUM
_F_RATE_C, _F_RATE_MEAN, _F_RATE_VAR, _F_RATE_W = range(_F_VAR + _N_NUM, _F_VAR + _N_NUM + 4)
_F_AGG: Final = _F_RATE_W + 1
_N_F: Final = _F_AGG + _N_AGG
# ... into the int64 array ``iv`` (bit sets are stored as signed 64-bit patterns):
(
    _I_N, _I_RECENT, _I_SINCE, _I_FIRST, _I_LAST, _I_MFA_KNOWN, _I_MFA_NO, _I_TASK, _I_TASK2,
    _I_HOUR, _I_TAINT, _I_BITS, _I_BITS2,
) = range(13)  # fmt: skip
_I_BLOOM: Final = 13
_I_SBLOOM: Final = _I_BLOOM + _CP_WORDS  # the steps' filter
_I_HOURS: Final = _I_SBLOOM + _ST_WORDS
_I_SENS: Final = _I_HOURS + _N_BUCKETS
_I_PRESENT: Final = _I_SENS + _N_RANKS
_I_NOVEL: Final = _I_PRESENT + _N_CAT
_I_NAME: Final = _I_NOVEL + _N_CAT  # slot index of the most used value per feature, -1 none
# Operation hash of the last call of the running task and of the other one; the step of the
# event just observed and its previous operation (set by observe, read by deviations / learn;
# not stored: a state is written only after its event was learned or held).
_I_OP, _I_OP2, _I_STEP, _I_PREV = range(_I_NAME + _N_CAT, _I_NAME + _N_CAT + 4)
_N_I: Final = _I_PREV + 1
_U64: Final = (1 << 64) - 1


def _signed(v: int) -> int:
    """A 64-bit pattern as the int64 that stores it."""
    v &= _U64
    return v - (1 << 64) if v >> 63 else v


class _Int:
    """An int64 element of a state's ``iv`` (``bits``: an unsigned 64-bit pattern)."""

    __slots__ = ("bits", "i")

    def __init__(self, i: int, bits: bool = False) -> None:
        self.i, self.bits = i, bits

    def __get__(self, obj: BaselineState, owner: type | None = None) -> int:
        v: int = obj.iv.item(self.i)  # item(): a Python int without a numpy scalar between
        return v & _U64 if self.bits else v

    def __set__(self, obj: BaselineState, value: int) -> None:
        obj.iv[self.i] = _signed(int(value)) if self.bits else value


class _Float:
    """A float64 element of a state's ``fv``."""

    __slots__ = ("i",)

    def __init__(self, i: int) -> None:
        self.i = i

    def __get__(self, obj: BaselineState, owner: type | None = None) -> float:
        return obj.fv.item(self.i)

    def __set__(self, obj: BaselineState, value: float) -> None:
        obj.fv[self.i] = value


class _Vector:
    """A view of a field of ``fv`` or ``iv`` (writes go through); assigning copies in."""

    __slots__ = ("arr", "lo", "size")

    def __init__(self, arr: str, lo: int, size: int) -> None:
        self.arr, self.lo, self.size = arr, lo, size

    def __get__(self, obj: BaselineState, owner: type | None = None) -> np.ndarray:
        a: np.ndarray = getattr(obj, self.arr)
        return a[self.lo : self.lo + self.size]

    def __set__(self, obj: BaselineState, value: Sequence[Any] | np.ndarray) -> None:
        if len(value) != self.size:
            raise ValueError(f"expected {self.size} values, got {len(value)}")
        getattr(obj, self.arr)[self.lo : self.lo + self.size] = value


class _Bits:
    """Unsigned 64-bit patterns kept in ``iv``, read as a list of ints."""

    __slots__ = ("lo", "size")

    def __init__(self, lo: int, size: int) -> None:
        self.lo, self.size = lo, size

    def __get__(self, obj: BaselineState, owner: type | None = None) -> list[int]:
        return [int(w) & _U64 for w in obj.iv[self.lo : self.lo + self.size]]

    def __set__(self, obj: BaselineState, value: Sequence[int]) -> None:
        if len(value) != self.size:
            raise ValueError(f"expected {self.size} values, got {len(value)}")
        obj.iv[self.lo : self.lo + self.size] = [_signed(int(w)) for w in value]


_EMPTY_IV: Final = np.zeros(_N_I, np.int64)
_EMPTY_IV[_I_NAME : _I_NAME + _N_CAT] = -1  # no named slot
_EMPTY_IV.flags.writeable = False


#: What the codec keeps of a state's names between writes (``BaselineState.stored_names``):
#: the ``name_text`` it encoded, a bit per feature with a name, and those names as stored (a
#: length byte and the UTF-8 each, a read-only array over bytes). Nothing in it is a container
#: the garbage collector keeps tracking: one per identity would slow every full collection.
StoredNames = tuple[tuple[str | None, ...], int, np.ndarray]


class BaselineState:
    """One identity's (or peer group's) baseline: mutable, constant size, no behaviour.

    Create it with :meth:`BaselineModel.new_state` and change it only through that model.
    Storage is three flat typed arrays the compiled kernel (:mod:`~.kernel`) updates in place
    (``fv`` float64, ``iv`` int64, and the categorical slots), so scoring and learning an
    event cost no Python objects; the named attributes below (``n``, ``mean``, ``hours`` ...)
    read and write the same memory, for the slow paths (explanations, merge, codec). The
    categorical memory is flat: feature ``c`` owns ``slot_*[c * cat_slots : (c + 1) *
    cat_slots]``, used slots first, hash 0 = free; :meth:`BaselineModel.known_values` reads it.

    >>> from pipeline.baselines.baselines import BaselineModel
    >>> s = BaselineModel(cat_slots=6).new_state()
    >>> s.n, len(s.mean), len(s.hours), len(s.slot_hash)
    (0, 7, 48, 72)
    >>> s.n = 3; s.hours[5] += 2; int(s.iv[_I_N]), s.recent, int(s.hours[5])
    (3, 0, 2)
    """

    __slots__ = ("fv", "iv", "name_text", "slot_count", "slot_hash", "slot_hour", "stored_names")

    def __init__(self, cat_slots: int) -> None:
        # Every new identity and decoded state is built here: dtypes go positionally (numpy
        # parses keywords slowly) and iv is copied from its empty form.
        self.fv = np.zeros(_N_F)
        self.iv = _EMPTY_IV.copy()
        size = _N_CAT * cat_slots
        self.slot_hash = np.zeros(size, np.uint32)
        self.slot_count = np.zeros(size, np.int32)  # < 2^16 (see _MAX_HALF_LIFE)
        self.slot_hour = np.zeros(size, np.int32)  # hours since the epoch
        self.name_text: list[str | None] = [None] * _N_CAT
        # The names as the codec last stored them, valid while name_text equals its copy
        # in it: the encoder compares instead of encoding them again (see StoredNames).
        self.stored_names: StoredNames | None = None

    n = _Int(_I_N)  # events learned, ever
    recent = _Int(_I_RECENT)  # events learned, halved with the counts
    since_halve = _Int(_I_SINCE)
    first_ms = _Int(_I_FIRST)
    last_ms = _Int(_I_LAST)
    mfa_known = _Int(_I_MFA_KNOWN)  # authentications with a known MFA outcome
    mfa_no = _Int(_I_MFA_NO)  # ... of which without MFA
    task_key = _Int(_I_TASK)  # Features.task of the running task (0 = none)
    task_key2 = _Int(_I_TASK2)  # the task before it (two tasks may interleave)
    hour_key = _Int(_I_HOUR)  # clock hour (since the epoch) of the running hour
    taint = _Int(_I_TAINT)  # _TAINT_* bits: the running task / hour held back
    task_bits = _Int(_I_BITS, bits=True)  # linear-counting sketch of resources
    task_bits2 = _Int(_I_BITS2, bits=True)
    cp_bloom = _Bits(_I_BLOOM, _CP_WORDS)
    step_bloom = _Bits(_I_SBLOOM, _ST_WORDS)
    last_op = _Int(_I_OP)  # operation hash of the running task's last call (0 = none)
    last_op2 = _Int(_I_OP2)  # ... of the other running task
    hours = _Vector("iv", _I_HOURS, _N_BUCKETS)  # time profile (always sums to ``recent``)
    sens = _Vector("iv", _I_SENS, _N_RANKS)  # events that touched resources, by max rank
    present = _Vector("iv", _I_PRESENT, _N_CAT)  # events where the feature had a value
    novel = _Vector("iv", _I_NOVEL, _N_CAT)  # ... and that value was not remembered
    name_slot = _Vector("iv", _I_NAME, _N_CAT)
    w = _Vector("fv", _F_W, _N_GROUPS)
    mean = _Vector("fv", _F_MEAN, _N_NUM)
    var = _Vector("fv", _F_VAR, _N_NUM)
    agg = _Vector("fv", _F_AGG, _N_AGG)
    rate_c = _Float(_F_RATE_C)  # events in the short window, decayed to last_ms
    # EW mean / variance of log(rate) at each event, each weighted by 1 / rate (the time it
    # stands for): a burst of 60 events counts like one minute, not like 60 minutes.
    rate_mean = _Float(_F_RATE_MEAN)
    rate_var = _Float(_F_RATE_VAR)
    rate_w = _Float(_F_RATE_W)

    @property
    def cat_slots(self) -> int:
        return len(self.slot_hash) // _N_CAT

    def activity(self) -> tuple[int, int, int]:
        """``(n, first_ms, last_ms)`` in one read (the per-event paths need all three)."""
        n, _, _, first, last = self.iv[_I_N : _I_LAST + 1].tolist()
        return n, first, last

    def copy(self) -> BaselineState:
        s = BaselineState(0)
        s.fv, s.iv = self.fv.copy(), self.iv.copy()
        s.slot_hash, s.slot_count = self.slot_hash.copy(), self.slot_count.copy()
        s.slot_hour, s.name_text = self.slot_hour.copy(), self.name_text[:]
        return s

    def __repr__(self) -> str:
        return f"BaselineState(n={self.n}, last_ms={self.last_ms})"


# --- helpers the pieces share -----------------------------------------------------------------


def _shorten(text: str, limit: int) -> str:
    """At most ``limit`` UTF-8 bytes, keeping both ends (ids often differ at the end).

    >>> _shorten("s3://finance/reports/2025/q3.xlsx", 20)
    's3://fin…5/q3.xlsx'
    """
    if len(text) <= limit and len(text.encode()) <= limit:
        return text
    keep = (limit - 3) // 2
    short = text[:keep] + "…" + text[-(limit - 3 - keep) :]
    if len(short.encode()) <= limit:
        return short
    return text.encode()[: limit - 3].decode(errors="ignore") + "…"
