"""Learning: how one event folds into a baseline state (the per-event hot path).

:class:`Learner` is the learning piece of :class:`~pipeline.baselines.baselines.BaselineModel`:
``learn_one`` (EW means / variances, time profile, rate, categorical slots, counterparties),
``observe`` (every event's task and hour totals, learned or not) and ``taint``.
"""

from __future__ import annotations

import math
from typing import Final

from pipeline.baselines.features import CATEGORICAL_INDEX, Features
from pipeline.baselines.layout import (
    _A_CP_NEW,
    _A_CP_SEEN,
    _A_CUSUM,
    _A_HB_MEAN,
    _A_HB_VAR,
    _A_HOUR_BYTES,
    _A_HW,
    _A_SLOW_MEAN,
    _A_SLOW_VAR,
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
    _DRIFT_MIN_W,
    _DRIFT_SLACK,
    _GROUPS,
    _HOUR_MS,
    _NAME_BYTES,
    _TAINT_HOUR,
    _TAINT_TASK,
    _TAINT_TASK2,
    _X_BYTES_OUT,
    _X_NRES,
    _ZSPEC,
    BaselineState,
    _bloom_add,
    _bloom_has,
    _distinct,
    _halve,
    _shorten,
)

__all__ = ["Learner"]

_AGG_HALF_LIFE: Final = 100.0  # completed tasks / hours after which old totals weigh half
_AGG_KEEP: Final = 0.5 ** (1.0 / _AGG_HALF_LIFE)
_C_RESOURCE: Final = CATEGORICAL_INDEX["resource"]
_CHURN_MIN: Final = 20  # events of a feature before "most of its values are new" is trusted


class Learner:
    """``learn_one`` / ``observe`` / ``taint`` of a baseline model; reads only the attributes
    below."""

    __slots__ = ()
    cat_slots: int
    half_life_events: int
    scope: str
    _alpha_keep: float
    _alpha_slow: float
    _tau: float

    def learn_one(
        self, state: BaselineState, features: Features, rate: float | None = None
    ) -> None:
        """Fold one event into ``state`` (in place). ``rate``: see :meth:`current_rate`.

        >>> from pipeline.baselines.baselines import BaselineModel
        >>> from pipeline.baselines.features import extract
        >>> from pipeline.events.schemas import Event
        >>> m = BaselineModel()
        >>> s = m.new_state()
        >>> m.learn_one(s, extract(Event(uid="e", class_uid=3002, activity_id=1, time_ms=0,
        ...                              identity_uid="a", identity_kind="human", country="DE")))
        >>> s.n, len(m.known_values(s, "country")), s.name_text[0]
        (1, 1, 'DE')
        """
        t = features.time_ms
        last = state.last_ms
        if state.n == 0:
            state.first_ms = last = t
        counter = state.rate_c
        if t > last:  # out-of-order events count, but never move time backwards
            counter *= math.exp((last - t) / self._tau)
            last = t
        state.last_ms = last
        counter += 1.0
        state.rate_c = counter
        if rate is None:
            rate = counter
        elif rate < 1.0:  # a rate includes the event itself
            rate = 1.0
        state.n += 1
        state.recent += 1

        # Bias-corrected EW mean / variance (West's weighted Welford update): the exact mean
        # and variance of the first events, then weight 1 - 2^(-1/half_life) per event.
        ak = self._alpha_keep
        mean = state.mean
        var = state.var
        weights = state.w
        x = features.numeric
        for g, cond, members in _GROUPS:
            if cond >= 0 and not x[cond]:
                continue
            w = weights[g] * ak + 1.0
            weights[g] = w
            b = 1.0 / w
            keep = 1.0 - b
            for i in members:
                d = x[i] - mean[i]
                inc = b * d
                mean[i] += inc
                var[i] = keep * (var[i] + d * inc)
        if x[_X_BYTES_OUT]:  # the long horizon of the same statistic (drift)
            a = state.agg
            sw = a[_A_SW] * self._alpha_slow + 1.0
            a[_A_SW] = sw
            d = x[_X_BYTES_OUT] - a[_A_SLOW_MEAN]
            inc = d / sw
            a[_A_SLOW_MEAN] += inc
            a[_A_SLOW_VAR] = (1.0 - 1.0 / sw) * (a[_A_SLOW_VAR] + d * inc)
        u = 1.0 / rate
        rw = state.rate_w * ak + u
        state.rate_w = rw
        br = u / rw
        d = math.log(rate) - state.rate_mean
        inc = br * d
        state.rate_mean += inc
        state.rate_var = (1.0 - br) * (state.rate_var + d * inc)

        state.hours[_BUCKET[features.hour_of_week]] += 1
        if x[_X_NRES]:
            state.sens[features.sensitivity_rank] += 1
        mfa = features.mfa
        if mfa >= 0:
            state.mfa_known += 1
            if mfa == 0:
                state.mfa_no += 1

        hour = t // _HOUR_MS
        k = self.cat_slots
        present = state.present
        name_slot = state.name_slot
        sh = state.slot_hash
        sc = state.slot_count
        st = state.slot_hour
        base = -k
        for c, h in enumerate(features.cat_hashes):
            base += k
            if not h:
                continue
            seen = present[c] = present[c] + 1
            try:
                j = sh.index(h, base, base + k)
            except ValueError:  # a value not remembered (rare once the identity is known)
                # Where most values are new (a peer group's resources), skip the exact
                # least-recently-used tie-break: it would cost a Python loop on every event.
                churn = seen > _CHURN_MIN and state.novel[c] * 2 > seen
                j = self._insert(state, c, h, hour, churn)
            else:
                sc[j] += 1
                if hour > st[j]:
                    st[j] = hour
            named = name_slot[c]
            if named != j and (named < 0 or sc[j] > sc[named]):
                value = features.cat_values[c]
                name_slot[c] = j
                state.name_text[c] = _shorten(value, _NAME_BYTES) if value else None

        cp = features.cat_hashes[_C_COUNTERPARTY]
        if cp and self.scope == "identity":
            a = state.agg
            a[_A_CP_SEEN] = a[_A_CP_SEEN] * _AGG_KEEP + 1.0
            new = not _bloom_has(state.cp_bloom, cp)
            a[_A_CP_NEW] = a[_A_CP_NEW] * _AGG_KEEP + (1.0 if new and a[_A_CP_SEEN] > 1.0 else 0.0)
            if new:
                _bloom_add(state.cp_bloom, cp)
        state.since_halve += 1
        if state.since_halve >= self.half_life_events:
            _halve(state)

    def observe(self, state: BaselineState, features: Features) -> None:
        """Count one event into its task's and clock hour's running totals (every event,
        learned or not: an attack's calls must add up). Call it before :meth:`deviations`.

        A task or hour that ends (another one starts) is folded into the baseline of
        completed totals unless it held back an event (:meth:`taint`). Two tasks may
        interleave without ending each other.

        >>> from pipeline.baselines.baselines import BaselineModel
        >>> from pipeline.baselines.features import extract
        >>> from pipeline.events.schemas import Event
        >>> m = BaselineModel()
        >>> s = m.new_state()
        >>> for task in ("t1", "t1", "t2", "t3"):
        ...     m.observe(s, extract(Event(uid="e", class_uid=6003, activity_id=2, time_ms=0,
        ...                                identity_uid="a", identity_kind="agent",
        ...                                session_uid=task, bytes_out=1000)))
        >>> s.agg[_A_TW], round(math.expm1(s.agg[_A_TB_MEAN]))  # t1 ended: 2 calls, 2000 B
        (1.0, 2000)
        """
        if self.scope != "identity":
            return
        a = state.agg
        task = features.task
        if task and task != state.task_key:
            if task == state.task_key2:  # back to the other running task
                state.task_key, state.task_key2 = state.task_key2, state.task_key
                state.task_bits, state.task_bits2 = state.task_bits2, state.task_bits
                a[_A_TASK_BYTES], a[_A_TASK2_BYTES] = a[_A_TASK2_BYTES], a[_A_TASK_BYTES]
                a[_A_TASK_CALLS], a[_A_TASK2_CALLS] = a[_A_TASK2_CALLS], a[_A_TASK_CALLS]
                t = state.taint
                state.taint = (t & _TAINT_HOUR) | (t & _TAINT_TASK) << 2 | (t & _TAINT_TASK2) >> 2
            else:  # a new task: the older of the two running ones has ended
                if state.task_key2 and a[_A_TASK2_CALLS] and not state.taint & _TAINT_TASK2:
                    self._fold_task(a, a[_A_TASK2_BYTES], _distinct(state.task_bits2))
                state.task_key2, state.task_bits2 = state.task_key, state.task_bits
                a[_A_TASK2_BYTES], a[_A_TASK2_CALLS] = a[_A_TASK_BYTES], a[_A_TASK_CALLS]
                state.taint = (state.taint & _TAINT_HOUR) | (state.taint & _TAINT_TASK) << 2
                state.task_key, state.task_bits = task, 0
                a[_A_TASK_BYTES] = a[_A_TASK_CALLS] = 0.0
        if task:
            a[_A_TASK_BYTES] += features.volume
            a[_A_TASK_CALLS] += 1.0
            res = features.cat_hashes[_C_RESOURCE]
            if res:
                state.task_bits |= 1 << (res & 63)
        hour = features.time_ms // _HOUR_MS
        if hour > state.hour_key:  # a late event of an earlier hour counts into this one
            if state.hour_key and a[_A_HOUR_BYTES] > 0.0 and not state.taint & _TAINT_HOUR:
                w = a[_A_HW] * _AGG_KEEP + 1.0
                a[_A_HW] = w
                a[_A_HB_MEAN], a[_A_HB_VAR] = _ew(a[_A_HB_MEAN], a[_A_HB_VAR], w,
                                                  math.log1p(a[_A_HOUR_BYTES]))  # fmt: skip
            state.hour_key = hour
            a[_A_HOUR_BYTES] = 0.0
            state.taint &= ~_TAINT_HOUR
        a[_A_HOUR_BYTES] += features.volume
        out = features.numeric[_X_BYTES_OUT]
        if out and a[_A_SW] >= _DRIFT_MIN_W:  # every event: a drift must not hide by being held
            z = (out - a[_A_SLOW_MEAN]) / math.sqrt(a[_A_SLOW_VAR] + _ZSPEC[0][3])
            a[_A_CUSUM] = max(0.0, a[_A_CUSUM] + z - _DRIFT_SLACK)

    @staticmethod
    def _fold_task(a: list[float], total: float, distinct: float) -> None:
        w = a[_A_TW] * _AGG_KEEP + 1.0
        a[_A_TW] = w
        a[_A_TB_MEAN], a[_A_TB_VAR] = _ew(a[_A_TB_MEAN], a[_A_TB_VAR], w, math.log1p(total))
        a[_A_TR_MEAN], a[_A_TR_VAR] = _ew(a[_A_TR_MEAN], a[_A_TR_VAR], w, math.log1p(distinct))

    def taint(self, state: BaselineState) -> None:
        """The event just observed was held back (not learned): its task's and hour's totals
        must not become the baseline of normal totals."""
        state.taint |= _TAINT_TASK | _TAINT_HOUR

    def _insert(self, state: BaselineState, c: int, h: int, hour: int, churn: bool) -> int:
        """Remember a value that is not in feature ``c``'s slots; returns its slot."""
        k = self.cat_slots
        base = c * k
        sh = state.slot_hash
        sc = state.slot_count
        st = state.slot_hour
        if sh[base]:  # the first value an identity shows is its baseline, not a novelty
            state.novel[c] += 1
        end = base + k
        if sh[end - 1]:  # full: evict the least used, then least recently used, value
            counts = sc[base:end]
            low = min(counts)
            j = base + counts.index(low)
            if not churn and counts.count(low) > 1:
                for i in range(j + 1, end):
                    if sc[i] == low and st[i] < st[j]:
                        j = i
            if state.name_slot[c] == j:
                state.name_slot[c] = -1
        else:
            j = sh.index(0, base, end)  # the first free slot
        sh[j] = h
        sc[j] = 1
        st[j] = hour
        return j


def _ew(mean: float, var: float, w: float, x: float) -> tuple[float, float]:
    """One bias-corrected EW update of (mean, variance) with the new weight sum ``w``."""
    b = 1.0 / w
    d = x - mean
    inc = b * d
    return mean + inc, (1.0 - b) * (var + d * inc)
