"""Per-identity and peer-group baselines: what each identity normally does, in constant space.

One stateless, shared :class:`BaselineModel` holds the hyperparameters (river / scikit-learn
style); each identity (and each peer group) owns a compact mutable :class:`BaselineState`.
``learn_one`` and ``deviations`` are separate so the caller can keep anomalous events out of the
baseline (poisoning protection): score first, then learn only what it accepts.

What a state remembers (all bounded; ``to_bytes`` ≤ :attr:`BaselineModel.max_bytes`, 1,166 bytes
with the defaults):

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
drift             bytes_out persistently above the identity's long-horizon typical (half-life
                  ``drift_half_life_events``; a one-sided CUSUM): a slow ramp, caught before
                  it has become the baseline
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
>>> round(dev[DEVIATION_INDEX["country"]], 2), dev[DEVIATION_INDEX["bytes_out"]]
(0.99, 0.0)
>>> why[0].text
'country BR never seen (usually DE)'
>>> len(model.to_bytes(state)) <= model.max_bytes < 1200
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final, Literal

import msgspec

from pipeline.baselines.codec import (
    _NO_NAME,
    Codec,
    max_state_bytes,
)
from pipeline.baselines.explain import Explainer
from pipeline.baselines.features import (
    CATEGORICAL_INDEX,
    Features,
)
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
    _DAY_MS,
    _DRIFT_H,
    _DRIFT_MIN_W,
    _DRIFT_SLACK,
    _GROUPS,
    _HOUR_MS,
    _MAX_HALF_LIFE,
    _N_BUCKETS,
    _N_DEV,
    _NAME_BYTES,
    _TAINT_HOUR,
    _TAINT_TASK,
    _TAINT_TASK2,
    _X_BYTES_OUT,
    _X_CHAIN,
    _X_FAIL,
    _X_NRES,
    _ZSPEC,
    DEVIATION_INDEX,
    BaselineState,
    _bloom_add,
    _bloom_has,
    _distinct,
    _halve,
    _shorten,
    _usual_max,
)  # fmt: skip
from pipeline.baselines.merge import Merger
from pipeline.scores.explanations import Contribution

__all__ = [
    "BaselineModel",
    "blend",
    "blend_contributions",
    "own_weight",
    "peer_group_key",
]

_RATE_VAR_FLOOR: Final = 0.25  # log events/min: sd 0.5 ≈ x1.6
_AGG_VAR_FLOOR: Final = 0.25  # log bytes: sd 0.5 ≈ x1.6 between one task's total and another's
_AGG_MIN_W: Final = 3.0  # completed tasks / hours before their totals are a baseline
_AGG_HALF_LIFE: Final = 100.0  # completed tasks / hours after which old totals weigh half
_SENS_STEP_NATS: Final = 1.5  # surprise per sensitivity rank above the usual maximum
_AGG_KEEP: Final = 0.5 ** (1.0 / _AGG_HALF_LIFE)
_C_RESOURCE: Final = CATEGORICAL_INDEX["resource"]
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
_CHURN_MIN: Final = 20  # events of a feature before "most of its values are new" is trusted


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
    return 1.0 - math.exp(-3.0 * state.n / warmup_events)


def blend(own_dev: Sequence[float], peer_dev: Sequence[float], w_own: float) -> list[float]:
    """Cold-start mix of two deviation vectors: ``w_own * own + (1 - w_own) * peer``.

    >>> blend([1.0, 0.0], [0.0, 0.5], 0.25)
    [0.25, 0.375]
    """
    w_peer = 1.0 - w_own
    return [w_own * o + w_peer * p for o, p in zip(own_dev, peer_dev, strict=True)]


def blend_contributions(
    own: Sequence[Contribution],
    peer: Sequence[Contribution],
    blended: Sequence[float],
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
        weight = blended[i] if i is not None and i < len(blended) else c.weight
        if weight >= threshold:
            out.append(msgspec.structs.replace(c, weight=weight))
    out.sort(key=lambda c: -c.weight)
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


class BaselineModel(Explainer, Merger, Codec):
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
        :func:`pipeline.scores.scoring.surprise` reads back without a cap).
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

    def current_rate(self, state: BaselineState, features: Features) -> float:
        """Events in the short window ending at this event, this event included (≥ 1).

        Call it on the identity's own state before learning the event, and pass it as
        ``rate=`` to the peer state's :meth:`deviations` / :meth:`learn_one`: the peer group
        then learns and compares *per-identity* rates, not the whole group's.

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

    # --- learning -----------------------------------------------------------------------------

    def learn_one(
        self, state: BaselineState, features: Features, rate: float | None = None
    ) -> None:
        """Fold one event into ``state`` (in place). ``rate``: see :meth:`current_rate`.

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

    # --- scoring ------------------------------------------------------------------------------

    def deviations(
        self, state: BaselineState, features: Features, rate: float | None = None
    ) -> tuple[list[float], list[Contribution]]:
        """How unusual ``features`` is for ``state``: the :data:`DEVIATIONS` vector in [0, 1],
        and explanations of its strongest dimensions (≥ ``explain_threshold``).

        Does not change ``state``. ``rate``: see :meth:`current_rate` (for peer states).

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


# --- helpers ----------------------------------------------------------------------------------


def _ew(mean: float, var: float, w: float, x: float) -> tuple[float, float]:
    """One bias-corrected EW update of (mean, variance) with the new weight sum ``w``."""
    b = 1.0 / w
    d = x - mean
    inc = b * d
    return mean + inc, (1.0 - b) * (var + d * inc)
