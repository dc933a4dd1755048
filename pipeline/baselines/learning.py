"""Learning: how one event folds into a baseline state (the per-event hot path).

:class:`Learner` is the learning piece of :class:`~pipeline.baselines.baselines.BaselineModel`:
``learn_one`` (EW means / variances, time profile, rate, categorical slots, counterparties),
``observe`` (every event's task and hour totals, learned or not) and ``taint``. The
arithmetic is the compiled :mod:`~.kernel`; this keeps what needs Python objects (the
names of the most used values, for explanations).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.baselines import kernel
from pipeline.baselines.explain import _OP_NAMES, drift_text, remember_operation
from pipeline.baselines.features import (
    CATEGORICAL_INDEX,
    ROW_FLOATS,
    ROW_INTS,
    FeatureRows,
    Features,
)
from pipeline.baselines.layout import (
    _I_TAINT,
    _N_CAT,
    _N_HS,
    _NAME_BYTES,
    _TAINT_DRIFT,
    _TAINT_HOUR,
    _TAINT_TASK,
    BaselineState,
    _shorten,
)

__all__ = ["Learner", "feature_arrays", "round_arrays"]

_last: tuple[object, np.ndarray, np.ndarray] = (None, np.zeros(0), np.zeros(0, dtype=np.int64))

_C_OPERATION = CATEGORICAL_INDEX["operation"]


def feature_arrays(features: Features) -> tuple[np.ndarray, np.ndarray]:
    """``features.numeric`` and the hashes as the kernel's arrays (float64, int64): the
    categorical hashes, then a write's further parties (0 = none).

    One event is observed, scored and learned by up to two states in a row: the arrays of
    the latest one are kept (one tuple, replaced whole: safe to read from any thread).
    """
    global _last
    last = _last
    if last[0] is not features:
        hs = np.zeros(_N_HS, dtype=np.int64)
        hs[:_N_CAT] = features.cat_hashes
        extra = features.party_hashes
        if extra:
            hs[_N_CAT : _N_CAT + len(extra)] = extra[: _N_HS - _N_CAT]
        last = _last = (features, np.array(features.numeric, dtype=np.float64), hs)
    return last[1], last[2]


if (kernel.X_WIDTH, kernel.E_WIDTH, kernel.E_T) != (ROW_FLOATS, ROW_INTS, _N_HS):
    raise ImportError("features.FeatureRows and the round kernels disagree on the row layout")


def round_arrays(rows: FeatureRows) -> tuple[np.ndarray, np.ndarray]:
    """Several events' features (:func:`~.features.extract_rows`) as the round kernels'
    matrices (:func:`~.kernel.score`, :func:`~.kernel.learn_pair`), one row per event: ``X``
    (float64) ``numeric`` then ``volume``; ``E`` (int64) the hashes of :func:`feature_arrays`,
    then ``time_ms``, ``hour_of_week``, ``sensitivity_rank``, ``mfa``, ``task``
    (:data:`~.kernel.E_T` ...).

    >>> from pipeline.baselines.features import extract_rows
    >>> from pipeline.events.schemas import Event
    >>> rows = extract_rows([Event(uid="e", class_uid=3002, activity_id=1, time_ms=0,
    ...                            identity_uid="a", identity_kind="human", country="DE")])
    >>> X, E = round_arrays(rows)
    >>> x, hs = feature_arrays(rows.features(0))
    >>> bool((X[0, :-1] == x).all() and (E[0, :_N_HS] == hs).all()), int(E[0, kernel.E_T])
    (True, 0)
    """
    n = len(rows)
    # The rows are flat already: one conversion per matrix.
    X = np.fromiter(rows.xs, dtype=np.float64, count=n * ROW_FLOATS)
    E = np.fromiter(rows.es, dtype=np.int64, count=n * ROW_INTS)
    return X.reshape(n, ROW_FLOATS), E.reshape(n, ROW_INTS)


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
        x, hs = feature_arrays(features)
        named = kernel.learn(
            state.fv, state.iv, state.slot_hash, state.slot_count, state.slot_hour, x, hs,
            features.time_ms, features.hour_of_week, features.sensitivity_rank, features.mfa,
            kernel.NO_RATE if rate is None else rate, self.cat_slots, self.half_life_events,
            self.scope == "identity", self._alpha_keep, self._alpha_slow, self._tau,
        )  # fmt: skip
        if named:  # a new most used value: remember its name (explanations only)
            self.note_names(state, features.cat_values, named)

    @staticmethod
    def note_names(state: BaselineState, values: Sequence[str | None], named: int) -> None:
        """Remember the names of the features whose most used value just changed (a bit per
        feature, as :func:`~.kernel.learn` returns them). ``values``: the event's
        ``Features.cat_values``."""
        for c in range(_N_CAT):
            if named >> c & 1:
                value = values[c]
                state.name_text[c] = _shorten(value, _NAME_BYTES) if value else None

    def observe(self, state: BaselineState, features: Features) -> None:
        """Count one event into its task's and clock hour's running totals (every event,
        learned or not: an attack's calls must add up). Call it before :meth:`deviations`.

        A task or hour that ends (another one starts) is folded into the baseline of
        completed totals unless it held back an event (:meth:`taint`). Two tasks may
        interleave without ending each other.

        >>> import math
        >>> from pipeline.baselines.layout import _A_TB_MEAN, _A_TW
        >>> from pipeline.baselines.baselines import BaselineModel
        >>> from pipeline.baselines.features import extract
        >>> from pipeline.events.schemas import Event
        >>> m = BaselineModel()
        >>> s = m.new_state()
        >>> for task in ("t1", "t1", "t2", "t3"):
        ...     m.observe(s, extract(Event(uid="e", class_uid=6003, activity_id=2, time_ms=0,
        ...                                identity_uid="a", identity_kind="agent",
        ...                                session_uid=task, bytes_out=1000)))
        >>> float(s.agg[_A_TW]), round(math.expm1(s.agg[_A_TB_MEAN]))  # t1 ended: 2 calls, 2000 B
        (1.0, 2000)
        """
        if self.scope != "identity":
            return
        x, hs = feature_arrays(features)
        kernel.observe(state.fv, state.iv, x, hs, features.time_ms, features.task,
                       features.volume)  # fmt: skip
        self.remember_operation(features)

    def remember_operation(self, features: Features) -> None:
        """Note the name of the event's operation (step explanations): the Python half of
        :meth:`observe`, for callers that observe in a kernel of their own."""
        if self.scope != "identity":
            return
        op = features.cat_hashes[_C_OPERATION]
        if op and op not in _OP_NAMES:
            remember_operation(op, features.cat_values[_C_OPERATION])

    def remember_operations(self, rows: FeatureRows) -> None:
        """:meth:`remember_operation` for every event of ``rows``."""
        if self.scope != "identity":
            return
        for hashes, values in zip(rows.hashes, rows.values, strict=True):
            op = hashes[_C_OPERATION]
            if op and op not in _OP_NAMES:
                remember_operation(op, values[_C_OPERATION])

    def drift_report(self, state: BaselineState) -> str | None:
        """Once per UTC day that closed with the identity's volume drift above the line: the
        explanation, else None. Drift is a fact about days, not about the event that happens
        to come first after one; reported per event it would be judged among all events and
        lost in them (a busy identity's every call carries it)."""
        if not state.iv.item(_I_TAINT) & _TAINT_DRIFT:  # every event: no numpy scalar
            return None
        state.iv[_I_TAINT] &= ~_TAINT_DRIFT
        return drift_text(state)[2]

    def taint(self, state: BaselineState) -> None:
        """The event just observed was held back (not learned): its task's and hour's totals
        must not become the baseline of normal totals."""
        state.iv[_I_TAINT] |= _TAINT_TASK | _TAINT_HOUR
