"""Per-identity and peer-group baselines: what each identity normally does, in constant space.

One stateless, shared :class:`BaselineModel` holds the hyperparameters (river / scikit-learn
style); each identity (and each peer group) owns a compact mutable :class:`BaselineState`.
``learn_one`` and ``deviations`` are separate so the caller can keep anomalous events out of the
baseline (poisoning protection): score first, then learn only what it accepts.

:class:`BaselineModel` is composed from one piece per concern, each a slot-less class it
inherits (so a per-event call costs no extra indirection): :mod:`~.learning` (``learn_one``,
``observe``, ``taint``), :mod:`~.deviations` (``deviations``, ``current_rate``), :mod:`~.explain`
(the text of the strongest deviations), :mod:`~.merge` and :mod:`~.codec` (``to_bytes`` /
``from_bytes``). :mod:`~.layout` holds what they share: :class:`~.layout.BaselineState`,
:data:`~.layout.DEVIATIONS` and the indices into both.

What a state remembers (all bounded; ``to_bytes`` ≤ :attr:`BaselineModel.max_bytes`, 1,234 bytes
with the defaults, stored zero-elided: about 40 % less):

* exponentially weighted mean / variance of every numeric feature (half-life in events;
  volumes and resource counts only over the events that carry them),
* a time profile: 24 hours x (weekday, weekend) event counts,
* the request rate: EW mean / variance of log(events in the last ``burst_window_ms``), each
  event weighted by the time it stands for (1 / rate), so a burst does not teach its own rate,
* how often the identity fails, uses MFA, is delegated, and which sensitivity ranks it touches,
* per task (``Features.task``) and per clock hour: the running volume and distinct resources
  (a 64-bit linear-counting sketch), and EW mean / variance of completed tasks' and hours'
  totals, learned only from tasks and hours none of whose events was held back
  (:meth:`BaselineModel.taint`), so an attack does not teach its own bulk; aggregates are
  observed for *every* event (:meth:`BaselineModel.observe`), learned or not,
* a long-horizon EW mean / variance of log bytes_out (drift),
* Bloom filters of every counterparty written to (each party of a write) and of every step
  (previous call of the task -> this call), each with EW counts of how often one was new,
  and the last operation of the two running tasks,
* per categorical feature, ``cat_slots`` remembered values (hash, count, hour last seen) with
  least-frequently- then least-recently-used eviction, how often the feature is present, how
  often its value was new (novelty is discounted where it is the norm), and the name of the
  most used value (for explanations).

Counts are integers halved every ``half_life_events`` learned events: a decay that serialises
exactly (``to_bytes(from_bytes(b)) == b``), so a state can be written back after every event
without drift. Means and variances are float32 on the wire.

The deviation vector (:data:`DEVIATIONS`, each in [0, 1], high = unusual):

================  =========================================================================
dimension         meaning
================  =========================================================================
bytes_out         z-score of log bytes_out, high side only
bytes_in          z-score of log bytes_in, high side only
n_resources       z-score of the number of resources touched, high side only
sensitivity       the resource's rank is rare for the identity, more so the further it is above
                  its usual maximum (no hard ceiling without a directory)
failure           a failure where failures are rare
no_mfa            a logon without MFA where MFA is usual
chain_depth       delegated where delegation is rare, or not delegated where it is the norm
burst             current short-window request rate far above the usual rate
off_hours         this hour (weekday / weekend) is rare in the time profile
task_volume       bytes so far in this task (session) above the identity's usual task total
task_resources    distinct resources so far in this task above its usual per-task count
hour_volume       bytes so far in this clock hour above the identity's usual hourly total
drift             its days' mean bytes_out persistently above its long-horizon typical
                  (half-life ``drift_half_life_events``), in units of its usual day-to-day
                  change (a one-sided CUSUM of daily z-scores): a slow ramp, caught before it
                  has become the baseline
step              (previous operation in this task -> this operation) never taken by the
                  identity (a 256-bit Bloom filter), discounted by how often its steps are new:
                  familiar tools used in an unfamiliar order, as an agent steered by injected
                  content does
country … auth_…  one per :data:`~.features.CATEGORICAL` feature: first seen / rare
================  =========================================================================

z-scores map to ``1 - exp(-max(0, z - z_offset) / z_scale)``; shares (how often this value or
outcome was seen) map to ``exp(-share / rare_share)``, scaled by the evidence behind them
(``1 - exp(-n / evidence_events)``). An empty state deviates nowhere, so a new identity is
scored against its peer group's state instead (:func:`own_weight`, :func:`blend`).

Peer groups use the same class (``BaselineModel(cat_slots=16, scope="peer")``), one state per
:func:`peer_group_key`. Per event: ``rate = model.current_rate(own, f)``, ``model.deviations(own,
f)``, ``peer_model.deviations(peer, f, rate)``, ``blend(...)`` with ``model.own_weight(own)``;
then, for accepted events, ``model.learn_one(own, f)`` and ``peer_model.learn_one(peer, f,
rate)`` (the rate makes the group learn per-identity request rates, not the group's total).

>>> from pipeline.baselines.features import extract
>>> from pipeline.events.schemas import Event
>>> model = BaselineModel()
>>> state = model.new_state()
>>> def ev(i, country="DE", op="crm.read"):
...     return Event(uid=f"e{i}", class_uid=6003, activity_id=2,
...                  time_ms=1_767_261_600_000 + i * 600_000,  # Thursday 10:00 UTC onwards
...                  identity_uid="alice", identity_kind="human", country=country,
...                  operation=op, bytes_out=1000)
>>> for i in range(200):
...     model.learn_one(state, extract(ev(i)))
>>> dev, why = model.deviations(state, extract(ev(200, country="BR", op="crm.export")))
>>> round(float(dev[DEVIATION_INDEX["country"]]), 2), float(dev[DEVIATION_INDEX["bytes_out"]])
(0.99, 0.0)
>>> why[0].text
'country BR never seen (usually DE)'
>>> len(model.to_bytes(state)) <= model.max_bytes < 1250
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import msgspec
import numpy as np

from pipeline.baselines import kernel
from pipeline.baselines.codec import _NO_NAME, Codec, max_state_bytes
from pipeline.baselines.deviations import Scorer
from pipeline.baselines.features import CATEGORICAL_INDEX
from pipeline.baselines.layout import _DAY_MS, _MAX_HALF_LIFE, DEVIATION_INDEX, BaselineState
from pipeline.baselines.learning import Learner
from pipeline.baselines.merge import Merger
from pipeline.scores.explanations import Contribution

__all__ = [
    "BaselineModel",
    "blend",
    "blend_contributions",
    "blend_winners",
    "own_weight",
    "peer_group_key",
]


# --- module functions -------------------------------------------------------------------------


def own_weight(state: BaselineState, warmup_events: float) -> float:
    """Weight of an identity's own baseline vs its peer group's: 0 when new, → 1 with evidence.

    ``1 - exp(-3 n / warmup_events)``: ≈0.95 once ``warmup_events`` events were learned.

    >>> s = BaselineModel().new_state()
    >>> own_weight(s, 50)
    0.0
    >>> s.n = 50
    >>> round(own_weight(s, 50), 2)
    0.95
    """
    if warmup_events <= 0:
        return 1.0
    return 1.0 - math.exp(-3.0 * state.activity()[0] / warmup_events)


def blend(
    own_dev: Sequence[float] | np.ndarray, peer_dev: Sequence[float] | np.ndarray, w_own: float
) -> np.ndarray:
    """Cold-start mix of two deviation vectors: ``w_own * own + (1 - w_own) * peer``.

    >>> blend([1.0, 0.0], [0.0, 0.5], 0.25).tolist()
    [0.25, 0.375]
    """
    own, peer = np.asarray(own_dev, dtype=np.float64), np.asarray(peer_dev, dtype=np.float64)
    if own.shape != peer.shape:
        raise ValueError("deviation vectors of different lengths")
    return w_own * own + (1.0 - w_own) * peer


def blend_contributions(
    own: Sequence[Contribution],
    peer: Sequence[Contribution],
    blended: Sequence[float] | np.ndarray,
    w_own: float,
    limit: int = 5,
    threshold: float = 0.3,
) -> list[Contribution]:
    """Explain a :func:`blend`-ed vector: per feature, the side that contributed more.

    A kept contribution's ``weight`` becomes the blended deviation; features whose blended
    deviation is below ``threshold`` are dropped. Strongest first, at most ``limit``.

    >>> from pipeline.baselines.layout import DEVIATIONS
    >>> own = [Contribution("country", "first_seen", 0.9, "BR", "usually DE", "own text")]
    >>> peer = [Contribution("country", "peer", 0.8, "BR", "usually DE", "peer text")]
    >>> blended = [0.0] * len(DEVIATIONS)
    >>> blended[DEVIATION_INDEX["country"]] = 0.82
    >>> [(c.text, c.weight) for c in blend_contributions(own, peer, blended, 0.2)]
    [('peer text', 0.82)]
    """
    best: dict[str, tuple[float, Contribution]] = {}
    for side, scale in ((own, w_own), (peer, 1.0 - w_own)):
        for c in side:
            share = c.weight * scale
            if c.feature not in best or share > best[c.feature][0]:
                best[c.feature] = (share, c)
    out: list[Contribution] = []
    for feature, (_, c) in best.items():
        i = DEVIATION_INDEX.get(feature)
        weight = float(blended[i]) if i is not None and i < len(blended) else c.weight
        if weight >= threshold:
            out.append(msgspec.structs.replace(c, weight=weight))
    out.sort(key=lambda c: -c.weight)
    return out[:limit]


def blend_winners(
    own_top: Sequence[int],
    own_dev: Sequence[float] | np.ndarray,
    peer_top: Sequence[int],
    peer_dev: Sequence[float] | np.ndarray,
    blended: Sequence[float] | np.ndarray,
    w_own: float,
    limit: int = 5,
    threshold: float = 0.3,
) -> list[tuple[bool, int, float]]:
    """What :func:`blend_contributions` keeps, from the numbers alone: ``(own side?,
    dimension, blended weight)``, in its order, for contributions explained at ``own_top`` /
    ``peer_top`` (dimensions, each side's strongest first) with weights ``own_dev[dim]`` /
    ``peer_dev[dim]``. Lets the caller explain only the kept ones.

    >>> from pipeline.baselines.layout import DEVIATIONS
    >>> c = DEVIATION_INDEX["country"]
    >>> own, peer, blended = ([0.0] * len(DEVIATIONS) for _ in range(3))
    >>> own[c], peer[c], blended[c] = 0.9, 0.8, 0.82
    >>> blend_winners([c], own, [c], peer, blended, 0.2) == [(False, c, 0.82)]
    True
    """
    best: dict[int, tuple[float, bool]] = {}
    for dim in own_top:
        best[dim] = (float(own_dev[dim]) * w_own, True)
    scale = 1.0 - w_own
    for dim in peer_top:
        share = float(peer_dev[dim]) * scale
        b = best.get(dim)
        if b is None or share > b[0]:
            best[dim] = (share, False)
    out: list[tuple[bool, int, float]] = []
    for dim, (_, own) in best.items():
        weight = float(blended[dim])
        if weight >= threshold:
            out.append((own, dim, weight))
    out.sort(key=lambda w: -w[2])
    return out[:limit]


def peer_group_key(event_or_features: Any, directory_group: str | None = None) -> str:
    """The peer baseline an event is compared with: ``<kind>:<directory group>``, or without
    one, ``<kind>:svc:<service>`` - identities of a kind that use the same service (what they
    actually do), and ``<kind>:default`` for events without a service.

    Takes an :class:`~pipeline.events.schemas.Event` (anything with ``identity_kind``, ``service``).

    >>> from pipeline.events.schemas import Event
    >>> e = Event(uid="e", class_uid=3002, activity_id=1, time_ms=0, identity_uid="a",
    ...           identity_kind="human", service="crm")
    >>> peer_group_key(e), peer_group_key(e, "finance")
    ('human:svc:crm', 'human:finance')
    """
    kind = event_or_features.identity_kind
    if directory_group:
        return f"{kind}:{directory_group}"
    service = getattr(event_or_features, "service", None)
    return f"{kind}:svc:{service}" if service else f"{kind}:default"


# --- the model --------------------------------------------------------------------------------


class BaselineModel(Learner, Scorer, Merger, Codec):
    """Hyperparameters and algorithms of a baseline; shared and stateless (one per scope).

    Parameters
    ----------
    half_life_events: events after which old behaviour weighs half (means, counts); ≤ 16384.
    cat_slots: values remembered per categorical feature (identities 6; peer groups ~16).
    ttl_ms: a state that learned nothing for this long is :meth:`expired` (default 90 days).
    warmup_events: evidence at which the own baseline dominates the peer's (:meth:`own_weight`).
    burst_window_ms: time constant of the short-window request counter.
    evidence_events: observations after which novelty / rarity counts ~63 % (``1 - e^-1``).
    rare_share: a value / outcome seen this share of the time scores ``e^-1`` ≈ 0.37.
    z_offset, z_scale: ``1 - exp(-max(0, z - z_offset) / z_scale)`` maps z-scores to [0, 1]
        (an exponential tail: ``-log(1 - deviation)`` grows linearly with z, which
        :func:`pipeline.detection.surprise` reads back without a cap).
    explain_threshold: deviations at or above this get a :class:`Contribution`.
    max_contributions: at most this many contributions, strongest first.
    scope: ``"identity"`` or ``"peer"``: only the wording of explanations changes, and a peer
        model's contributions have kind ``peer``; peer states neither observe tasks nor hours.
    drift_half_life_events: half-life of the long-horizon bytes_out statistic (``drift``).

    A state belongs to the model (``cat_slots``) that created or decoded it.

    >>> BaselineModel(cat_slots=16, scope="peer").max_bytes > BaselineModel().max_bytes
    True
    """

    __slots__ = (
        "_alpha_keep",
        "_alpha_slow",
        "_k",
        "_tau",
        "_who",
        "burst_window_ms",
        "cat_slots",
        "drift_half_life_events",
        "evidence_events",
        "explain_threshold",
        "half_life_events",
        "max_bytes",
        "max_contributions",
        "rare_share",
        "scope",
        "ttl_ms",
        "warmup_events",
        "z_offset",
        "z_scale",
    )

    def __init__(
        self,
        half_life_events: int = 1000,
        cat_slots: int = 6,
        ttl_ms: int = 90 * _DAY_MS,
        warmup_events: int = 50,
        burst_window_ms: float = 60_000.0,
        evidence_events: float = 10.0,
        rare_share: float = 0.03,
        z_offset: float = 1.0,
        z_scale: float = 1.0,
        explain_threshold: float = 0.3,
        max_contributions: int = 5,
        scope: Literal["identity", "peer"] = "identity",
        drift_half_life_events: int = 8000,
    ) -> None:
        if not 1 <= half_life_events <= _MAX_HALF_LIFE:
            raise ValueError(f"half_life_events must be in 1..{_MAX_HALF_LIFE}")
        if not 1 <= cat_slots < _NO_NAME:
            raise ValueError("cat_slots must be in 1..254")
        if min(burst_window_ms, evidence_events, rare_share, z_scale) <= 0:
            raise ValueError("burst_window_ms, evidence_events, rare_share, z_scale must be > 0")
        if scope not in ("identity", "peer"):
            raise ValueError("scope must be 'identity' or 'peer'")
        self.half_life_events = half_life_events
        self.cat_slots = cat_slots
        self.ttl_ms = ttl_ms
        self.warmup_events = warmup_events
        self.burst_window_ms = burst_window_ms
        self.evidence_events = evidence_events
        self.rare_share = rare_share
        self.z_offset = z_offset
        self.z_scale = z_scale
        self.explain_threshold = explain_threshold
        self.max_contributions = max_contributions
        self.scope = scope
        if drift_half_life_events <= half_life_events:
            raise ValueError("drift_half_life_events must exceed half_life_events")
        self.drift_half_life_events = drift_half_life_events
        # Derived once, so the per-event paths only multiply.
        self._alpha_keep = 0.5 ** (1.0 / half_life_events)  # EW weight kept per event
        self._alpha_slow = 0.5 ** (1.0 / drift_half_life_events)
        self._tau = float(burst_window_ms)
        self._k = float(evidence_events)
        self._who = "identity" if scope == "identity" else "peer group"
        #: Upper bound of ``len(to_bytes(state))``.
        self.max_bytes = max_state_bytes(cat_slots)

    def kernel_params(self) -> np.ndarray:
        """The hyperparameters the round kernels (:func:`~.kernel.score`,
        :func:`~.kernel.learn_pair`) read, as one vector (:data:`~.kernel.P_K` ...).

        >>> m = BaselineModel(cat_slots=16)
        >>> int(m.kernel_params()[kernel.P_K])
        16
        """
        p = np.empty(kernel.P_WIDTH)
        p[kernel.P_K] = self.cat_slots
        p[kernel.P_IDENTITY] = self.scope == "identity"
        p[kernel.P_EVIDENCE] = self._k
        p[kernel.P_RARE] = self.rare_share
        p[kernel.P_Z0] = self.z_offset
        p[kernel.P_ZS] = self.z_scale
        p[kernel.P_TAU] = self._tau
        p[kernel.P_THR] = self.explain_threshold
        p[kernel.P_LIMIT] = self.max_contributions
        p[kernel.P_HALF_LIFE] = self.half_life_events
        p[kernel.P_AK] = self._alpha_keep
        p[kernel.P_ASLOW] = self._alpha_slow
        return p

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments (scikit-learn convention).

        >>> BaselineModel(cat_slots=16).get_params()["cat_slots"]
        16
        """
        names = (
            "half_life_events",
            "cat_slots",
            "ttl_ms",
            "warmup_events",
            "burst_window_ms",
            "evidence_events",
            "rare_share",
            "z_offset",
            "z_scale",
            "explain_threshold",
            "max_contributions",
            "scope",
            "drift_half_life_events",
        )
        return {name: getattr(self, name) for name in names}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"BaselineModel({args})"

    # --- lifecycle ----------------------------------------------------------------------------

    def new_state(self) -> BaselineState:
        """An empty state: no evidence, every deviation 0.

        >>> BaselineModel().new_state().n
        0
        """
        return BaselineState(self.cat_slots)

    def evidence(self, state: BaselineState) -> float:
        """Events learned by ``state`` (not decayed): the cold-start evidence.

        >>> BaselineModel().evidence(BaselineModel().new_state())
        0.0
        """
        return float(state.n)

    def own_weight(self, state: BaselineState) -> float:
        """:func:`own_weight` with this model's ``warmup_events``.

        >>> BaselineModel().own_weight(BaselineModel().new_state())
        0.0
        """
        return own_weight(state, self.warmup_events)

    def expired(self, state: BaselineState, now_ms: int) -> bool:
        """True when the state learned nothing for longer than ``ttl_ms`` (or never learned).

        >>> m = BaselineModel(ttl_ms=1000)
        >>> s = m.new_state(); s.n, s.last_ms = 1, 5000
        >>> m.expired(s, 5900), m.expired(s, 6001)
        (False, True)
        """
        return state.n == 0 or now_ms - state.last_ms > self.ttl_ms

    def known_values(self, state: BaselineState, feature: str) -> list[tuple[int, int, int]]:
        """The remembered values of one categorical feature: ``(hash, count, hour)``, most
        used first (``hour`` = hours since the epoch when last seen).

        >>> m = BaselineModel()
        >>> m.known_values(m.new_state(), "country")
        []
        """
        k = self.cat_slots
        base = CATEGORICAL_INDEX[feature] * k
        rows = [
            (state.slot_hash[j], state.slot_count[j], state.slot_hour[j])
            for j in range(base, base + k)
            if state.slot_hash[j]
        ]
        rows.sort(key=lambda r: (-r[1], -r[2]))
        return rows
