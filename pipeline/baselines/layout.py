"""The layout every part of a baseline shares: the deviation vector, :class:`BaselineState`'s
fields, the indices into them, and the few helpers that read a state's sketches.

:class:`~pipeline.baselines.baselines.BaselineModel` is composed from one piece per concern -
:mod:`~.learning`, :mod:`~.deviations` (with :mod:`~.explain`), :mod:`~.merge`, :mod:`~.codec` -
and they all index the same flat lists, so the indices live here once. The underscore names
are private to ``pipeline.baselines``: its modules share them, nothing outside should.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from typing import Final

from pipeline.baselines.features import CATEGORICAL, CATEGORICAL_INDEX, NUMERIC, SENSITIVITY_NAMES

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
    _A_SLOW_VAR, _A_CUSUM, _A_CP_SEEN, _A_CP_NEW,
) = range(19)  # fmt: skip
_N_AGG: Final = 19
# Counterparties: a 256-bit Bloom filter (2 probes) of every one an identity wrote to, so a
# first payee is "never seen" however many regular ones there are (6 slots churn), with an
# EW count of writes and of writes to a new one (how usual a new counterparty is).
_CP_WORDS: Final = 4
_CP_BITS: Final = 64 * _CP_WORDS
# Drift: a one-sided CUSUM of log bytes_out against the long-horizon mean, in its sds. Each
# event adds z - _DRIFT_SLACK (floored at 0); _DRIFT_H is where drift starts to count. Under
# no drift the sum exceeds _DRIFT_H with probability ~exp(-2 x slack x H) = e^-30 per event;
# a shift of 0.4 sd crosses it after ~400 events.
_DRIFT_MIN_W: Final = 300.0  # long-horizon events before drift is judged
_DRIFT_SLACK: Final = 0.25
_DRIFT_H: Final = 60.0
_TAINT_TASK: Final = 1  # BaselineState.taint bits: the task / hour / other task held back
_TAINT_HOUR: Final = 2  # an event (its total is not learned)
_TAINT_TASK2: Final = 4
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


class BaselineState:
    """One identity's (or peer group's) baseline: mutable, constant size, no behaviour.

    Create it with :meth:`BaselineModel.new_state` and change it only through that model.
    Fields are plain lists, numbers and typed arrays (fast in CPython, few objects). The
    categorical memory is flat: feature ``c`` owns ``slot_*[c * cat_slots : (c + 1) *
    cat_slots]``, used slots first, hash 0 = free; :meth:`BaselineModel.known_values` reads it.

    >>> from pipeline.baselines.baselines import BaselineModel
    >>> s = BaselineModel(cat_slots=6).new_state()
    >>> s.n, len(s.mean), len(s.hours), len(s.slot_hash)
    (0, 7, 48, 72)
    """

    __slots__ = (
        "agg",
        "cp_bloom",
        "first_ms",
        "hour_key",
        "hours",
        "last_ms",
        "mean",
        "mfa_known",
        "mfa_no",
        "n",
        "name_slot",
        "name_text",
        "novel",
        "present",
        "rate_c",
        "rate_mean",
        "rate_var",
        "rate_w",
        "recent",
        "sens",
        "since_halve",
        "slot_count",
        "slot_hash",
        "slot_hour",
        "taint",
        "task_bits",
        "task_bits2",
        "task_key",
        "task_key2",
        "var",
        "w",
    )

    def __init__(self, cat_slots: int) -> None:
        self.n = 0  # events learned, ever
        self.recent = 0  # events learned, halved with the counts (always == sum(hours))
        self.since_halve = 0
        self.first_ms = 0
        self.last_ms = 0
        # EW weight sum per _GROUPS entry: bias-corrected updates (exact early means).
        self.w = [0.0] * _N_GROUPS
        self.mean = [0.0] * _N_NUM
        self.var = [0.0] * _N_NUM
        self.rate_c = 0.0  # events in the short window, decayed to last_ms
        # EW mean / variance of log(rate) at each event, each weighted by 1 / rate (the time
        # it stands for): a burst of 60 events counts like one minute, not like 60 minutes.
        self.rate_mean = 0.0
        self.rate_var = 0.0
        self.rate_w = 0.0
        self.mfa_known = 0  # authentications with a known MFA outcome
        self.mfa_no = 0  # ... of which without MFA
        self.hours = [0] * _N_BUCKETS
        self.sens = [0] * _N_RANKS  # events that touched resources, by max rank
        self.present = [0] * _N_CAT  # events where the categorical feature had a value
        self.novel = [0] * _N_CAT  # ... and that value was not remembered
        size = _N_CAT * cat_slots
        # Typed arrays, not lists: in a list every hash and hour number is an int object.
        self.slot_hash = array("I", bytes(4 * size))
        self.slot_count = array("H", bytes(2 * size))
        self.slot_hour = array("i", bytes(4 * size))  # hours since the epoch
        # The most used value per feature: its slot (-1 = unknown) and shortened text.
        self.name_slot = [-1] * _N_CAT
        self.name_text: list[str | None] = [None] * _N_CAT
        self.task_key = 0  # Features.task of the running task (0 = none)
        self.task_bits = 0  # linear-counting sketch of its distinct resources
        self.task_key2 = 0  # the task before it (two tasks may interleave)
        self.task_bits2 = 0
        self.hour_key = 0  # clock hour (since the epoch) of the running hour
        self.taint = 0  # _TAINT_* bits: the running task / hour held back an event
        self.agg = [0.0] * _N_AGG
        self.cp_bloom = [0] * _CP_WORDS

    def __repr__(self) -> str:
        return f"BaselineState(n={self.n}, last_ms={self.last_ms})"


# --- helpers the pieces share -----------------------------------------------------------------


def _halve(state: BaselineState) -> None:
    """The integer decay step: every count halves once per half-life of events."""
    state.since_halve = 0
    state.hours = [v >> 1 for v in state.hours]
    state.recent = sum(state.hours)
    state.sens = [v >> 1 for v in state.sens]
    state.present = [v >> 1 for v in state.present]
    state.novel = [v >> 1 for v in state.novel]
    state.slot_count = array("H", [v >> 1 for v in state.slot_count])
    state.mfa_known >>= 1
    state.mfa_no >>= 1


def _bloom_probes(h: int) -> tuple[int, int]:
    return h & (_CP_BITS - 1), (h >> 16) & (_CP_BITS - 1)  # two independent bytes of the crc


def _bloom_has(words: list[int], h: int) -> bool:
    """Whether a counterparty hash may have been added (false positives grow with the fill).

    >>> w = [0] * _CP_WORDS
    >>> _bloom_add(w, 12345); _bloom_has(w, 12345), _bloom_has(w, 999)
    (True, False)
    """
    for b in _bloom_probes(h):
        if not words[b >> 6] >> (b & 63) & 1:
            return False
    return True


def _bloom_add(words: list[int], h: int) -> None:
    for b in _bloom_probes(h):
        words[b >> 6] |= 1 << (b & 63)


def _distinct(bits: int) -> float:
    """Distinct values in a 64-bit linear-counting sketch (exact for a few, ±10 % for ~50).

    >>> _distinct(0), round(_distinct(0b111), 2)
    (0.0, 3.07)
    """
    zeros = 64 - bits.bit_count()
    return 64.0 * math.log(64.0 / zeros) if zeros else 64.0 * math.log(128.0)


def _usual_max(sens: Sequence[int], rare_share: float) -> int:
    """Highest rank touched at least ``rare_share`` of the time (the identity's ceiling)."""
    total = sum(sens)
    for rank in range(len(sens) - 1, 0, -1):
        if total and sens[rank] >= rare_share * total:
            return rank
    return 0


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
