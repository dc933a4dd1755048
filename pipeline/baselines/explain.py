"""Explanation text of a baseline's deviations: the analyst-facing :class:`Contribution`.

:class:`Explainer` is the explanation piece of
:class:`~pipeline.baselines.baselines.BaselineModel`. It runs only for the few strongest
dimensions of an event (the slow path): ``deviations`` computes the numbers, this turns them
into "country BR never seen (usually DE)".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import numpy as np

from pipeline.baselines import kernel
from pipeline.baselines.features import (
    CATEGORICAL,
    CATEGORICAL_INDEX,
    SENSITIVITY_NAMES,
    Features,
)
from pipeline.baselines.layout import (
    _A_CUSUM,
    _A_DAY_MEAN,
    _A_HB_MEAN,
    _A_HB_VAR,
    _A_HOUR_BYTES,
    _A_SLOW_MEAN,
    _A_ST_NEW,
    _A_ST_SEEN,
    _A_TASK_BYTES,
    _A_TASK_CALLS,
    _A_TB_MEAN,
    _A_TB_VAR,
    _A_TR_MEAN,
    _D_BURST,
    _D_BYTES_IN,
    _D_BYTES_OUT,
    _D_CAT0,
    _D_DRIFT,
    _D_FAIL,
    _D_HOUR_VOL,
    _D_HOURS,
    _D_NOMFA,
    _D_NRES,
    _D_SENS,
    _D_STEP,
    _D_TASK_RES,
    _D_TASK_VOL,
    _DAY_MS,
    _HOUR_MS,
    _I_PREV,
    _X_BYTES_IN,
    _X_BYTES_OUT,
    _X_CHAIN,
    _X_FAIL,
    _X_NRES,
    DEVIATIONS,
    BaselineState,
    _shorten,
    _signed,
)
from pipeline.scores.explanations import Contribution

__all__ = ["Explainer"]

_C_DELEGATOR: Final = CATEGORICAL_INDEX["delegator"]
_C_OPERATION: Final = CATEGORICAL_INDEX["operation"]
_C_COUNTERPARTY: Final = CATEGORICAL_INDEX["counterparty"]

# Operation names by hash, as this process saw them: a step names the previous call, which the
# state keeps only as a hash. Bounded; a name not seen here reads "another call".
_OP_NAMES: dict[int, str] = {}
_OP_NAMES_MAX: Final = 4096


def remember_operation(h: int, name: str | None) -> None:
    """Note the name of an operation hash (for step explanations)."""
    if name and h not in _OP_NAMES:
        if len(_OP_NAMES) >= _OP_NAMES_MAX:
            _OP_NAMES.clear()
        _OP_NAMES[h] = _shorten(name, 60)


def drift_text(state: BaselineState) -> tuple[str, str, str]:
    """(observed, baseline, sentence) of an identity's volume drift."""
    a = state.agg
    observed = (f"bytes_out typically {_fmt_bytes(math.expm1(a[_A_DAY_MEAN]))} a call on its "
                "last full day")  # fmt: skip
    baseline = f"long-run typical {_fmt_bytes(math.expm1(a[_A_SLOW_MEAN]))}"
    text = (f"{observed}, day after day above its {baseline} (cumulative excess "
            f"{a[_A_CUSUM]:.0f} sd of its usual day-to-day change)")  # fmt: skip
    return observed, baseline, text


def operation_name(h: int) -> str:
    """The name of an operation hash, or ``another call``.

    >>> remember_operation(7, "search_emails"); operation_name(7), operation_name(8)
    ('search_emails', 'another call')
    """
    return _OP_NAMES.get(h, "another call")
_ACTIVE_MASS: Final = 0.95  # "active mostly 08-18": smallest window holding 95 % of events

# Categories whose novelty reads "X never seen (usually Y)"; the others "first use of X".
_WHERE: Final = frozenset({"country", "asn", "ip_prefix", "environment", "model", "auth_protocol"})
_PLURAL: Final[dict[str, str]] = {
    "country": "countries",
    "asn": "ASNs",
    "ip_prefix": "IP prefixes",
    "service": "services",
    "operation": "operations",
    "resource": "resources",
    "delegator": "delegators",
    "model": "models",
    "environment": "environments",
    "auth_protocol": "auth protocols",
    "counterparty": "counterparties",
    "combo": "tool x resource class combinations",
}
_DASH: Final = "\u2013"  # en dash, as in "08\u201318 UTC"
_WEEKDAY: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


class Explainer:
    """``_explain`` of a baseline model; reads only the attributes below."""

    __slots__ = ()
    cat_slots: int
    rare_share: float
    scope: str
    _who: str

    def _explain(
        self, state: BaselineState, f: Features, dim: int, weight: float, rate: float
    ) -> Contribution:
        name = DEVIATIONS[dim]
        who = self._who
        peer = "peer " if self.scope == "peer" else ""
        if dim >= _D_CAT0:
            kind, observed, baseline, text = self._explain_cat(state, f, dim - _D_CAT0)
        elif dim in (_D_BYTES_OUT, _D_BYTES_IN, _D_NRES):
            xi = {_D_BYTES_OUT: _X_BYTES_OUT, _D_BYTES_IN: _X_BYTES_IN}.get(dim, _X_NRES)
            m, sd = state.mean[xi], math.sqrt(max(state.var[xi], 0.0))
            if xi == _X_NRES:
                observed = _fmt_num(f.numeric[xi])
                spread = f"{_fmt_num(m)} ± {_fmt_num(sd)}"
            else:
                typical = math.expm1(m)
                observed = _fmt_bytes(math.expm1(f.numeric[xi]))
                spread = f"{_fmt_bytes(typical)} ± {_fmt_bytes(math.expm1(m + sd) - typical)}"
            kind = "zscore"
            baseline = f"{peer}typical {spread}"
            text = f"{name} {observed} vs {baseline}"
        elif dim in (_D_TASK_VOL, _D_HOUR_VOL):
            a = state.agg
            task = dim == _D_TASK_VOL
            total = a[_A_TASK_BYTES] if task else a[_A_HOUR_BYTES]
            m, v = (a[_A_TB_MEAN], a[_A_TB_VAR]) if task else (a[_A_HB_MEAN], a[_A_HB_VAR])
            typical = math.expm1(m)
            kind = "zscore"
            where = f"this task ({a[_A_TASK_CALLS]:.0f} calls)" if task else "this hour"
            observed = f"{_fmt_bytes(total)} so far in {where}"
            spread = f"{_fmt_bytes(typical)} ± {_fmt_bytes(math.expm1(m + math.sqrt(v)) - typical)}"
            baseline = f"typical {'task' if task else 'hourly'} total {spread}"
            text = f"{observed} vs {baseline}"
        elif dim == _D_TASK_RES:
            a = state.agg
            kind = "zscore"
            distinct = kernel.distinct(_signed(state.task_bits))
            observed = f"{distinct:.0f} distinct resources in this task"
            baseline = f"typically {math.expm1(a[_A_TR_MEAN]):.0f} per task"
            text = f"{observed} vs {baseline}"
        elif dim == _D_DRIFT:
            kind = "drift"
            observed, baseline, text = drift_text(state)
        elif dim == _D_STEP:
            kind = "first_seen"
            op = f.cat_values[_C_OPERATION] or "?"
            prev = int(state.iv[_I_PREV])
            before = "as the first call of a task" if not prev else (
                f"right after `{operation_name(prev)}`")  # fmt: skip
            observed = f"`{_shorten(op, 60)}` {before}"
            a = state.agg
            share = a[_A_ST_NEW] / a[_A_ST_SEEN] if a[_A_ST_SEEN] else 0.0
            baseline = f"{_pct(share)} of its steps are new"
            text = f"{observed}: a step {who} never took in a task ({baseline})"
        elif dim == _D_BURST:
            kind = "burst"
            observed = f"{_fmt_num(rate)} requests/min"
            baseline = f"{peer}typical {_fmt_num(math.exp(state.rate_mean))}"
            text = f"{observed} vs {baseline}"
        elif dim == _D_HOURS:
            kind = "off_hours"
            t = f.time_ms
            day = f.hour_of_week // 24
            clock = f"{(t // _HOUR_MS) % 24:02d}:{(t // 60_000) % 60:02d} UTC"
            observed = f"{_WEEKDAY[day]} {clock}" if day >= 5 else clock
            baseline = f"active mostly {_active_window(state.hours)} UTC"
            if day >= 5 and sum(state.hours[24:]) < 0.1 * max(1, state.recent):
                baseline += " on weekdays"
            text = f"{observed} — {who} {baseline}"
        elif dim == _D_SENS:
            rank = f.sensitivity_rank
            kind = "first_seen" if sum(state.sens[rank:]) == 0 else "rare"
            observed = SENSITIVITY_NAMES[rank]
            usual = kernel.usual_max(state.iv, self.rare_share)
            baseline = f"usual maximum {SENSITIVITY_NAMES[usual]}"
            if rank > usual:
                text = f"sensitivity {observed} above {who}'s {baseline}"
            else:
                share = sum(state.sens[rank:]) / max(1, sum(state.sens))
                text = f"sensitivity {observed} rare for {who} ({_pct(share)} of its resources)"
        elif dim == _D_FAIL:
            kind = "rare"
            observed = "failure"
            baseline = f"fails {_pct(state.mean[_X_FAIL])} of events"
            text = f"failed event — {who} {baseline}"
        elif dim == _D_NOMFA:
            kind = "rare"
            observed = "no MFA"
            baseline = f"MFA on {_pct(1.0 - state.mfa_no / max(1, state.mfa_known))} of logons"
            text = f"logon without MFA — {who} uses {baseline}"
        else:  # _D_CHAIN
            kind = "rare"
            if f.numeric[_X_CHAIN]:
                observed = f"delegated by `{f.cat_values[_C_DELEGATOR]}`"
            else:
                observed = "not delegated"
            baseline = f"delegated in {_pct(state.mean[_X_CHAIN])} of events"
            text = f"{observed} — {who} {baseline}"
        return Contribution(name, "peer" if peer else kind, weight, observed, baseline, text)

    def _explain_cat(self, state: BaselineState, f: Features, c: int) -> tuple[str, str, str, str]:
        """(kind, observed, baseline, text) of a categorical deviation."""
        name = CATEGORICAL[c]
        value = f.cat_values[c] or ""
        if c == _C_COUNTERPARTY and self.scope == "identity":
            # Of a write's parties, name the one never written to (a payment names the
            # payer's own account too).
            for v, h in ((value, f.cat_hashes[c]), *zip(f.parties, f.party_hashes, strict=True)):
                if h and not kernel.bloom_has(state.iv, h):
                    usual = state.name_text[c] if state.name_slot[c] >= 0 else None
                    baseline = "never written to before"
                    if usual:
                        baseline += f"; most used `{usual}`"
                    shown = _shorten(v, 60)
                    text = f"first write to counterparty `{shown}` ({baseline})"
                    return "first_seen", shown, baseline, text
        shown = _shorten(value, 60)
        k = self.cat_slots
        base = c * k
        hashes = state.slot_hash[base : base + k].tolist()
        used = k - hashes.count(0)
        named = state.name_slot[c]
        usual = state.name_text[c] if named >= 0 else None
        scope = " in peer group" if self.scope == "peer" else ""
        h = f.cat_hashes[c]
        if h not in hashes:
            kind = "first_seen"
            if name in _WHERE:
                baseline = f"usually {usual}" if usual else "usual value unknown"
                return kind, shown, baseline, f"{name} {shown} never seen{scope} ({baseline})"
            known = f"{used}+" if used == k and state.novel[c] else str(used)
            baseline = f"known: {known} {_PLURAL[name]}"
            if usual:
                baseline += f", most used `{usual}`"
            days = (f.time_ms - state.first_ms) // _DAY_MS
            where = f" in {days} days" if days >= 1 else f" ({baseline})"
            return kind, shown, baseline, f"first use of {name} `{shown}`{scope}{where}"
        j = base + hashes.index(h)
        share = state.slot_count[j] / max(1, state.present[c])
        age_h = max(0, f.time_ms // _HOUR_MS - state.slot_hour[j])
        ago = f"{age_h // 24} days ago" if age_h >= 48 else f"{age_h} h ago"
        baseline = f"{_pct(share)} of {_PLURAL[name]}, last {ago}"
        if usual and usual != value:
            baseline += f"; usually `{usual}`"
        return "rare", shown, baseline, f"{name} `{shown}` rarely used{scope} ({baseline})"


def _active_window(hours: Sequence[int] | np.ndarray) -> str:
    """Smallest circular hour range holding ``_ACTIVE_MASS`` of events, e.g. ``08-18``.

    >>> _active_window([0] * 8 + [5] * 10 + [0] * 30)
    '08\\u201318'
    """
    by_hour = [hours[h] + hours[h + 24] for h in range(24)]
    total = sum(by_hour)
    if not total:
        return f"00{_DASH}24"
    need = _ACTIVE_MASS * total
    best_start, best_len = 0, 24
    end = 0
    mass = 0
    for start in range(24):  # two pointers over the doubled day: O(48)
        while end < start + 24 and mass < need:
            mass += by_hour[end % 24]
            end += 1
        if mass >= need and end - start < best_len:
            best_start, best_len = start, end - start
        mass -= by_hour[start]
    return f"{best_start:02d}{_DASH}{(best_start + best_len) % 24 or 24:02d}"


def _fmt_bytes(n: float) -> str:
    """Human byte count in decimal units.

    >>> _fmt_bytes(48_000_000), _fmt_bytes(512), _fmt_bytes(1_250)
    ('48.0 MB', '512 B', '1.2 KB')
    """
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1000.0
        if n < 1000 or unit == "TB":
            break
    return f"{n:.1f} {unit}"


def _fmt_num(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 10 else f"{x:.1f}".removesuffix(".0")


def _pct(share: float) -> str:
    return f"{share * 100:.1f}%" if share < 0.1 else f"{share * 100:.0f}%"
