"""The compiled per-event kernel of a baseline: observe, deviations and learn in numba.

These are the arithmetic of :mod:`~.learning` and :mod:`~.deviations`, written once, over a
:class:`~.layout.BaselineState`'s flat arrays (``fv`` float64, ``iv`` int64, the slot arrays)
and an event's features as two small arrays (``x``: :data:`~.features.NUMERIC`, ``hs``: the
categorical hashes, int64). They allocate nothing per event but the deviation vector, hold no
GIL (``nogil``) and are compiled once per machine (``cache=True``, under numba's cache
directory). The Python methods of :class:`~.baselines.BaselineModel` call them and keep the
parts that need Python objects: the names of values (explanations) and the explanations.

Semantics are exact and sequential per state: one call learns one event, in the caller's
order, so the worker, ``custos replay`` and ``custos evaluate`` agree.
"""

from __future__ import annotations

import math
from typing import Any, Final

import numba
import numpy as np

from pipeline.baselines.features import CATEGORICAL_INDEX, FEATURE_SCHEMA_VERSION
from pipeline.baselines.layout import (
    _A_CP_NEW,
    _A_CP_SEEN,
    _A_CUSUM,
    _A_DAY_MEAN,
    _A_DAY_N,
    _A_DAY_SUM,
    _A_DVAR,
    _A_DW,
    _A_HB_MEAN,
    _A_HB_VAR,
    _A_HOUR_BYTES,
    _A_HW,
    _A_SLOW_MEAN,
    _A_SLOW_VAR,
    _A_ST_NEW,
    _A_ST_SEEN,
    _A_SW,
    _A_TASK2_BYTES,
    _A_TASK2_CALLS,
    _A_TASK_BYTES,
    _A_TASK_CALLS,
    _A_TB_MEAN,
    _A_TB_VAR,
    _A_TR_MEAN,
    _A_TR_VAR,
    _A_TW,
    _BUCKET,
    _C_COUNTERPARTY,
    _CP_BITS,
    _CP_WORDS,
    _D_BURST,
    _D_CAT0,
    _D_CHAIN,
    _D_DRIFT,
    _D_FAIL,
    _D_HOUR_VOL,
    _D_HOURS,
    _D_NOMFA,
    _D_SENS,
    _D_STEP,
    _D_TASK_RES,
    _D_TASK_VOL,
    _DRIFT_DAY_KEEP,
    _DRIFT_DAY_MIN_N,
    _DRIFT_H,
    _DRIFT_MIN_DAYS,
    _DRIFT_MIN_W,
    _DRIFT_SLACK,
    _DRIFT_VAR_FLOOR,
    _F_AGG,
    _F_MEAN,
    _F_RATE_C,
    _F_RATE_MEAN,
    _F_RATE_VAR,
    _F_RATE_W,
    _F_VAR,
    _F_W,
    _GROUPS,
    _HOUR_MS,
    _I_BITS,
    _I_BITS2,
    _I_BLOOM,
    _I_FIRST,
    _I_HOUR,
    _I_HOURS,
    _I_LAST,
    _I_MFA_KNOWN,
    _I_MFA_NO,
    _I_N,
    _I_NAME,
    _I_NOVEL,
    _I_OP,
    _I_OP2,
    _I_PRESENT,
    _I_PREV,
    _I_RECENT,
    _I_SBLOOM,
    _I_SENS,
    _I_SINCE,
    _I_STEP,
    _I_TAINT,
    _I_TASK,
    _I_TASK2,
    _N_AGG,
    _N_BUCKETS,
    _N_CAT,
    _N_DEV,
    _N_GROUPS,
    _N_HS,
    _N_NUM,
    _N_RANKS,
    _ST_WORDS,
    _TAINT_DRIFT,
    _TAINT_HOUR,
    _TAINT_TASK,
    _TAINT_TASK2,
    _X_BYTES_OUT,
    _X_CHAIN,
    _X_FAIL,
    _X_NOMFA,
    _X_NRES,
    _ZSPEC,
)

__all__ = [
    "PACKED_VERSION",
    "PLAIN",
    "STATE_VERSION",
    "current_rate",
    "decode_stored",
    "deviations",
    "encode",
    "encode_stored",
    "halve",
    "learn",
    "observe",
    "pack_zeros",
    "unpack_zeros",
]

_jit = numba.njit(cache=True, nogil=True)

# Module constants as numba sees them (globals are frozen at compile time).
_BUCKETS: Final = np.array(_BUCKET, dtype=np.int64)
_G_COND: Final = np.array([cond for _, cond, _ in _GROUPS], dtype=np.int64)
_G_MEMBERS: Final = np.array(
    [list(m) + [-1] * (3 - len(m)) for _, _, m in _GROUPS], dtype=np.int64
)
_Z_DEV: Final = np.array([z[0] for z in _ZSPEC], dtype=np.int64)
_Z_X: Final = np.array([z[1] for z in _ZSPEC], dtype=np.int64)
_Z_G: Final = np.array([z[2] for z in _ZSPEC], dtype=np.int64)
_Z_FLOOR: Final = np.array([z[3] for z in _ZSPEC], dtype=np.float64)
_C_RESOURCE: Final = CATEGORICAL_INDEX["resource"]
_C_OPERATION: Final = CATEGORICAL_INDEX["operation"]
_CHURN_MIN: Final = 20  # events of a feature before "most of its values are new" is trusted
_AGG_HALF_LIFE: Final = 100.0  # completed tasks / hours after which old totals weigh half
_AGG_KEEP: Final = 0.5 ** (1.0 / _AGG_HALF_LIFE)
NO_RATE: Final = -1.0  # ``rate`` argument: none given (the state's own)
_N_F32: Final = _N_GROUPS + 4 + 2 * _N_NUM + _N_AGG  # the floats of the wire format

# Deviations (see the table in :mod:`~.baselines`).
_RATE_VAR_FLOOR: Final = 0.25  # log events/min: sd 0.5 ≈ x1.6
_AGG_VAR_FLOOR: Final = 0.25  # log bytes: sd 0.5 ≈ x1.6 between one task's total and another's
_AGG_MIN_W: Final = 3.0  # completed tasks / hours before their totals are a baseline
_SENS_STEP_NATS: Final = 1.5  # surprise per sensitivity rank above the usual maximum
_VAR_PRIOR_EVENTS: Final = 10.0  # extra prior variance that fades over the first events
# Off-hours smoothing: a bucket counts fully, its neighbour hours half, the same hour of the
# other day type a little (a weekday worker on a Saturday noon is unusual, not alarming).
_NEIGHBOUR_W: Final = 0.5
_OTHER_DAY_W: Final = 0.1
_HOUR_NORM: Final = _N_BUCKETS / (1.0 + 2 * _NEIGHBOUR_W + _OTHER_DAY_W)
_HOUR_SHARE_SCALE: Final = 0.25  # smoothed share / uniform share at which off_hours ≈ 0.37
_HOUR_PRIOR: Final = 24.0  # pseudo-events spread uniformly: a young profile has no "never"
_PRESENCE_SCALE: Final = 0.2  # a feature present in 20 % of events counts ~63 % for novelty
_SHARE_NEGLIGIBLE: Final = 21.0  # exp(-21) < 1e-9: shares this many rare_share are "usual"


# --- small pieces -------------------------------------------------------------------------------


@_jit
def popcount(v: int) -> int:
    """Set bits of a 64-bit pattern (int64, two's complement).

    >>> popcount(0b1011), popcount(-1)
    (3, 64)
    """
    n = 0
    while v:
        v &= v - 1
        n += 1
    return n


@_jit
def distinct(bits: int) -> float:
    """Distinct values in a 64-bit linear-counting sketch (exact for a few, ±10 % for ~50)."""
    zeros = 64 - popcount(bits)
    return 64.0 * math.log(64.0 / zeros) if zeros else 64.0 * math.log(128.0)


@_jit
def bloom_has(iv: np.ndarray, h: int, lo: int = _I_BLOOM) -> bool:
    """Whether a hash may have been added to the filter at ``iv[lo:]`` (the counterparties'
    by default; false positives grow with the fill)."""
    b = h & (_CP_BITS - 1)  # two probes: two independent bytes of the crc
    if not (iv[lo + (b >> 6)] >> (b & 63)) & 1:
        return False
    b = (h >> 16) & (_CP_BITS - 1)
    return bool((iv[lo + (b >> 6)] >> (b & 63)) & 1)


@_jit
def _bloom_add(iv: np.ndarray, h: int, lo: int) -> None:
    b = h & (_CP_BITS - 1)
    iv[lo + (b >> 6)] |= np.int64(1) << (b & 63)
    b = (h >> 16) & (_CP_BITS - 1)
    iv[lo + (b >> 6)] |= np.int64(1) << (b & 63)


@_jit
def step_hash(prev: int, op: int) -> int:
    """The hash of the step ``prev -> op`` (operation hashes; ``prev`` 0 = first call of a task).

    >>> step_hash(0, 5) != step_hash(5, 0) != step_hash(5, 5) != 0
    True
    """
    h = ((prev * 0x01000193) ^ op ^ (op >> 15) * 0x2C1B3C6D) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0x5BD1E995) & 0xFFFFFFFF
    h ^= h >> 15
    return h if h else 1


@_jit
def _new_parties(iv: np.ndarray, hs: np.ndarray) -> int:
    """How many of a write's parties (the counterparty, then the further ones) are not in the
    counterparty filter."""
    new = 0
    cp = hs[_C_COUNTERPARTY]
    if cp and not bloom_has(iv, cp):
        new += 1
    for i in range(_N_CAT, _N_HS):
        if hs[i] and not bloom_has(iv, hs[i]):
            new += 1
    return new


@_jit
def _count_novelty(fv: np.ndarray, seen_i: int, new_i: int, new: bool) -> bool:
    """Count one occurrence (and whether it was new) into EW counts; returns ``new``. The very
    first is not counted as new: everything is new once."""
    fv[seen_i] = fv[seen_i] * _AGG_KEEP + 1.0
    fv[new_i] = fv[new_i] * _AGG_KEEP + (1.0 if new and fv[seen_i] > 1.0 else 0.0)
    return new


@_jit
def _novelty(fv: np.ndarray, seen_i: int, new_i: int, new: bool, rare: float,
             evidence: float) -> float:  # fmt: skip
    """Deviation of a never-seen value among values counted by :func:`_count_novelty`: high
    where new ones are rare, and only once there is evidence."""
    seen = fv[seen_i]
    if not new or seen == 0.0:
        return 0.0
    return math.exp(-(fv[new_i] / seen) / rare) * (1.0 - math.exp(-seen / evidence))


@_jit
def usual_max(iv: np.ndarray, rare_share: float) -> int:
    """Highest sensitivity rank touched at least ``rare_share`` of the time."""
    total = 0
    for r in range(_N_RANKS):
        total += iv[_I_SENS + r]
    for rank in range(_N_RANKS - 1, 0, -1):
        if total and iv[_I_SENS + rank] >= rare_share * total:
            return rank
    return 0


@_jit
def halve(iv: np.ndarray, sc: np.ndarray) -> None:
    """The integer decay step: every count halves once per half-life of events."""
    iv[_I_SINCE] = 0
    iv[_I_MFA_KNOWN] >>= 1
    iv[_I_MFA_NO] >>= 1
    recent = 0
    for i in range(_I_HOURS, _I_NAME):  # hours, sensitivity ranks, present, novel
        iv[i] >>= 1
    for i in range(_I_HOURS, _I_HOURS + _N_BUCKETS):
        recent += iv[i]
    iv[_I_RECENT] = recent
    for j in range(sc.shape[0]):
        sc[j] >>= 1


@_jit
def _ew(fv: np.ndarray, im: int, iv_: int, w: float, x: float) -> None:
    """One bias-corrected EW update of (mean fv[im], variance fv[iv_]) with weight sum w."""
    b = 1.0 / w
    d = x - fv[im]
    inc = b * d
    fv[im] = fv[im] + inc
    fv[iv_] = (1.0 - b) * (fv[iv_] + d * inc)


@_jit
def current_rate(fv: np.ndarray, iv: np.ndarray, t: int, tau: float) -> float:
    """Events in the short window ending at ``t``, the event itself included (≥ 1)."""
    if iv[_I_N] == 0:
        return 1.0
    dt = t - iv[_I_LAST]
    if dt <= 0:  # same millisecond or out of order: nothing to decay
        return float(fv[_F_RATE_C] + 1.0)
    return float(fv[_F_RATE_C] * math.exp(-dt / tau) + 1.0)


# --- observe: every event's task and hour totals --------------------------------------------------


@_jit
def observe(fv: np.ndarray, iv: np.ndarray, x: np.ndarray, hs: np.ndarray, t: int, task: int,
            volume: float) -> None:  # fmt: skip
    """:meth:`~.learning.Learner.observe` (identity scope only; the caller checks)."""
    a = _F_AGG
    if task and task != iv[_I_TASK]:
        if task == iv[_I_TASK2]:  # back to the other running task
            iv[_I_TASK], iv[_I_TASK2] = iv[_I_TASK2], iv[_I_TASK]
            iv[_I_BITS], iv[_I_BITS2] = iv[_I_BITS2], iv[_I_BITS]
            fv[a + _A_TASK_BYTES], fv[a + _A_TASK2_BYTES] = (
                fv[a + _A_TASK2_BYTES], fv[a + _A_TASK_BYTES])  # fmt: skip
            fv[a + _A_TASK_CALLS], fv[a + _A_TASK2_CALLS] = (
                fv[a + _A_TASK2_CALLS], fv[a + _A_TASK_CALLS])  # fmt: skip
            iv[_I_OP], iv[_I_OP2] = iv[_I_OP2], iv[_I_OP]
            tn = iv[_I_TAINT]
            iv[_I_TAINT] = ((tn & (_TAINT_HOUR | _TAINT_DRIFT)) | ((tn & _TAINT_TASK) << 2)
                            | ((tn & _TAINT_TASK2) >> 2))  # fmt: skip
        else:  # a new task: the older of the two running ones has ended
            if (iv[_I_TASK2] and fv[a + _A_TASK2_CALLS] != 0.0
                    and not iv[_I_TAINT] & _TAINT_TASK2):  # fmt: skip
                w = fv[a + _A_TW] * _AGG_KEEP + 1.0
                fv[a + _A_TW] = w
                _ew(fv, a + _A_TB_MEAN, a + _A_TB_VAR, w, math.log1p(fv[a + _A_TASK2_BYTES]))
                _ew(fv, a + _A_TR_MEAN, a + _A_TR_VAR, w, math.log1p(distinct(iv[_I_BITS2])))
            iv[_I_TASK2], iv[_I_BITS2] = iv[_I_TASK], iv[_I_BITS]
            fv[a + _A_TASK2_BYTES] = fv[a + _A_TASK_BYTES]
            fv[a + _A_TASK2_CALLS] = fv[a + _A_TASK_CALLS]
            iv[_I_TAINT] = ((iv[_I_TAINT] & (_TAINT_HOUR | _TAINT_DRIFT))
                            | ((iv[_I_TAINT] & _TAINT_TASK) << 2))  # fmt: skip
            iv[_I_TASK], iv[_I_BITS] = task, 0
            iv[_I_OP2], iv[_I_OP] = iv[_I_OP], 0
            fv[a + _A_TASK_BYTES] = 0.0
            fv[a + _A_TASK_CALLS] = 0.0
    op = hs[_C_OPERATION]
    if task and op:  # the step from the task's previous call (0: its first) to this one
        iv[_I_PREV] = iv[_I_OP]
        iv[_I_STEP] = step_hash(iv[_I_OP], op)
        iv[_I_OP] = op
    else:
        iv[_I_PREV] = 0
        iv[_I_STEP] = 0
    if task:
        fv[a + _A_TASK_BYTES] += volume
        fv[a + _A_TASK_CALLS] += 1.0
        res = hs[_C_RESOURCE]
        if res:
            iv[_I_BITS] |= np.int64(1) << (res & 63)
    hour = t // _HOUR_MS
    if hour > iv[_I_HOUR]:  # a late event of an earlier hour counts into this one
        if iv[_I_HOUR] and hour // 24 > iv[_I_HOUR] // 24:
            _close_day(fv, iv)
        if iv[_I_HOUR] and fv[a + _A_HOUR_BYTES] > 0.0 and not iv[_I_TAINT] & _TAINT_HOUR:
            w = fv[a + _A_HW] * _AGG_KEEP + 1.0
            fv[a + _A_HW] = w
            _ew(fv, a + _A_HB_MEAN, a + _A_HB_VAR, w, math.log1p(fv[a + _A_HOUR_BYTES]))
        iv[_I_HOUR] = hour
        fv[a + _A_HOUR_BYTES] = 0.0
        iv[_I_TAINT] &= ~_TAINT_HOUR
    fv[a + _A_HOUR_BYTES] += volume
    out = x[_X_BYTES_OUT]
    if out:  # every event: a drift must not hide by being held
        fv[a + _A_DAY_SUM] += out
        fv[a + _A_DAY_N] += 1.0


@_jit
def _close_day(fv: np.ndarray, iv: np.ndarray) -> None:
    """A UTC day has ended: judge its mean log bytes_out against the long horizon (drift). A day
    that leaves the sum above the line makes one drift report due (:data:`_TAINT_DRIFT`)."""
    a = _F_AGG
    n = fv[a + _A_DAY_N]
    if n >= _DRIFT_DAY_MIN_N and fv[a + _A_SW] >= _DRIFT_MIN_W:
        m = fv[a + _A_DAY_SUM] / n
        if fv[a + _A_DW] >= _DRIFT_MIN_DAYS:
            z = (m - fv[a + _A_SLOW_MEAN]) / math.sqrt(fv[a + _A_DVAR] + _DRIFT_VAR_FLOOR)
            fv[a + _A_CUSUM] = max(0.0, fv[a + _A_CUSUM] + z - _DRIFT_SLACK)
            if fv[a + _A_CUSUM] > _DRIFT_H:
                iv[_I_TAINT] |= _TAINT_DRIFT
        if fv[a + _A_DAY_MEAN] != 0.0:
            # The days' spread from successive differences (von Neumann): a ramp of g a day
            # adds only g^2 to them, where residuals against the long mean would grow with it.
            w = fv[a + _A_DW] * _DRIFT_DAY_KEEP + 1.0
            fv[a + _A_DW] = w
            d = m - fv[a + _A_DAY_MEAN]
            fv[a + _A_DVAR] += (0.5 * d * d - fv[a + _A_DVAR]) / w
        fv[a + _A_DAY_MEAN] = m
    fv[a + _A_DAY_SUM] = 0.0
    fv[a + _A_DAY_N] = 0.0


# --- learn: fold one accepted event into the state --------------------------------------------


@_jit
def _insert(iv: np.ndarray, sh: np.ndarray, sc: np.ndarray, st: np.ndarray, c: int, h: int,
            hour: int, churn: bool, k: int) -> int:  # fmt: skip
    """Remember a value not in feature ``c``'s slots; returns its slot."""
    base = c * k
    end = base + k
    if sh[base]:  # the first value an identity shows is its baseline, not a novelty
        iv[_I_NOVEL + c] += 1
    if sh[end - 1]:  # full: evict the least used, then least recently used, value
        j = base
        low = sc[base]
        ties = 1
        for i in range(base + 1, end):
            if sc[i] < low:
                low, j, ties = sc[i], i, 1
            elif sc[i] == low:
                ties += 1
        if not churn and ties > 1:
            for i in range(j + 1, end):
                if sc[i] == low and st[i] < st[j]:
                    j = i
        if iv[_I_NAME + c] == j:
            iv[_I_NAME + c] = -1
    else:
        j = base
        while sh[j]:  # the first free slot
            j += 1
    sh[j] = h
    sc[j] = 1
    st[j] = hour
    return j


@_jit
def learn(fv: np.ndarray, iv: np.ndarray, sh: np.ndarray, sc: np.ndarray, st: np.ndarray,
          x: np.ndarray, hs: np.ndarray, t: int, how: int, rank: int, mfa: int, rate: float,
          k: int, half_life: int, identity: bool, ak: float, aslow: float,
          tau: float) -> int:  # fmt: skip
    """:meth:`~.learning.Learner.learn_one`. Returns a bit per categorical feature whose most
    used value changed (the caller records its name); ``rate`` < 0: the state's own."""
    last = iv[_I_LAST]
    if iv[_I_N] == 0:
        iv[_I_FIRST] = t
        last = t
    counter = fv[_F_RATE_C]
    if t > last:  # out-of-order events count, but never move time backwards
        counter *= math.exp((last - t) / tau)
        last = t
    iv[_I_LAST] = last
    counter += 1.0
    fv[_F_RATE_C] = counter
    if rate < 0.0:
        rate = counter
    elif rate < 1.0:  # a rate includes the event itself
        rate = 1.0
    iv[_I_N] += 1
    iv[_I_RECENT] += 1

    # Bias-corrected EW mean / variance (West's weighted Welford update): the exact mean and
    # variance of the first events, then weight 1 - 2^(-1/half_life) per event.
    for g in range(_N_GROUPS):
        cond = _G_COND[g]
        if cond >= 0 and x[cond] == 0.0:
            continue
        w = fv[_F_W + g] * ak + 1.0
        fv[_F_W + g] = w
        b = 1.0 / w
        keep = 1.0 - b
        for m in range(3):
            i = _G_MEMBERS[g, m]
            if i < 0:
                break
            d = x[i] - fv[_F_MEAN + i]
            inc = b * d
            fv[_F_MEAN + i] += inc
            fv[_F_VAR + i] = keep * (fv[_F_VAR + i] + d * inc)
    a = _F_AGG
    if x[_X_BYTES_OUT] != 0.0:  # the long horizon of the same statistic (drift)
        sw = fv[a + _A_SW] * aslow + 1.0
        fv[a + _A_SW] = sw
        d = x[_X_BYTES_OUT] - fv[a + _A_SLOW_MEAN]
        inc = d / sw
        fv[a + _A_SLOW_MEAN] += inc
        fv[a + _A_SLOW_VAR] = (1.0 - 1.0 / sw) * (fv[a + _A_SLOW_VAR] + d * inc)
    u = 1.0 / rate
    rw = fv[_F_RATE_W] * ak + u
    fv[_F_RATE_W] = rw
    br = u / rw
    d = math.log(rate) - fv[_F_RATE_MEAN]
    inc = br * d
    fv[_F_RATE_MEAN] += inc
    fv[_F_RATE_VAR] = (1.0 - br) * (fv[_F_RATE_VAR] + d * inc)

    iv[_I_HOURS + _BUCKETS[how]] += 1
    if x[_X_NRES] != 0.0:
        iv[_I_SENS + rank] += 1
    if mfa >= 0:
        iv[_I_MFA_KNOWN] += 1
        if mfa == 0:
            iv[_I_MFA_NO] += 1

    hour = t // _HOUR_MS
    named_mask = 0
    for c in range(_N_CAT):
        h = hs[c]
        if not h:
            continue
        base = c * k
        seen = iv[_I_PRESENT + c] + 1
        iv[_I_PRESENT + c] = seen
        j = -1
        for q in range(base, base + k):
            if sh[q] == h:
                j = q
                break
        if j < 0:  # a value not remembered (rare once the identity is known)
            # Where most values are new (a peer group's resources), skip the exact
            # least-recently-used tie-break (as the Python original did, for the same result).
            churn = seen > _CHURN_MIN and iv[_I_NOVEL + c] * 2 > seen
            j = _insert(iv, sh, sc, st, c, h, hour, churn, k)
        else:
            sc[j] += 1
            if hour > st[j]:
                st[j] = hour
        named = iv[_I_NAME + c]
        if named != j and (named < 0 or sc[j] > sc[named]):
            iv[_I_NAME + c] = j
            named_mask |= 1 << c

    cp = hs[_C_COUNTERPARTY]
    if cp and identity and _count_novelty(fv, a + _A_CP_SEEN, a + _A_CP_NEW,
                                          _new_parties(iv, hs) > 0):  # fmt: skip
        _bloom_add(iv, cp, _I_BLOOM)
        for i in range(_N_CAT, _N_HS):
            if hs[i]:
                _bloom_add(iv, hs[i], _I_BLOOM)
    step = iv[_I_STEP]
    if step and identity and _count_novelty(fv, a + _A_ST_SEEN, a + _A_ST_NEW,
                                            not bloom_has(iv, step, _I_SBLOOM)):  # fmt: skip
        _bloom_add(iv, step, _I_SBLOOM)
    iv[_I_SINCE] += 1
    if iv[_I_SINCE] >= half_life:
        halve(iv, sc)
    return named_mask


# --- deviations: how unusual one event is (the state does not change) ---------------------------


@_jit
def deviations(fv: np.ndarray, iv: np.ndarray, sh: np.ndarray, sc: np.ndarray, x: np.ndarray,
               hs: np.ndarray, t: int, how: int, rank: int, mfa: int, task: int,
               volume: float, rate: float, k: int, identity: bool, evidence: float,
               rare: float, z0: float, zs: float, tau: float, thr: float,
               limit: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """:meth:`~.deviations.Scorer.deviations` without explanations: the vector, in [0, 1],
    and the indices of its at most ``limit`` strongest dimensions at or above ``thr``
    (strongest first; ties in dimension order)."""
    dev = np.zeros(_N_DEV)
    if iv[_I_N] == 0:
        return dev, np.empty(0, dtype=np.int64)
    _fill_deviations(dev, fv, iv, sh, sc, x, hs, t, how, rank, mfa, task, volume, rate, k,
                     identity, evidence, rare, z0, zs, tau)  # fmt: skip
    return dev, _strongest(dev, thr, limit)


@_jit
def _fill_deviations(dev: np.ndarray, fv: np.ndarray, iv: np.ndarray, sh: np.ndarray,
                     sc: np.ndarray, x: np.ndarray, hs: np.ndarray, t: int, how: int, rank: int,
                     mfa: int, task: int, volume: float, rate: float, k: int, identity: bool,
                     evidence: float, rare: float, z0: float, zs: float,
                     tau: float) -> None:  # fmt: skip
    """The body of :func:`deviations`: fills ``dev`` (zeros on entry) for a state that learned
    at least one event."""
    n = iv[_I_N]
    exp = math.exp
    prior = 1.0 + _VAR_PRIOR_EVENTS / (n + 1)
    conf_n = 1.0 - exp(-n / evidence)

    for q in range(_Z_DEV.shape[0]):
        xi = _Z_X[q]
        g = _Z_G[q]
        d = x[xi] - fv[_F_MEAN + xi]
        if d > 0.0 and fv[_F_W + g] != 0.0:  # high side only, and once there is a baseline
            z = d / math.sqrt(fv[_F_VAR + xi]
                              + _Z_FLOOR[q] * (1.0 + _VAR_PRIOR_EVENTS / (fv[_F_W + g] + 1)))
            if z > z0:
                dev[_Z_DEV[q]] = 1.0 - exp((z0 - z) / zs)

    # Outcomes: how often the identity showed this outcome before (share → rarity).
    if x[_X_FAIL] != 0.0:
        dev[_D_FAIL] = conf_n * exp(-fv[_F_MEAN + _X_FAIL] / rare)
    if mfa == 0 and iv[_I_MFA_KNOWN]:
        share = iv[_I_MFA_NO] / iv[_I_MFA_KNOWN]
        dev[_D_NOMFA] = (1.0 - exp(-iv[_I_MFA_KNOWN] / evidence)) * exp(-share / rare)
    chain = fv[_F_MEAN + _X_CHAIN]
    dev[_D_CHAIN] = conf_n * exp(-(chain if x[_X_CHAIN] != 0.0 else 1.0 - chain) / rare)
    if rank:
        total = 0
        above_rank = 0
        for r in range(_N_RANKS):
            total += iv[_I_SENS + r]
            if r >= rank:
                above_rank += iv[_I_SENS + r]
        if total:
            # How rare (share of resource events at this rank or above) and how far above
            # the usual maximum: surprise in nats, read back unbounded.
            share = above_rank / total
            if share < rare * _SHARE_NEGLIGIBLE:
                above = max(0, rank - usual_max(iv, rare))
                nats = -math.log1p(-0.999 * exp(-share / rare)) + _SENS_STEP_NATS * above
                dev[_D_SENS] = (1.0 - exp(-total / evidence)) * (1.0 - exp(-nats))

    if rate < 0.0:
        rate = current_rate(fv, iv, t, tau)
    elif rate < 1.0:  # a rate includes the event itself
        rate = 1.0
    d = math.log(rate) - fv[_F_RATE_MEAN]
    if d > 0.0:
        z = d / math.sqrt(fv[_F_RATE_VAR] + _RATE_VAR_FLOOR * prior)
        if z > z0:
            dev[_D_BURST] = 1.0 - exp((z0 - z) / zs)

    a = _F_AGG
    if fv[a + _A_TW] >= _AGG_MIN_W and task and task == iv[_I_TASK]:
        sd = math.sqrt(fv[a + _A_TB_VAR] + _AGG_VAR_FLOOR)
        z = (math.log1p(fv[a + _A_TASK_BYTES]) - fv[a + _A_TB_MEAN]) / sd
        if z > z0:
            dev[_D_TASK_VOL] = 1.0 - exp((z0 - z) / zs)
        z = (math.log1p(distinct(iv[_I_BITS])) - fv[a + _A_TR_MEAN]) / math.sqrt(
            fv[a + _A_TR_VAR] + _AGG_VAR_FLOOR)  # fmt: skip
        if z > z0:
            dev[_D_TASK_RES] = 1.0 - exp((z0 - z) / zs)
    if fv[a + _A_HW] >= _AGG_MIN_W and volume != 0.0:
        z = (math.log1p(fv[a + _A_HOUR_BYTES]) - fv[a + _A_HB_MEAN]) / math.sqrt(
            fv[a + _A_HB_VAR] + _AGG_VAR_FLOOR)  # fmt: skip
        if z > z0:
            dev[_D_HOUR_VOL] = 1.0 - exp((z0 - z) / zs)
    if fv[a + _A_CUSUM] > _DRIFT_H and x[_X_BYTES_OUT] != 0.0:
        # One daily z-score above the line is e^-1 of "surely not noise".
        dev[_D_DRIFT] = 1.0 - exp(_DRIFT_H - fv[a + _A_CUSUM])

    recent = iv[_I_RECENT]
    if recent:
        hb = _I_HOURS
        b = _BUCKETS[how]
        day = b - b % 24
        smooth = (
            iv[hb + b]
            + _NEIGHBOUR_W * (iv[hb + day + (b + 1) % 24] + iv[hb + day + (b - 1) % 24])
            + _OTHER_DAY_W * iv[hb + (b + 24) % 48]
        )
        # This bucket's share relative to a uniform week, with a uniform prior.
        q = (smooth * _HOUR_NORM + _HOUR_PRIOR) / (recent + _HOUR_PRIOR)
        dev[_D_HOURS] = exp(-q / _HOUR_SHARE_SCALE)

        for c in range(_N_CAT):
            h = hs[c]
            if not h:
                continue
            base = c * k
            named = iv[_I_NAME + c]
            if named >= 0 and sh[named] == h:  # the usual value: nothing unusual
                continue
            seen = iv[_I_PRESENT + c]
            if not seen:
                continue
            # The chance of this value: its own share if remembered, plus the share of events
            # that brought a new value (novelty is unremarkable where it is common).
            share = iv[_I_NOVEL + c] / seen
            if share > _SHARE_NEGLIGIBLE * rare:  # exp(-share / rare) < 1e-9
                continue
            for j in range(base, base + k):
                if sh[j] == h:
                    share += sc[j] / seen
                    break
            presence = 1.0
            if c != _C_COUNTERPARTY:
                # Usually absent? Not for counterparties: only writes have one, and their
                # novelty is judged among the identity's writes.
                presence = 1.0 - exp(-min(1.0, seen / recent) / _PRESENCE_SCALE)
            dev[_D_CAT0 + c] = exp(-share / rare) * (1.0 - exp(-seen / evidence)) * presence

    cp = hs[_C_COUNTERPARTY]
    if cp and identity:  # a write to someone new, discounted by how often its writes are
        dev[_D_CAT0 + _C_COUNTERPARTY] = _novelty(
            fv, a + _A_CP_SEEN, a + _A_CP_NEW, _new_parties(iv, hs) > 0, rare, evidence)
    step = iv[_I_STEP]
    if step and identity:  # a step never taken, discounted by how often its steps are new
        dev[_D_STEP] = _novelty(fv, a + _A_ST_SEEN, a + _A_ST_NEW,
                                not bloom_has(iv, step, _I_SBLOOM), rare, evidence)  # fmt: skip


@_jit
def _strongest(dev: np.ndarray, thr: float, limit: int) -> np.ndarray:
    top = np.empty(_N_DEV, dtype=np.int64)
    m = 0
    for i in range(_N_DEV):
        if dev[i] >= thr:
            j = m  # insertion sort, stable: a later equal value goes after
            while j > 0 and dev[top[j - 1]] < dev[i]:
                top[j] = top[j - 1]
                j -= 1
            top[j] = i
            m += 1
    return top[: min(m, limit)]


@_jit
def _strongest_into(dev: np.ndarray, thr: float, limit: int, top: np.ndarray) -> int:
    """:func:`_strongest` into ``top`` (at least :data:`_N_DEV` long); returns how many."""
    m = 0
    for i in range(_N_DEV):
        if dev[i] >= thr:
            j = m
            while j > 0 and dev[top[j - 1]] < dev[i]:
                top[j] = top[j - 1]
                j -= 1
            top[j] = i
            m += 1
    return min(m, limit)


# --- one event of a detection round, in one call ------------------------------------------------
# A round's events as two matrices, one row per event: ``X`` (float64) the numeric features,
# then the volume; ``E`` (int64) the hashes (:func:`~.learning.feature_arrays`' ``hs``), then
# the scalars below. A model's hyperparameters as one float64 vector (:data:`P_K` ...).
E_T, E_HOW, E_RANK, E_MFA, E_TASK = range(_N_HS, _N_HS + 5)
E_WIDTH: Final = _N_HS + 5
X_VOLUME: Final = _N_NUM
X_WIDTH: Final = _N_NUM + 1
(P_K, P_IDENTITY, P_EVIDENCE, P_RARE, P_Z0, P_ZS, P_TAU, P_THR, P_LIMIT, P_HALF_LIFE, P_AK,
 P_ASLOW) = range(12)  # fmt: skip
P_WIDTH: Final = 12


@_jit
def _columns(X: np.ndarray, E: np.ndarray, i: int) -> tuple[Any, Any, Any, Any, Any, Any]:
    """Event ``i`` of a round's matrices as the kernels read it: numeric features, hashes,
    time, hour of week, sensitivity rank, MFA."""
    e = E[i]
    return X[i, :_N_NUM], e[:_N_HS], e[E_T], e[E_HOW], e[E_RANK], e[E_MFA]


@_jit
def score(ofv: np.ndarray, oiv: np.ndarray, osh: np.ndarray, osc: np.ndarray, pfv: np.ndarray,
          piv: np.ndarray, psh: np.ndarray, psc: np.ndarray, X: np.ndarray, E: np.ndarray,
          i: int, w_own: float, cold: bool, op: np.ndarray, pp: np.ndarray, rows: np.ndarray,
          own_rows: np.ndarray, peer_rows: np.ndarray, tops: np.ndarray, own_max: np.ndarray,
          activity: np.ndarray) -> int:  # fmt: skip
    """Event ``i`` of a round against its own state (``o*``) and, when ``cold``, its peer
    group's (``p*``; else ignored): observe (identity scope), both deviation vectors into
    ``own_rows[i]`` / ``peer_rows[i]``, the detector's row ``rows[i]`` (own, or the blend
    ``w_own * own + (1 - w_own) * peer``), ``own_max[i]`` (the own vector's max, NaN-propagating
    like numpy's), and the strongest dimensions of each vector into ``tops[i, 0]`` /
    ``tops[i, 1]``, and the own state's ``(n, first_ms, last_ms)`` into ``activity[i]``.
    Returns how many of each: ``own | peer << 8``.

    The same arithmetic, in the same order, as ``observe``, ``deviations``, ``current_rate``
    and :func:`~.baselines.blend` called one by one."""
    x, hs, t, how, rank, mfa = _columns(X, E, i)
    task = E[i, E_TASK]
    volume = X[i, X_VOLUME]
    o_identity = op[P_IDENTITY] != 0.0
    if o_identity:
        observe(ofv, oiv, x, hs, t, task, volume)
    own = own_rows[i]
    own[:] = 0.0
    n_own = 0
    if oiv[_I_N] != 0:
        _fill_deviations(own, ofv, oiv, osh, osc, x, hs, t, how, rank, mfa, task, volume,
                         NO_RATE, int(op[P_K]), o_identity, op[P_EVIDENCE], op[P_RARE],
                         op[P_Z0], op[P_ZS], op[P_TAU])  # fmt: skip
        n_own = _strongest_into(own, op[P_THR], int(op[P_LIMIT]), tops[i, 0])
    top = own[0]
    for j in range(1, _N_DEV):
        v = own[j]
        if math.isnan(top):
            break
        if v > top or math.isnan(v):
            top = v
    own_max[i] = top
    row = rows[i]
    n_peer = 0
    if cold:
        rate = current_rate(ofv, oiv, t, op[P_TAU])
        peer = peer_rows[i]
        peer[:] = 0.0
        if piv[_I_N] != 0:
            _fill_deviations(peer, pfv, piv, psh, psc, x, hs, t, how, rank, mfa, task, volume,
                             rate, int(pp[P_K]), pp[P_IDENTITY] != 0.0, pp[P_EVIDENCE],
                             pp[P_RARE], pp[P_Z0], pp[P_ZS], pp[P_TAU])  # fmt: skip
            n_peer = _strongest_into(peer, pp[P_THR], int(pp[P_LIMIT]), tops[i, 1])
        keep = 1.0 - w_own
        for j in range(_N_DEV):
            row[j] = w_own * own[j] + keep * peer[j]
    else:
        row[:] = own
    activity[i, 0] = oiv[_I_N]
    activity[i, 1] = oiv[_I_FIRST]
    activity[i, 2] = oiv[_I_LAST]
    return n_own | n_peer << 8


@_jit
def learn_pair(ofv: np.ndarray, oiv: np.ndarray, osh: np.ndarray, osc: np.ndarray,
               ost: np.ndarray, pfv: np.ndarray, piv: np.ndarray, psh: np.ndarray,
               psc: np.ndarray, pst: np.ndarray, X: np.ndarray, E: np.ndarray, i: int,
               peer: bool, op: np.ndarray, pp: np.ndarray) -> int:  # fmt: skip
    """Learn event ``i`` of a round into its own state and, when ``peer``, into its peer
    group's at the identity's current rate (``current_rate`` of the own state before
    learning), as ``learn`` called twice. Returns the own state's named bits, then the
    peer's ``<< 16``."""
    x, hs, t, how, rank, mfa = _columns(X, E, i)
    rate = current_rate(ofv, oiv, t, op[P_TAU])
    named = learn(ofv, oiv, osh, osc, ost, x, hs, t, how, rank, mfa, NO_RATE, int(op[P_K]),
                  int(op[P_HALF_LIFE]), op[P_IDENTITY] != 0.0, op[P_AK], op[P_ASLOW],
                  op[P_TAU])  # fmt: skip
    if peer:
        named |= learn(pfv, piv, psh, psc, pst, x, hs, t, how, rank, mfa, rate, int(pp[P_K]),
                       int(pp[P_HALF_LIFE]), pp[P_IDENTITY] != 0.0, pp[P_AK], pp[P_ASLOW],
                       pp[P_TAU]) << 16  # fmt: skip
    return named


# --- encode: the state's wire format (:mod:`~.codec`), names excepted ---------------------------


@_jit
def _put(buf: np.ndarray, off: int, v: int, size: int) -> int:
    """``v`` as ``size`` little-endian bytes (two's complement) at ``off``; the next offset."""
    for i in range(size):
        buf[off + i] = (v >> (8 * i)) & 0xFF
    return off + size


@_jit
def encode(fv: np.ndarray, iv: np.ndarray, sh: np.ndarray, sc: np.ndarray, st: np.ndarray,
           k: int, named: int, version: int, schema: int,
           buf: np.ndarray) -> tuple[int, int]:  # fmt: skip
    """The bytes of :meth:`~.codec.Codec.to_bytes` but the names, into ``buf``: (length, bit
    per feature whose name follows, in feature order). ``named``: a bit per feature whose
    name text is known."""
    f32 = np.empty(_N_F32, dtype=np.float32)
    p = 0
    for i in range(_N_GROUPS):
        f32[p] = fv[_F_W + i]
        p += 1
    for i in range(4):
        f32[p] = fv[_F_RATE_C + i]
        p += 1
    for i in range(2 * _N_NUM):  # means, variances
        f32[p] = fv[_F_MEAN + i]
        p += 1
    for i in range(_N_AGG):
        f32[p] = fv[_F_AGG + i]
        p += 1
    bits = f32.view(np.uint32)
    off = _put(buf, 0, version, 1)
    off = _put(buf, off, schema, 1)
    off = _put(buf, off, k, 1)
    off = _put(buf, off, min(iv[_I_N], 0xFFFFFFFF), 4)
    off = _put(buf, off, iv[_I_RECENT], 2)
    off = _put(buf, off, iv[_I_SINCE], 2)
    off = _put(buf, off, iv[_I_FIRST], 8)
    off = _put(buf, off, iv[_I_LAST], 8)
    for i in range(_N_GROUPS + 4):  # EW weights, rate counter / mean / var / weight
        off = _put(buf, off, bits[i], 4)
    off = _put(buf, off, iv[_I_MFA_KNOWN], 2)
    off = _put(buf, off, iv[_I_MFA_NO], 2)
    for i in range(_N_GROUPS + 4, _N_GROUPS + 4 + 2 * _N_NUM):
        off = _put(buf, off, bits[i], 4)
    for i in range(_I_HOURS, _I_NAME):  # hours, sensitivity ranks, present, novel
        off = _put(buf, off, iv[i], 2)
    total = 0
    with_name = 0
    used_at = off
    off += 2 * _N_CAT  # slots used, then the named slot's index, per feature
    for c in range(_N_CAT):
        base = c * k
        m = 0
        while m < k and sh[base + m]:  # used slots come first
            m += 1
        buf[used_at + c] = m
        total += m
        j = iv[_I_NAME + c] - base
        if named >> c & 1 and 0 <= j < m:
            buf[used_at + _N_CAT + c] = j
            with_name |= 1 << c
        else:
            buf[used_at + _N_CAT + c] = 0xFF
    off = _put(buf, off, iv[_I_TASK], 4)
    off = _put(buf, off, iv[_I_BITS], 8)
    off = _put(buf, off, iv[_I_TASK2], 4)
    off = _put(buf, off, iv[_I_BITS2], 8)
    off = _put(buf, off, iv[_I_HOUR], 4)
    off = _put(buf, off, iv[_I_TAINT], 1)
    off = _put(buf, off, iv[_I_OP], 4)
    off = _put(buf, off, iv[_I_OP2], 4)
    for i in range(_N_GROUPS + 4 + 2 * _N_NUM, _N_F32):
        off = _put(buf, off, bits[i], 4)
    for i in range(_CP_WORDS + _ST_WORDS):  # the counterparties' filter, then the steps'
        off = _put(buf, off, iv[_I_BLOOM + i], 8)
    last_hour = iv[_I_LAST] // _HOUR_MS
    h_at = off
    c_at = h_at + 4 * total
    a_at = c_at + 2 * total
    q = 0
    for c in range(_N_CAT):
        base = c * k
        for j in range(base, base + buf[used_at + c]):
            _put(buf, h_at + 4 * q, sh[j], 4)
            _put(buf, c_at + 2 * q, sc[j], 2)
            # Older than 7.5 years: just "very old" (never fail to save).
            _put(buf, a_at + 2 * q, min(0xFFFF, max(0, last_hour - st[j])), 2)
            q += 1
    return a_at + 2 * total, with_name


# --- zero elision: the stored form of an encoded state -------------------------------------------
# About half of an encoded state's bytes are zero (the high bytes of small counts, hours never
# active, aggregates a kind of identity never fills, empty filters). Each group of 8 bytes is
# stored as a bit mask of its non-zero bytes, then those bytes: lossless, one pass, and the
# decoder accepts only the one canonical form, so decoding then encoding gives the same bytes.

UNPACK_TRUNCATED: Final = -1
UNPACK_NOT_CANONICAL: Final = -4  # (the codes of decode_stored's failures are distinct)
PACKED_HEAD: Final = 4  # version, feature schema, u16 length of the plain layout


@_jit
def pack_zeros(src: np.ndarray, start: int, dst: np.ndarray) -> int:
    """``src[start:]`` zero-elided into ``dst`` (at least ``n + n // 8 + 1`` long); its length.

    Bytes of ``dst`` past that length may be overwritten (each byte is stored before it is
    known to be kept: no branch per byte, which mispredicted on half of them).

    >>> src = np.array([7, 0, 0, 0, 0, 0, 0, 0, 0, 5], dtype=np.uint8)
    >>> dst = np.zeros(16, dtype=np.uint8)
    >>> dst[:pack_zeros(src, 0, dst)].tolist()
    [1, 7, 2, 5]
    """
    n = len(src)
    o = 0
    i = start
    while i + 8 <= n:
        at = o
        o += 1
        m = 0
        for j in range(8):
            v = src[i + j]
            dst[o] = v
            nz = int(v != 0)
            m |= nz << j
            o += nz
        dst[at] = m
        i += 8
    if i < n:  # a short last group
        at = o
        o += 1
        m = 0
        for j in range(n - i):
            v = src[i + j]
            if v != 0:
                m |= 1 << j
                dst[o] = v
                o += 1
        dst[at] = m
    return o


@_jit
def unpack_zeros(src: np.ndarray, start: int, dst: np.ndarray, off: int) -> int:
    """Inverse of :func:`pack_zeros`: fills ``dst[off:]`` exactly from ``src[start:]``; where
    in ``src`` the groups end, or :data:`UNPACK_TRUNCATED` / :data:`UNPACK_NOT_CANONICAL` (a
    stored zero, or a mask bit past the end)."""
    n = len(dst)
    i = start
    o = off
    while o < n:
        if i >= len(src):
            return UNPACK_TRUNCATED
        m = np.int64(src[i])
        i += 1
        g = min(8, n - o)
        if m >> g:
            return UNPACK_NOT_CANONICAL
        for j in range(g):
            if m >> j & 1:
                if i >= len(src):
                    return UNPACK_TRUNCATED
                v = src[i]
                if v == 0:
                    return UNPACK_NOT_CANONICAL
                dst[o + j] = v
                i += 1
            else:
                dst[o + j] = 0
        o += g
    return i


#: :func:`encode_stored`'s first byte of the plain layout and of the zero-elided one
#: (:data:`~.codec.STATE_VERSION`, :data:`~.codec.PACKED_VERSION`).
STATE_VERSION: Final = 3
PACKED_VERSION: Final = 4
#: The bit of :func:`encode_stored`'s ``flags`` that asks for the plain layout (the bits
#: below it: the features whose name text is known).
PLAIN: Final = 1 << _N_CAT


@_jit
def encode_stored(fv: np.ndarray, iv: np.ndarray, sh: np.ndarray, sc: np.ndarray,
                  st: np.ndarray, flags: int, names: np.ndarray, scratch: np.ndarray) -> int:
    """The whole stored form into ``scratch[1]``; its length. :func:`encode` into
    ``scratch[0]``, then, zero-elided behind a :data:`PACKED_HEAD` unless ``flags`` has
    :data:`PLAIN` and if that is shorter, else as it is, then the names whose slot is used.
    ``flags``' low bits: a bit per feature whose name text is known (``named``); ``names``:
    per feature in ``named``, in feature order, its name's length byte and UTF-8 (at most
    255 bytes each). Few arguments: numba's dispatch cost about 40 ns per argument, a
    tenth of the encoding. ``scratch``: two rows of at least ``PACKED_HEAD + n + n // 8 +
    1`` bytes plus ``names``, ``n`` the plain layout's largest length."""
    buf = scratch[0]
    out = scratch[1]
    named = flags & (PLAIN - 1)
    size, with_name = encode(fv, iv, sh, sc, st, len(sh) // _N_CAT, named, STATE_VERSION,
                             FEATURE_SCHEMA_VERSION, buf)  # fmt: skip
    n = size
    if not flags & PLAIN:
        n = PACKED_HEAD + pack_zeros(buf[:size], 2, out[PACKED_HEAD:])
    if n < size:
        out[0] = PACKED_VERSION
        out[1] = FEATURE_SCHEMA_VERSION
        out[2] = size & 0xFF
        out[3] = size >> 8
    else:
        out[:size] = buf[:size]
        n = size
    p = 0
    for c in range(_N_CAT):
        if named >> c & 1:
            m = 1 + int(names[p])
            if with_name >> c & 1:
                out[n : n + m] = names[p : p + m]
                n += m
            p += m
    return n


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel now, not on the first event: the
    first compile on a machine takes seconds, which a worker should spend before it joins.

    >>> warm_up()
    """
    from pipeline.baselines.layout import BaselineState

    s = BaselineState(2)
    x = np.zeros(_N_NUM)
    hs = np.zeros(_N_HS, dtype=np.int64)
    hs[0] = 1
    observe(s.fv, s.iv, x, hs, 0, 1, 0.0)
    deviations(s.fv, s.iv, s.slot_hash, s.slot_count, x, hs, 0, 0, 0, -1, 0, 0.0, -1.0, 2,
               True, 10.0, 0.03, 1.0, 1.0, 60_000.0, 0.3, 5)  # fmt: skip
    learn(s.fv, s.iv, s.slot_hash, s.slot_count, s.slot_hour, x, hs, 0, 0, 0, -1, -1.0, 2, 1,
          True, 0.5, 0.5, 60_000.0)  # fmt: skip
    current_rate(s.fv, s.iv, 0, 60_000.0)
    X = np.zeros((1, X_WIDTH))
    E = np.zeros((1, E_WIDTH), dtype=np.int64)
    p = np.zeros(P_WIDTH)
    p[:] = 2, 1, 10.0, 0.03, 1.0, 1.0, 60_000.0, 0.3, 5, 1, 0.5, 0.5  # P_K ... P_ASLOW
    rows = np.zeros((1, _N_DEV))
    score(s.fv, s.iv, s.slot_hash, s.slot_count, s.fv, s.iv, s.slot_hash, s.slot_count, X, E, 0,
          0.0, True, p, p, rows, rows.copy(), rows.copy(), np.zeros((1, 2, _N_DEV), np.int64),
          np.zeros(1), np.zeros((1, 3), np.int64))  # fmt: skip
    learn_pair(s.fv, s.iv, s.slot_hash, s.slot_count, s.slot_hour, s.fv, s.iv, s.slot_hash,
               s.slot_count, s.slot_hour, X, E, 0, False, p, p)  # fmt: skip
    buf = np.zeros(1024, dtype=np.uint8)
    size, _ = encode(s.fv, s.iv, s.slot_hash, s.slot_count, s.slot_hour, 2, 0, 1, 1, buf)
    back = BaselineState(2)
    names = np.empty(_N_CAT, dtype=np.int64)
    decode(np.frombuffer(buf[:size].tobytes(), dtype=np.uint8), 2, back.fv, back.iv,
           back.slot_hash, back.slot_count, back.slot_hour, names, size - 8)  # one used slot
    plausible(back.fv, back.iv, back.slot_hash)
    largest_count(back.iv, back.slot_count)
    rows = np.zeros((2, 2 * size), dtype=np.uint8)
    used = encode_stored(s.fv, s.iv, s.slot_hash, s.slot_count, s.slot_hour, 0,
                         np.frombuffer(b"", np.uint8), rows)  # fmt: skip
    packed = rows[1]
    unpack_zeros(packed[:used], PACKED_HEAD, np.zeros(size, dtype=np.uint8), 2)
    decode_stored(np.frombuffer(packed[:used].tobytes(), dtype=np.uint8), 2, back.fv, back.iv,
                  back.slot_hash, back.slot_count, back.slot_hour, names,
                  np.zeros(2 * size, dtype=np.uint8), STATE_VERSION, PACKED_VERSION,
                  FEATURE_SCHEMA_VERSION, size)  # fmt: skip


# --- decode: the inverse of encode (names excepted), distrusting its input ----------------------

TRUNCATED: Final = -1
BAD_TIMES: Final = -2
BAD_AGGREGATES: Final = -3
SHORT_PACKED: Final = -5  # a packed state whose plain length is below the header's
BAD_SCHEMA: Final = -6
# Plausibility bounds for decoded states (far beyond anything learned, far below float32 max).
_MAX_ABS_MS: Final = 2**31 * _HOUR_MS  # slot hours are int32
_MAX_FLOAT: Final = 1e15
_MAX_W: Final = 1e7


@_jit
def _get(buf: np.ndarray, off: int, size: int) -> int:
    """``size`` little-endian bytes at ``off`` as an int64 (8 bytes: the bit pattern)."""
    v = 0
    for i in range(size):
        v |= np.int64(buf[off + i]) << (8 * i)  # type: ignore[assignment]
    return int(v)


@_jit
def _get_f32(buf: np.ndarray, off: int, scratch: np.ndarray) -> float:
    scratch[0] = _get(buf, off, 4)
    return float(scratch.view(np.float32)[0])


@_jit
def decode(buf: np.ndarray, k: int, fv: np.ndarray, iv: np.ndarray, sh: np.ndarray,
           sc: np.ndarray, st: np.ndarray, names: np.ndarray, head: int) -> int:  # fmt: skip
    """Fill an empty state (``cat_slots`` = ``k``) from ``buf`` (the bytes of
    :func:`encode` and the names); ``names[c]``: the named slot's index in the data, 255 =
    none. Returns where the names start, or :data:`TRUNCATED` / :data:`BAD_TIMES` /
    :data:`BAD_AGGREGATES`. ``head``: the fixed header's size (the caller checked
    ``len(buf) >= head`` and the versions)."""
    u32 = np.empty(1, dtype=np.uint32)
    iv[_I_N] = _get(buf, 3, 4)
    iv[_I_RECENT] = _get(buf, 7, 2)
    iv[_I_SINCE] = _get(buf, 9, 2)
    iv[_I_FIRST] = _get(buf, 11, 8)
    iv[_I_LAST] = _get(buf, 19, 8)
    if not (-_MAX_ABS_MS < iv[_I_FIRST] <= iv[_I_LAST] < _MAX_ABS_MS):
        return BAD_TIMES
    off = 27
    for i in range(_N_GROUPS):
        fv[_F_W + i] = _get_f32(buf, off, u32)
        off += 4
    for i in range(4):
        fv[_F_RATE_C + i] = _get_f32(buf, off, u32)
        off += 4
    iv[_I_MFA_KNOWN] = _get(buf, off, 2)
    iv[_I_MFA_NO] = _get(buf, off + 2, 2)
    off += 4
    for i in range(2 * _N_NUM):
        fv[_F_MEAN + i] = _get_f32(buf, off, u32)
        off += 4
    for i in range(_I_HOURS, _I_NAME):  # hours, sensitivity ranks, present, novel
        iv[i] = _get(buf, off, 2)
        off += 2
    used_at = off
    off += 2 * _N_CAT
    iv[_I_TASK] = _get(buf, off, 4)
    iv[_I_BITS] = _get(buf, off + 4, 8)
    iv[_I_TASK2] = _get(buf, off + 12, 4)
    iv[_I_BITS2] = _get(buf, off + 16, 8)
    hour = _get(buf, off + 24, 4)
    iv[_I_HOUR] = hour - (1 << 32) if hour >= 1 << 31 else hour  # int32
    iv[_I_TAINT] = np.int64(buf[off + 28])
    iv[_I_OP] = _get(buf, off + 29, 4)
    iv[_I_OP2] = _get(buf, off + 33, 4)
    off += 37
    for i in range(_N_AGG):
        x = _get_f32(buf, off, u32)
        if not -_MAX_FLOAT < x < _MAX_FLOAT:
            return BAD_AGGREGATES
        fv[_F_AGG + i] = x
        off += 4
    for i in range(_CP_WORDS + _ST_WORDS):
        iv[_I_BLOOM + i] = _get(buf, off, 8)
        off += 8
    total = 0
    for c in range(_N_CAT):
        total += np.int64(buf[used_at + c])  # type: ignore[assignment]
    if buf.shape[0] < head + 8 * total:
        return TRUNCATED
    h_at = head
    c_at = h_at + 4 * total
    a_at = c_at + 2 * total
    last_hour = iv[_I_LAST] // _HOUR_MS
    p = 0
    for c in range(_N_CAT):
        m = np.int64(buf[used_at + c])  # numba: uint8 with int64 arithmetic gives floats
        named = np.int64(buf[used_at + _N_CAT + c])
        names[c] = named
        base = c * k
        if m <= k:
            for q in range(m):
                sh[base + q] = _get(buf, h_at + 4 * (p + q), 4)
                sc[base + q] = _get(buf, c_at + 2 * (p + q), 2)
                st[base + q] = last_hour - _get(buf, a_at + 2 * (p + q), 2)
            if named < m:
                iv[_I_NAME + c] = base + named
        else:  # written with more slots: keep the most used, then most recent
            taken = np.zeros(m, dtype=np.bool_)
            for j in range(base, base + k):
                best = -1
                for q in range(m):
                    if taken[q]:
                        continue
                    if best < 0:
                        best = q
                        continue
                    cq = _get(buf, c_at + 2 * (p + q), 2)
                    cb = _get(buf, c_at + 2 * (p + best), 2)
                    if cq > cb or (cq == cb and _get(buf, a_at + 2 * (p + q), 2)
                                   < _get(buf, a_at + 2 * (p + best), 2)):  # fmt: skip
                        best = q
                taken[best] = True
                sh[j] = _get(buf, h_at + 4 * (p + best), 4)
                sc[j] = _get(buf, c_at + 2 * (p + best), 2)
                st[j] = last_hour - _get(buf, a_at + 2 * (p + best), 2)
                if best == named:
                    iv[_I_NAME + c] = j
        p += m  # type: ignore[assignment]
    return a_at + 2 * total


@_jit
def plausible(fv: np.ndarray, iv: np.ndarray, sh: np.ndarray) -> bool:
    """Values some model could have learned (finite, in range; an empty state is empty)."""
    for i in range(_F_AGG):  # weights, means, variances, rate
        if not math.isfinite(fv[i]):
            return False
    for g in range(_N_GROUPS):
        if not 0.0 <= fv[_F_W + g] <= _MAX_W:
            return False
    if not (0.0 <= fv[_F_RATE_W] <= _MAX_W and 0.0 <= fv[_F_RATE_C] <= _MAX_FLOAT
            and 0.0 <= fv[_F_RATE_MEAN] <= _MAX_FLOAT  # log(rate), rate >= 1
            and 0.0 <= fv[_F_RATE_VAR] <= _MAX_FLOAT):  # fmt: skip
        return False
    for i in range(_N_NUM):  # every numeric feature is >= 0 ...
        if not (0.0 <= fv[_F_MEAN + i] <= _MAX_FLOAT and 0.0 <= fv[_F_VAR + i] <= _MAX_FLOAT):
            return False
    for i in (_X_FAIL, _X_NOMFA, _X_CHAIN):  # ... and these are shares
        if fv[_F_MEAN + i] > 1.0:
            return False
    if iv[_I_N] == 0:  # learned nothing: empty
        if iv[_I_RECENT]:
            return False
        for j in range(sh.shape[0]):
            if sh[j]:
                return False
    return True


@_jit
def largest_count(iv: np.ndarray, sc: np.ndarray) -> int:
    """The largest decayed count of a state (they must stay below the model's cap)."""
    top = max(iv[_I_RECENT], iv[_I_MFA_KNOWN], iv[_I_MFA_NO])
    for i in range(_I_HOURS, _I_NAME):
        top = max(top, iv[i])
    for j in range(sc.shape[0]):
        top = max(top, np.int64(sc[j]))
    return int(top)


@_jit
def decode_stored(src: np.ndarray, k: int, fv: np.ndarray, iv: np.ndarray, sh: np.ndarray,
                  sc: np.ndarray, st: np.ndarray, names: np.ndarray, raw: np.ndarray,
                  version: int, packed_version: int, schema: int,
                  head: int) -> tuple[int, int, int]:  # fmt: skip
    """Fill an empty state from either stored form (``src``, version byte checked) in one
    call: (where the names start, length of the bytes they are in, the largest count or -1
    for implausible values), or (an error code, 0, 0). ``names``: as :func:`decode`.

    The plain form is read in place; a packed one is unpacked into ``raw`` (at least
    ``0x10000 + len(src)`` bytes) followed by the rest of ``src``, and its names are read
    there."""
    if src[0] != packed_version:
        return _decode_plain(src, k, fv, iv, sh, sc, st, names, schema, head)
    if len(src) < PACKED_HEAD:
        return TRUNCATED, 0, 0
    size = np.int64(src[2]) | np.int64(src[3]) << 8
    if size < head:
        return SHORT_PACKED, 0, 0
    raw[0] = version
    raw[1] = src[1]
    end = unpack_zeros(src, PACKED_HEAD, raw[:size], 2)
    if end < 0:
        return end, 0, 0
    tail = len(src) - end
    raw[size : size + tail] = src[end:]
    return _decode_plain(raw[: size + tail], k, fv, iv, sh, sc, st, names, schema, head)


@_jit
def _decode_plain(buf: np.ndarray, k: int, fv: np.ndarray, iv: np.ndarray, sh: np.ndarray,
                  sc: np.ndarray, st: np.ndarray, names: np.ndarray, schema: int,
                  head: int) -> tuple[int, int, int]:  # fmt: skip
    """:func:`decode_stored` of the plain layout (and the names after it)."""
    if len(buf) < head:
        return TRUNCATED, 0, 0
    if buf[1] != schema:
        return BAD_SCHEMA, 0, 0
    off = decode(buf, k, fv, iv, sh, sc, st, names, head)
    if off < 0:
        return off, 0, 0
    if not plausible(fv, iv, sh):
        return off, len(buf), -1
    return off, len(buf), largest_count(iv, sc)
