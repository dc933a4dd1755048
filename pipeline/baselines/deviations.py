"""Deviations: how unusual one event is for a baseline state (the per-event scoring arithmetic).

:class:`Scorer` is the scoring piece of :class:`~pipeline.baselines.baselines.BaselineModel`:
``deviations`` fills the :data:`~.layout.DEVIATIONS` vector (z-scores, shares, the time
profile, novelty, task / hour totals, drift; the compiled :func:`~.kernel.deviations`)
without changing the state, and hands its strongest dimensions to
:class:`~.explain.Explainer`; ``current_rate`` is the short-window request rate it compares.
"""

from __future__ import annotations

import numpy as np

from pipeline.baselines import kernel
from pipeline.baselines.explain import Explainer
from pipeline.baselines.features import Features
from pipeline.baselines.layout import BaselineState
from pipeline.baselines.learning import feature_arrays
from pipeline.scores.explanations import Contribution

__all__ = ["Scorer"]


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
        return float(kernel.current_rate(state.fv, state.iv, features.time_ms, self._tau))

    def deviations(
        self, state: BaselineState, features: Features, rate: float | None = None
    ) -> tuple[np.ndarray, list[Contribution]]:
        """How unusual ``features`` is for ``state``: the :data:`DEVIATIONS` vector in [0, 1]
        (float64), and explanations of its strongest dimensions (≥ ``explain_threshold``).

        Does not change ``state``. ``rate``: see :meth:`current_rate` (for peer states).

        >>> from pipeline.baselines.baselines import BaselineModel
        >>> from pipeline.baselines.features import extract
        >>> from pipeline.baselines.layout import DEVIATIONS
        >>> from pipeline.events.schemas import Event
        >>> m = BaselineModel()
        >>> dev, why = m.deviations(m.new_state(), extract(Event(
        ...     uid="e", class_uid=3002, activity_id=1, time_ms=0, identity_uid="a",
        ...     identity_kind="human", country="DE")))
        >>> len(dev) == len(DEVIATIONS), float(dev.max()), why
        (True, 0.0, [])
        """
        x, hs = feature_arrays(features)
        f = features
        r = kernel.NO_RATE if rate is None else rate
        dev, top = kernel.deviations(
            state.fv, state.iv, state.slot_hash, state.slot_count, x, hs, f.time_ms,
            f.hour_of_week, f.sensitivity_rank, f.mfa, f.task, f.volume, r, self.cat_slots,
            self.scope == "identity", self._k, self.rare_share, self.z_offset, self.z_scale,
            self._tau, self.explain_threshold, self.max_contributions,
        )  # fmt: skip
        if not len(top):  # the common case: nothing to explain
            return dev, []
        if rate is None:
            rate = self.current_rate(state, features)
        elif rate < 1.0:
            rate = 1.0
        return dev, [self._explain(state, features, i, float(dev[i]), rate)
                     for i in top.tolist()]  # fmt: skip
