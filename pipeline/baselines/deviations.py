"""Deviations: how unusual one event is for a baseline state (the per-event scoring arithmetic).

:class:`Scorer` is the scoring piece of :class:`~pipeline.baselines.baselines.BaselineModel`:
``deviations`` fills the :data:`~.layout.DEVIATIONS` vector (z-scores, shares, the time
profile, novelty, task / hour totals, drift) without changing the state, and hands its
strongest dimensions to :class:`~.explain.Explainer`; ``current_rate`` is the short-window
request rate it compares.
"""

from __future__ import annotations

import math
from typing import Final

from pipeline.baselines.explain import Explainer
from pipeline.baselines.features import Features
from pipeline.baselines.layout import (
    _A_CP_NEW,
    _A_CP_SEEN,
    _A_CUSUM,
    _A_HB_MEAN,
    _A_HB_VAR,
    _A_HOUR_BYTES,
    _A_HW,
    _A_TASK_BYTES,
    _A_TB_MEAN,
    _A_TB_VAR,
    _A_TR_MEAN,
    _A_TR_VAR,
    _A_TW,
    _BUCKET,
    _C_COUNTERPARTY,
    _D_BURST,
    _D_CAT0,
    _D_CHAIN,
    _D_DRIFT,
    _D_FAIL,
    _D_HOUR_VOL,
    _D_HOURS,
    _D_NOMFA,
    _D_SENS,
    _D_TASK_RES,
    _D_TASK_VOL,
    _DRIFT_H,
    _N_BUCKETS,
    _N_DEV,
    _X_BYTES_OUT,
    _X_CHAIN,
    _X_FAIL,
    _ZSPEC,
    BaselineState,
    _bloom_has,
    _distinct,
    _usual_max,
)
from pipeline.scores.explanations import Contribution

__all__ = ["Scorer"]

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


class Scorer(Explainer):
    """``deviations`` / ``current_rate`` of a baseline model; reads only the attributes below
    (and explains with :class:`~.explain.Explainer`)."""

    __slots__ = ()
    cat_slots: int
    explain_threshold: float
    max_contributions: int
    rare_share: float
    scope: str
    z_offset: float
    z_scale: float
    _k: float
    _tau: float

    def current_rate(self, state: BaselineState, features: Features) -> float:
        """Events in the short window ending at this event, this event included (≥ 1).

        Call it on the identity's own state before learning the event, and pass it as
        ``rate=`` to the peer state's :meth:`deviations` / :meth:`learn_one`: the peer group
        then learns and compares *per-identity* rates, not the whole group's.

        >>> from pipeline.baselines.baselines import BaselineModel
        >>> m = BaselineModel()
        >>> m.current_rate(m.new_state(), Features("a", "human", 0, 0, (0.0,) * 7, (0,) * 12,
        ...                                        (None,) * 12, "e", 0))
        1.0
        """
        if state.n == 0:
            return 1.0
        dt = features.time_ms - state.last_ms
        if dt <= 0:  # same millisecond or out of order: nothing to decay
            return state.rate_c + 1.0
        return state.rate_c * math.exp(-dt / self._tau) + 1.0

    def deviations(
        self, state: BaselineState, features: Features, rate: float | None = None
    ) -> tuple[list[float], list[Contribution]]:
        """How unusual ``features`` is for ``state``: the :data:`DEVIATIONS` vector in [0, 1],
        and explanations of its strongest dimensions (≥ ``explain_threshold``).

        Does not change ``state``. ``rate``: see :meth:`current_rate` (for peer states).

        >>> from pipeline.baselines.baselines import BaselineModel
        >>> from pipeline.baselines.features import extract
        >>> from pipeline.baselines.layout import DEVIATIONS
        >>> from pipeline.events.schemas import Event
        >>> m = BaselineModel()
        >>> dev, why = m.deviations(m.new_state(), extract(Event(
        ...     uid="e", class_uid=3002, activity_id=1, time_ms=0, identity_uid="a",
        ...     identity_kind="human", country="DE")))
        >>> len(dev) == len(DEVIATIONS), max(dev), why
        (True, 0.0, [])
        """
        dev = [0.0] * _N_DEV
        n = state.n
        if n == 0:
            return dev, []
        exp = math.exp
        k = self._k
        rare = self.rare_share
        z0 = self.z_offset
        zs = self.z_scale
        x = features.numeric
        mean = state.mean
        var = state.var
        prior = 1.0 + _VAR_PRIOR_EVENTS / (n + 1)
        conf_n = 1.0 - exp(-n / k)

        weights = state.w
        for di, xi, g, floor in _ZSPEC:
            d = x[xi] - mean[xi]
            if d > 0.0 and weights[g]:  # high side only, and only once there is a baseline
                z = d / math.sqrt(var[xi] + floor * (1.0 + _VAR_PRIOR_EVENTS / (weights[g] + 1)))
                if z > z0:
                    dev[di] = 1.0 - exp((z0 - z) / zs)

        # Outcomes: how often the identity showed this outcome before (share → rarity).
        if x[_X_FAIL]:
            dev[_D_FAIL] = conf_n * exp(-mean[_X_FAIL] / rare)
        if features.mfa == 0 and state.mfa_known:
            share = state.mfa_no / state.mfa_known
            dev[_D_NOMFA] = (1.0 - exp(-state.mfa_known / k)) * exp(-share / rare)
        chain = mean[_X_CHAIN]
        dev[_D_CHAIN] = conf_n * exp(-(chain if x[_X_CHAIN] else 1.0 - chain) / rare)
        rank = features.sensitivity_rank
        if rank:
            sens = state.sens
            total = sum(sens)
            if total:
                # How rare (smoothed share of resource events at this rank or above) and how
                # far above the usual maximum: surprise in nats, read back unbounded.
                share = sum(sens[rank:]) / total
                if share < rare * _SHARE_NEGLIGIBLE:
                    above = max(0, rank - _usual_max(sens, rare))
                    nats = -math.log1p(-0.999 * exp(-share / rare)) + _SENS_STEP_NATS * above
                    dev[_D_SENS] = (1.0 - exp(-total / k)) * (1.0 - exp(-nats))

        if rate is None:
            rate = self.current_rate(state, features)
        elif rate < 1.0:  # a rate includes the event itself
            rate = 1.0
        d = math.log(rate) - state.rate_mean
        if d > 0.0:
            z = d / math.sqrt(state.rate_var + _RATE_VAR_FLOOR * prior)
            if z > z0:
                dev[_D_BURST] = 1.0 - exp((z0 - z) / zs)

        a = state.agg
        if a[_A_TW] >= _AGG_MIN_W and features.task and features.task == state.task_key:
            sd = math.sqrt(a[_A_TB_VAR] + _AGG_VAR_FLOOR)
            z = (math.log1p(a[_A_TASK_BYTES]) - a[_A_TB_MEAN]) / sd
            if z > z0:
                dev[_D_TASK_VOL] = 1.0 - exp((z0 - z) / zs)
            z = (math.log1p(_distinct(state.task_bits)) - a[_A_TR_MEAN]) / math.sqrt(
                a[_A_TR_VAR] + _AGG_VAR_FLOOR
            )
            if z > z0:
                dev[_D_TASK_RES] = 1.0 - exp((z0 - z) / zs)
        if a[_A_HW] >= _AGG_MIN_W and features.volume:
            z = (math.log1p(a[_A_HOUR_BYTES]) - a[_A_HB_MEAN]) / math.sqrt(
                a[_A_HB_VAR] + _AGG_VAR_FLOOR
            )
            if z > z0:
                dev[_D_HOUR_VOL] = 1.0 - exp((z0 - z) / zs)
        if a[_A_CUSUM] > _DRIFT_H and x[_X_BYTES_OUT]:
            dev[_D_DRIFT] = 1.0 - exp((_DRIFT_H - a[_A_CUSUM]) / (0.1 * _DRIFT_H))

        recent = state.recent
        if recent:
            hours = state.hours
            b = _BUCKET[features.hour_of_week]
            day = b - b % 24
            smooth = (
                hours[b]
                + _NEIGHBOUR_W * (hours[day + (b + 1) % 24] + hours[day + (b - 1) % 24])
                + _OTHER_DAY_W * hours[(b + 24) % 48]
            )
            # This bucket's share relative to a uniform week, with a uniform prior.
            q = (smooth * _HOUR_NORM + _HOUR_PRIOR) / (recent + _HOUR_PRIOR)
            dev[_D_HOURS] = exp(-q / _HOUR_SHARE_SCALE)

            kk = self.cat_slots
            present = state.present
            novel = state.novel
            name_slot = state.name_slot
            sh = state.slot_hash
            base = -kk
            for c, h in enumerate(features.cat_hashes):
                base += kk
                if not h:
                    continue
                named = name_slot[c]
                if named >= 0 and sh[named] == h:  # the usual value: nothing unusual
                    continue
                seen = present[c]
                if not seen:
                    continue
                # The chance of this value: its own share if remembered, plus the share of
                # events that brought a new value (novelty is unremarkable where it is common).
                share = novel[c] / seen
                if share > _SHARE_NEGLIGIBLE * rare:  # exp(-share / rare) < 1e-9: skip lookup
                    continue
                try:
                    share += state.slot_count[sh.index(h, base, base + kk)] / seen
                except ValueError:
                    pass
                dev[_D_CAT0 + c] = (
                    exp(-share / rare)
                    * (1.0 - exp(-seen / k))  # evidence for this feature
                    # Usually absent? Not for counterparties: only writes have one, and their
                    # novelty is judged among the identity's writes.
                    * (1.0 if c == _C_COUNTERPARTY
                       else 1.0 - exp(-min(1.0, seen / recent) / _PRESENCE_SCALE))
                )  # fmt: skip

        cp = features.cat_hashes[_C_COUNTERPARTY]
        if cp and self.scope == "identity":
            writes = a[_A_CP_SEEN]
            if writes and not _bloom_has(state.cp_bloom, cp):
                share = a[_A_CP_NEW] / writes  # how often its writes went to someone new
                dev[_D_CAT0 + _C_COUNTERPARTY] = exp(-share / rare) * (1.0 - exp(-writes / k))
            else:
                dev[_D_CAT0 + _C_COUNTERPARTY] = 0.0

        thr = self.explain_threshold
        if max(dev) < thr:  # the common case: nothing to explain
            return dev, []
        top = [i for i in range(_N_DEV) if dev[i] >= thr]
        top.sort(key=dev.__getitem__, reverse=True)
        return dev, [
            self._explain(state, features, i, dev[i], rate) for i in top[: self.max_contributions]
        ]
