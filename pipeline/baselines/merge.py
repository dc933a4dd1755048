"""Merging two baseline states: one state as if it had learned both streams.

:class:`Merger` is the merge piece of :class:`~pipeline.baselines.baselines.BaselineModel`:
two workers' states, replay + live, or two shards of a peer group become one.
"""

from __future__ import annotations

import math

from pipeline.baselines import kernel
from pipeline.baselines.layout import _GROUPS, _N_CAT, _U16, BaselineState

__all__ = ["Merger"]


class Merger:
    """``merge`` of a baseline model; reads only the attributes below."""

    __slots__ = ()
    cat_slots: int
    half_life_events: int
    _alpha_keep: float
    _tau: float

    def merge(self, a: BaselineState, b: BaselineState) -> BaselineState:
        """One state as if it had learned both streams; neither input changes.

        Meant for two parts of one stream (two workers, replay + live, or two shards of a
        peer group). When one state ended before the other began, the older one is decayed by
        the newer one's events, which gives the means / variances of sequential learning;
        overlapping states are combined without decay. Counts add; each categorical feature
        keeps its most used, then most recent, ``cat_slots`` values.

        >>> from pipeline.baselines.baselines import BaselineModel
        >>> m = BaselineModel()
        >>> m.merge(m.new_state(), m.new_state()).n
        0
        """
        if a.n == 0 or b.n == 0:
            return _copy(b if a.n == 0 else a)
        old, new = (a, b) if (a.first_ms, a.last_ms) <= (b.first_ms, b.last_ms) else (b, a)
        half_life = self.half_life_events
        s = BaselineState(self.cat_slots)
        sequential = old.last_ms <= new.first_ms
        if sequential:  # one after the other: decay the older state
            keep_w = self._alpha_keep**new.n  # what is left of its EW weight
            # The halvings the older counts would have seen while the newer state learned.
            shift = (old.since_halve + new.n) // half_life
            s.since_halve = (
                (old.since_halve + new.n) % half_life if new.n < half_life else new.since_halve
            )
        else:  # concurrent (e.g. two shards of a peer group): no decay
            keep_w, shift = 1.0, 0
            s.since_halve = max(old.since_halve, new.since_halve)

        def add(u: int, v: int) -> int:
            return min(_U16, (u >> shift) + v)

        s.n = old.n + new.n
        s.first_ms = old.first_ms
        s.last_ms = max(old.last_ms, new.last_ms)
        for g, _, members in _GROUPS:
            # The older weight decays by keep^m, m = the newer state's events in this group;
            # for a state learned from scratch that is exactly 1 - (1 - keep) * weight.
            decay = max(0.0, 1.0 - (1.0 - self._alpha_keep) * new.w[g]) if sequential else 1.0
            wo, wn = old.w[g] * decay, new.w[g]
            s.w[g] = wo + wn
            if not s.w[g]:
                continue
            fo, fn = wo / s.w[g], wn / s.w[g]
            for i in members:
                s.mean[i], s.var[i] = _combine(
                    fo, old.mean[i], old.var[i], fn, new.mean[i], new.var[i]
                )
        rwo = old.rate_w * keep_w
        s.rate_w = rwo + new.rate_w
        s.rate_mean, s.rate_var = _combine(
            rwo / s.rate_w,
            old.rate_mean,
            old.rate_var,
            new.rate_w / s.rate_w,
            new.rate_mean,
            new.rate_var,
        )
        # The short-window counter is a sum of exp-decayed events: decay both to the end.
        s.rate_c = sum(
            x.rate_c * math.exp(-(s.last_ms - x.last_ms) / self._tau) for x in (old, new)
        )
        s.mfa_known = add(old.mfa_known, new.mfa_known)
        s.mfa_no = add(old.mfa_no, new.mfa_no)
        s.hours = [add(u, v) for u, v in zip(old.hours, new.hours, strict=True)]
        s.recent = sum(s.hours)
        s.sens = [add(u, v) for u, v in zip(old.sens, new.sens, strict=True)]
        s.present = [add(u, v) for u, v in zip(old.present, new.present, strict=True)]
        s.novel = [add(u, v) for u, v in zip(old.novel, new.novel, strict=True)]
        k = self.cat_slots
        for c in range(_N_CAT):
            base = c * k
            slots: dict[int, list[int]] = {}
            for x, x_shift in ((old, shift), (new, 0)):
                for j in range(base, base + k):
                    h = x.slot_hash[j]
                    if h:
                        got = slots.setdefault(h, [0, x.slot_hour[j]])
                        got[0] = min(_U16, got[0] + (x.slot_count[j] >> x_shift))
                        got[1] = max(got[1], x.slot_hour[j])
            ranked = sorted(slots.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))[:k]
            for j, (h, (cnt, hour)) in enumerate(ranked, start=base):
                s.slot_hash[j], s.slot_count[j], s.slot_hour[j] = h, cnt, hour
            best = -1
            for x in (old, new):
                named = x.name_slot[c]
                if named < 0 or x.name_text[c] is None:
                    continue
                h = x.slot_hash[named]
                for j in range(base, base + len(ranked)):
                    if s.slot_hash[j] == h and s.slot_count[j] >= best:
                        best = s.slot_count[j]
                        s.name_slot[c], s.name_text[c] = j, x.name_text[c]
        # Running tasks and hours, and the totals' baselines: the newer state's (they are
        # sequences in time; combining two shards' running sums would double-count).
        s.agg = new.agg[:]
        s.task_key, s.task_bits, s.task_key2, s.task_bits2 = (
            new.task_key, new.task_bits, new.task_key2, new.task_bits2)  # fmt: skip
        s.hour_key, s.taint = new.hour_key, new.taint
        s.last_op, s.last_op2 = new.last_op, new.last_op2
        s.cp_bloom = [x | y for x, y in zip(old.cp_bloom, new.cp_bloom, strict=True)]
        s.step_bloom = [x | y for x, y in zip(old.step_bloom, new.step_bloom, strict=True)]
        while s.recent >= 2 * self.half_life_events:  # keep every count within u16
            kernel.halve(s.iv, s.slot_count)
        return s


def _copy(state: BaselineState) -> BaselineState:
    return state.copy()


def _combine(
    fa: float, ma: float, va: float, fb: float, mb: float, vb: float
) -> tuple[float, float]:
    """Weighted mean / variance of two groups whose weight fractions add up to 1."""
    m = fa * ma + fb * mb
    return m, fa * (va + (ma - m) ** 2) + fb * (vb + (mb - m) ** 2)
