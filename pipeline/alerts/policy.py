"""Risk and alerting policy: explained scores in, one finding per incident out.

Scoring says how unusual one event is; this module decides what to *do* about it (like
scikit-learn, the score is not the decision threshold). Per identity it keeps a compact
:class:`RiskState`: a risk in [0, 100] that decays exponentially with *event* time, and at most
one incident. Anomalous events (score at or above the noise floor) and Zero Trust rule hits add
risk; once risk reaches the alert threshold (or a Critical rule fires) the incident opens a
finding (``create``), later evidence refreshes it (``update``: when its risk level rises, a
new kind of evidence - a new rule, or behaviour on a rule-only incident - joins, or otherwise
after ``update_interval_s``, an interval that doubles after each such periodic update) and a
quiet period closes it (``close``). The next alert opens
a new finding uid. A quarantine-worthy incident asks for **one** contain command
(``Decision.contain``); it is re-issued only within ``contain_renew_s`` of lapsing
(``quarantine_duration_s``; a renewal lasts until the incident would habituate, or, once
confirmed or Critical, twice the previous command), while the incident is open, not released
and still gathering evidence. An incident that stays open for ``habituate_after_s`` without an
analyst confirming it is a baseline that failed to learn, not an attack in progress: it closes
as *habituated*, its features and High rules are suppressed for the identity for
``habituate_suppress_s`` (visible in the close and in the state), and events anomalous only in
those features are learned again (:meth:`RiskPolicy.habituated`). An alerted incident that
closes unconfirmed is remembered for ``recur_window_s``: a new incident made only of the same
behavioural evidence (the nightly job's volume again; no rule but ``volume_drift``) is a
recurring behaviour, not news - it becomes a suppressed finding that closes at once as
habituated, so the audit shows what would have alerted and why not. Critical rules never
habituate nor recur. An incident that was contained automatically and ended unconfirmed (closed,
habituated or dismissed) makes the identity's contains ask an analyst first for
``ask_window_s`` (``Decision.ask_first``): a second automatic quarantine would rest on the same
unconfirmed guess. Critical rules and confirmed incidents still contain at once.

Risk model (defaults in brackets; every one is a constructor argument and a setting):

- decay: ``risk(t) = risk(t0) * 2 ** (-(t - t0) / half_life)`` [half-life 1 h of event time];
- a score ``s >= noise_floor`` [0.6] adds ``gain * (s - floor) / (1 - floor)`` [gain 30], scaled
  by the share of its contribution weight that is not suppressed; below the floor it adds nothing;
  the share of its contribution weight on features already in the open incident counts only
  ``repeat_weight`` [1.0; settings 0.25]: the same harmless change repeated (one new network,
  one job failing) is not corroboration, a second and different anomaly is; the same holds for
  a rule already in the incident firing again;
- a rule adds ``rule_risk[severity_id]`` [High 30, settings 40; Critical 100]; a Critical rule
  also lifts risk to at least the quarantine threshold, so it alerts at once and is
  quarantine-worthy;
- risk is capped at 100 (= OCSF ``risk_score``); levels Low/Medium/High/Critical start at
  20/40/60/80; alert at 40 (Medium: two strong, different anomalies within minutes, or a High
  rule: on its own with the settings' 40, corroborated by behaviour with the constructor's 30);
  quarantine at 80; close once below 10 for 1 h.

>>> from pipeline.scores.explanations import RuleHit, Score
>>> policy, state = RiskPolicy(), RiskState()
>>> policy.decide(state, Score("e-1", "alice", "human", 1_000, 0.2, 0.1)) is None
True
>>> hit = RuleHit("credential_misuse", 5, "credential of bob used by alice")
>>> d = policy.decide(state, Score("e-2", "alice", "human", 2_000, 0.3, 0.2, rules=(hit,)))
>>> d.action, d.risk_level_id, d.severity_id, d.quarantine, d.status_id
('create', 4, 5, True, 1)
>>> RiskState.from_bytes(state.to_bytes()) == state
True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

import msgspec

from pipeline.alerts.decisions import (
    ACTIVITY_IDS,
    MAX_CONTAIN_MS,
    Action,
    Decision,
    finding_uid,
)
from pipeline.alerts.state import (
    CANDIDATE,
    MAX_STATE_SUPPRESSIONS,
    STATUS_IN_PROGRESS,
    STATUS_NEW,
    STATUS_RESOLVED,
    STATUS_SUPPRESSED,
    Counters,
    Incident,
    RiskState,
    Suppression,
)
from pipeline.errors import ConfigError
from pipeline.scores.explanations import Contribution, RuleHit, Score

if TYPE_CHECKING:
    from pipeline.config import Settings

__all__ = ["RiskPolicy"]

_CRITICAL: Final = 5  # OCSF severity_id Critical
_HABITUATED: Final = "habituated"  # reason prefix of the suppressions habituation adds
MAX_RECURRING: Final = 8  # evidence names remembered from incidents that ended unconfirmed
#: Rules that may recur into habituation: the baseline's own day-volume finding is behaviour.
#: Every other rule is a fact (a stranger delegation, an expired credential, a hard ceiling):
#: the same fact a second time is the attacker's second try, not a baseline that failed to learn.
RECURRING_RULES: Final = frozenset({"volume_drift"})
_RISK_LEVELS: Final = ("Info", "Low", "Medium", "High", "Critical")


class RiskPolicy:
    """Turn :class:`~pipeline.scores.explanations.Score` s into create/update/close decisions.

    Stateless itself (all state is in the :class:`RiskState` passed in), so one instance
    serves every identity. Times are event times in ms.

    >>> p = RiskPolicy(half_life_s=60)
    >>> st = RiskState()
    >>> p.decide(st, Score("e-1", "bot", "agent", 0, 1.0, 3.0)), st.risk
    (None, 30.0)
    >>> p.risk_at(st, 60_000)
    15.0
    >>> p.level_of(45.0), p.severity_of(45.0)
    (2, 3)
    """

    __slots__ = (
        "_ask_ms",
        "_by_identity",
        "_close_after_ms",
        "_contain_renew_ms",
        "_duration_ms",
        "_habituate_ms",
        "_half_life_ms",
        "_interval_ms",
        "_recur_ms",
        "_rule_risk",
        "_suppress_any",
        "_suppressions",
        "alert_threshold",
        "ask_window_s",
        "close_after_s",
        "close_threshold",
        "contain_renew_s",
        "gain",
        "habituate_after_s",
        "habituate_suppress_s",
        "half_life_s",
        "level_thresholds",
        "max_contributions",
        "max_credentials",
        "max_events",
        "max_rationale_chars",
        "max_rationales",
        "max_risk",
        "max_rules",
        "noise_floor",
        "quarantine_duration_s",
        "quarantine_threshold",
        "recur_window_s",
        "repeat_weight",
        "rule_risk",
        "suppressions",
        "update_interval_s",
    )

    def __init__(
        self,
        *,
        half_life_s: float = 3600.0,
        noise_floor: float = 0.6,
        gain: float = 30.0,
        repeat_weight: float = 1.0,
        rule_risk: Mapping[int, float] | None = None,
        alert_threshold: float = 40.0,
        quarantine_threshold: float = 80.0,
        level_thresholds: tuple[float, float, float, float] = (20.0, 40.0, 60.0, 80.0),
        close_threshold: float = 10.0,
        close_after_s: float = 3600.0,
        update_interval_s: float = 1800.0,
        quarantine_duration_s: float = 3600.0,
        contain_renew_s: float = 300.0,
        habituate_after_s: float = 86_400.0,
        habituate_suppress_s: float = 7 * 86_400.0,
        recur_window_s: float = 8 * 86_400.0,
        ask_window_s: float = 14 * 86_400.0,
        max_risk: float = 100.0,
        suppressions: Iterable[Suppression] = (),
        max_events: int = 20,
        max_contributions: int = 5,
        max_rules: int = 8,
        max_rationales: int = 3,
        max_rationale_chars: int = 200,
        max_credentials: int = 8,
    ) -> None:
        self.half_life_s = float(half_life_s)
        self.noise_floor = float(noise_floor)
        self.gain = float(gain)
        self.repeat_weight = float(repeat_weight)
        # Rule severity (OCSF severity_id) -> risk added. Critical also lifts risk to the
        # quarantine threshold whatever this says (see module doc).
        self.rule_risk: dict[int, float] = (
            {3: 10.0, 4: 30.0, 5: 100.0} if rule_risk is None else dict(rule_risk)
        )
        self.alert_threshold = float(alert_threshold)
        self.quarantine_threshold = float(quarantine_threshold)
        self.level_thresholds = tuple(float(x) for x in level_thresholds)
        self.close_threshold = float(close_threshold)
        self.close_after_s = float(close_after_s)
        self.update_interval_s = float(update_interval_s)
        self.quarantine_duration_s = float(quarantine_duration_s)
        self.contain_renew_s = float(contain_renew_s)
        self.habituate_after_s = float(habituate_after_s)
        self.habituate_suppress_s = float(habituate_suppress_s)
        self.recur_window_s = float(recur_window_s)
        self.ask_window_s = float(ask_window_s)
        self.max_risk = float(max_risk)
        self.suppressions = tuple(suppressions)
        self.max_events = max_events
        self.max_contributions = max_contributions
        self.max_rules = max_rules
        self.max_rationales = max_rationales
        self.max_rationale_chars = max_rationale_chars
        self.max_credentials = max_credentials
        self._validate()
        self._half_life_ms = self.half_life_s * 1000.0
        self._close_after_ms = round(self.close_after_s * 1000.0)
        self._interval_ms = round(self.update_interval_s * 1000.0)
        self._duration_ms = round(self.quarantine_duration_s * 1000.0)
        self._contain_renew_ms = round(min(self.contain_renew_s, self.quarantine_duration_s) * 1000)
        self._habituate_ms = round(self.habituate_after_s * 1000.0)
        self._recur_ms = round(self.recur_window_s * 1000.0)
        self._ask_ms = round(self.ask_window_s * 1000.0)
        self._rule_risk = self.rule_risk
        # Suppression index: per identity, and feature rules that apply to every identity.
        by_identity: dict[str, list[Suppression]] = {}
        anyone: list[Suppression] = []
        for s in self.suppressions:
            if s.identity is None:
                anyone.append(s)
            else:
                by_identity.setdefault(s.identity, []).append(s)
        self._by_identity = {k: tuple(v) for k, v in by_identity.items()}
        self._suppress_any = tuple(anyone)
        self._suppressions = bool(self.suppressions)

    def _validate(self) -> None:
        problems = []
        if not self.half_life_s > 0:
            problems.append("half_life_s must be > 0")
        if not 0.0 <= self.noise_floor < 1.0:
            problems.append("noise_floor must be in [0, 1)")
        if self.gain < 0:
            problems.append("gain must be >= 0")
        if not 0.0 <= self.repeat_weight <= 1.0:
            problems.append("repeat_weight must be in [0, 1]")
        if not 0 < self.close_threshold < self.alert_threshold:
            problems.append("need 0 < close_threshold < alert_threshold")
        if not self.alert_threshold <= self.quarantine_threshold <= self.max_risk:
            problems.append("need alert_threshold <= quarantine_threshold <= max_risk")
        levels = self.level_thresholds
        if len(levels) != 4 or any(a > b for a, b in itertools.pairwise(levels)):
            problems.append("level_thresholds must be 4 non-decreasing values")
        if self.close_after_s < 0 or self.update_interval_s < 0:
            problems.append("close_after_s and update_interval_s must be >= 0")
        if not 0 < self.quarantine_duration_s <= MAX_CONTAIN_MS / 1000 or self.contain_renew_s < 0:
            problems.append(f"quarantine_duration_s must be in (0, {MAX_CONTAIN_MS // 1000}] and "
                            "contain_renew_s >= 0")  # fmt: skip
        if not self.habituate_after_s > 0 or self.habituate_suppress_s < 0:
            problems.append("habituate_after_s must be > 0 and habituate_suppress_s >= 0")
        if self.recur_window_s < 0:
            problems.append("recur_window_s must be >= 0")
        if self.ask_window_s < 0:
            problems.append("ask_window_s must be >= 0")
        if self.max_events < 2:  # the first event is always kept, plus at least the latest
            problems.append("max_events must be >= 2")
        if min(self.max_contributions, self.max_rules, self.max_rationales) < 1:
            problems.append("max_contributions, max_rules and max_rationales must be >= 1")
        if any(v < 0 for v in self.rule_risk.values()):
            problems.append("rule_risk values must be >= 0")
        if problems:
            raise ConfigError("risk policy: " + "; ".join(problems))

    @classmethod
    def from_settings(
        cls, settings: Settings, *, suppressions: Iterable[Suppression] = (), **overrides: Any
    ) -> RiskPolicy:
        """Build from the ``risk_*``, ``incident_*`` and ``finding_*`` settings; reads no file.

        ``suppressions``: the analysts' standing suppressions (``settings.suppressions_file``
        is read by whoever builds the core: ``Detection.from_settings``).

        >>> from pipeline.config import Settings
        >>> p = RiskPolicy.from_settings(Settings.from_env({"CUSTOS_RISK_NOISE_FLOOR": "0.7"}))
        >>> p.noise_floor, p.alert_threshold, p.half_life_s
        (0.7, 40.0, 3600.0)
        """
        kwargs: dict[str, Any] = {
            "half_life_s": settings.risk_half_life_s,
            "noise_floor": settings.risk_noise_floor,
            "gain": settings.risk_gain,
            "repeat_weight": settings.risk_repeat_weight,
            "rule_risk": {3: 10.0, 4: settings.risk_rule_high, 5: 100.0},
            "alert_threshold": settings.risk_alert_threshold,
            "quarantine_threshold": settings.risk_quarantine_threshold,
            "close_threshold": settings.risk_close_threshold,
            "close_after_s": settings.incident_close_after_s,
            "update_interval_s": settings.finding_update_interval_s,
            "quarantine_duration_s": settings.quarantine_duration_s,
            "habituate_after_s": settings.incident_habituate_after_s,
            "habituate_suppress_s": settings.incident_habituate_suppress_s,
            "recur_window_s": settings.incident_recur_window_s,
            "ask_window_s": settings.quarantine_ask_after_unconfirmed_s,
            "suppressions": tuple(suppressions),
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    # --- Small helpers (public: the worker and tests use them) --------------------------------

    def risk_at(self, state: RiskState, time_ms: int) -> float:
        """The identity's risk at ``time_ms``, decayed from the last update (never grown)."""
        dt = time_ms - state.updated_ms
        if dt <= 0:
            return state.risk
        return state.risk * math.pow(2.0, -dt / self._half_life_ms)

    def level_of(self, risk: float) -> int:
        """OCSF ``risk_level_id``: 0 Info, 1 Low, 2 Medium, 3 High, 4 Critical."""
        level = 0
        for threshold in self.level_thresholds:
            if risk < threshold:
                break
            level += 1
        return level

    def severity_of(self, risk: float) -> int:
        """OCSF ``severity_id`` for a risk: level + 1 (1 Informational ... 5 Critical)."""
        return self.level_of(risk) + 1

    def due_ms(self, state: RiskState) -> int | None:
        """Earliest time at which :meth:`tick` would act (close or flush), None = never."""
        inc = state.incident
        if inc is None:
            return None
        due = min(inc.quiet_ms + self._close_after_ms, self._habituate_due(inc))
        if inc.pending and inc.status_id != CANDIDATE:
            due = min(due, inc.last_emit_ms + self._period_ms(inc))
        renew = self._renew_due(inc)
        if renew is not None:
            due = min(due, renew)
        return due

    @staticmethod
    def _certain(inc: Incident) -> bool:
        """Confirmed by an analyst or carrying a Critical rule: an attack, not a guess (it
        never habituates nor recurs, and its contain never waits for an analyst)."""
        return inc.confirmed or any(r.severity_id >= _CRITICAL for r in inc.rules)

    def _habituate_due(self, inc: Incident) -> int:
        if self._certain(inc):
            return 2**62
        return inc.first_seen_ms + self._habituate_ms

    def _renew_due(self, inc: Incident) -> int | None:
        """When the contain command must be re-issued (None: it must not be)."""
        if inc.contain_ms < 0 or not inc.quarantine or inc.released:
            return None
        if inc.evidence_ms <= inc.contain_ms:
            return None  # nothing new since the command: let it lapse, the analyst decides
        end = inc.contain_ms + self._contain_ms_of(inc, inc.contains)
        if end >= self._habituate_due(inc):
            return None  # the command outlasts the incident's unconfirmed life
        return end - self._contain_renew_ms

    def _contain_ms_of(self, inc: Incident, k: int) -> int:
        """Duration of the incident's k-th contain command (1-based), sent at ``inc.contain_ms``.

        The first lasts ``quarantine_duration_s``. A renewal of an incident no analyst has
        confirmed lasts until the incident would habituate, so such an incident costs at most
        two commands (a baseline that failed to learn is not contained for ever); a confirmed
        or Critical incident renews at twice the previous duration (capped at 64x): evidence
        that goes on for days costs a handful of commands, not one an hour."""
        ms = self._duration_ms << min(max(k - 1, 0), 6)
        if k >= 2:
            due = self._habituate_due(inc)
            if due < 2**62:
                ms = max(ms, due - inc.contain_ms)
        return min(ms, MAX_CONTAIN_MS)

    def _period_ms(self, inc: Incident) -> int:
        """Interval to the next periodic update: ``update_interval_s``, doubled after each one
        (capped at 64x): an incident whose evidence keeps coming for days is not news every
        half hour."""
        return self._interval_ms << min(inc.periodic, 6)

    def habituated(self, state: RiskState, score: Score) -> bool:
        """True when ``score``'s anomaly lies only in features its identity habituated to.

        Such events are learned (the baseline catches up) although they score high.
        """
        if score.rules or not score.contributions or not state.suppressions:
            return False
        names = {s.feature for s in state.suppressions
                 if s.feature is not None and s.reason.startswith(_HABITUATED)
                 and s.applies(score.time_ms)}  # fmt: skip
        return all(c.feature in names for c in score.contributions)

    def identity_suppression(
        self, identity_uid: str, time_ms: int, state: RiskState | None = None
    ) -> Suppression | None:
        """The active whole-identity suppression of ``identity_uid``, if any."""
        extra: list[Suppression] = state.suppressions if state is not None else []
        for s in (*self._by_identity.get(identity_uid, ()), *extra):
            if s.feature is None and s.applies(time_ms):
                return s
        return None

    def _suppressed_features(
        self, identity_uid: str, time_ms: int, state: RiskState
    ) -> frozenset[str]:
        names = [
            s.feature
            for s in (*self._by_identity.get(identity_uid, ()), *self._suppress_any,
                      *state.suppressions)
            if s.feature is not None and s.applies(time_ms)
        ]  # fmt: skip
        return frozenset(names)

    # --- Analyst feedback ---------------------------------------------------------------------

    def confirm(self, state: RiskState, t: int, why: str) -> Decision | None:
        """An analyst confirmed the compromise: the incident becomes quarantine-worthy now.

        Risk is raised to the quarantine threshold; a candidate is alerted (create), an open
        finding updated. None when the identity has no incident to confirm.
        """
        inc = state.incident
        if inc is None:
            return None
        now = max(t, state.updated_ms)
        state.risk = max(self.risk_at(state, now), self.quarantine_threshold)
        state.updated_ms = now
        inc.peak_risk = max(inc.peak_risk, state.risk)
        inc.quiet_ms = max(inc.quiet_ms, now + math.ceil(
            self._half_life_ms * math.log2(state.risk / self.close_threshold)))  # fmt: skip
        inc.quarantine = True
        inc.confirmed = True
        inc.released = False
        state.recurring = []  # confirmed: the same evidence again is the attack again
        state.recurring_until_ms = 0
        state.ask_until_ms = 0  # and its quarantine was right: contain at once again
        inc.contain_ms = -1  # an analyst's decision: its command goes out now
        inc.contains = 0
        action: Action = "update"
        if inc.status_id == CANDIDATE:
            inc.uid = finding_uid(inc.identity_uid, inc.events[0] if inc.events else str(t))
            action = "create"
        return self._emit(state, inc, action, t, why, None)

    def release(self, state: RiskState) -> None:
        """An analyst released the quarantine: no contain again until a new kind of evidence."""
        inc = state.incident
        if inc is None:
            return
        inc.quarantine = False
        inc.emitted_quarantine = False
        inc.released = True
        state.rev += 1

    def dismiss(self, state: RiskState, t: int, why: str) -> Decision | None:
        """An analyst marked the incident a false positive: close it, risk back to zero."""
        inc = state.incident
        state.incident = None
        state.risk = 0.0
        state.updated_ms = max(t, state.updated_ms)
        state.rev += 1
        if inc is None or inc.status_id == CANDIDATE:
            return None
        self._ask_next(state, inc, t)
        return self._decision(state, inc, "close", t, why, STATUS_RESOLVED, False, None)

    def suppress(self, state: RiskState, suppression: Suppression, t: int) -> None:
        """Add a time-bounded suppression to this identity's state (oldest dropped beyond max)."""
        kept = [s for s in state.suppressions if s.applies(t)]
        kept.append(suppression)
        state.suppressions = kept[-MAX_STATE_SUPPRESSIONS:]
        state.rev += 1

    # --- The hot path -------------------------------------------------------------------------

    def decide(self, state: RiskState, score: Score) -> Decision | None:
        """Fold one explained event into ``state`` (in place); say what to emit, if anything.

        Returns None in the common case: nothing anomalous, or risk below the alert threshold,
        or an update that the rate limit holds back (it is flushed by a later event or
        :meth:`tick`). Events may arrive slightly out of order: risk never decays backwards.
        """
        inc = state.incident
        if score.score < self.noise_floor and not score.rules:
            if inc is None:
                return None  # the common case: a few attribute reads, no allocation
            return self._quiet(state, inc, score.time_ms)
        return self._apply(state, score)

    def tick(self, state: RiskState, now_ms: int) -> Decision | None:
        """Let time pass without events: close a quiet incident, flush a held-back update.

        ``now_ms`` is on the event-time clock (e.g. the partition's latest event time, or wall
        time when the stream is idle). Also reflects a suppression starting or expiring.
        """
        inc = state.incident
        if inc is None:
            return None
        if now_ms >= inc.quiet_ms + self._close_after_ms:
            return self._close(state, inc, now_ms)
        if now_ms >= self._habituate_due(inc):
            return self._habituate(state, inc, now_ms)
        if inc.status_id == CANDIDATE:
            return None
        renew = self._renew_due(inc)
        if renew is not None and now_ms >= renew:
            sup = self.identity_suppression(inc.identity_uid, now_ms, state)
            return self._emit(state, inc, "update", now_ms, "quarantine renewed: evidence "
                              "continued since the last contain command", sup)  # fmt: skip
        sup = (
            self.identity_suppression(inc.identity_uid, now_ms, state)
            if self._suppressions or state.suppressions
            else None
        )
        if (sup is not None) != (inc.status_id == STATUS_SUPPRESSED):
            reason = "identity suppressed" if sup is not None else "suppression ended"
            return self._emit(state, inc, "update", now_ms, reason, sup)
        if inc.pending and now_ms - inc.last_emit_ms >= self._period_ms(inc):
            return self._emit(state, inc, "update", now_ms, "new evidence (periodic update)", sup)
        return None

    # --- Internals ----------------------------------------------------------------------------

    def _quiet(self, state: RiskState, inc: Incident, t: int) -> Decision | None:
        """A non-anomalous event while an incident is open: maybe close or flush it."""
        if t >= inc.quiet_ms + self._close_after_ms:
            return self._close(state, inc, t)
        if t >= self._habituate_due(inc):
            return self._habituate(state, inc, t)
        if (
            inc.pending
            and inc.status_id != CANDIDATE
            and t - inc.last_emit_ms >= self._period_ms(inc)
        ):
            sup = (
                self.identity_suppression(inc.identity_uid, t, state)
                if self._suppressions or state.suppressions
                else None
            )
            return self._emit(state, inc, "update", t, "new evidence (periodic update)", sup)
        return None

    def _apply(self, state: RiskState, score: Score) -> Decision | None:
        t = score.time_ms
        inc = state.incident
        closed: Decision | None = None
        if inc is not None and t >= inc.quiet_ms + self._close_after_ms:
            closed = self._close(state, inc, t)  # overdue: the tick has not run yet
            inc = None
        elif inc is not None and t >= self._habituate_due(inc):
            closed = self._habituate(state, inc, t)
            inc = None  # its new suppressions apply to this event below

        sup: Suppression | None = None
        sup_features: frozenset[str] = frozenset()
        if self._suppressions or state.suppressions:
            sup = self.identity_suppression(score.identity_uid, t, state)
            sup_features = self._suppressed_features(score.identity_uid, t, state)

        # Risk this event adds.
        s = score.score
        add = 0.0
        suppressed = False
        contributions: tuple[Contribution, ...] = ()
        if s >= self.noise_floor:
            share = 1.0
            contributions = score.contributions
            if sup_features and contributions:
                kept = tuple(c for c in contributions if c.feature not in sup_features)
                if len(kept) != len(contributions):
                    suppressed = True
                    total = sum(c.weight for c in contributions)
                    share = sum(c.weight for c in kept) / total if total > 0 else 0.0
                    contributions = kept
            if inc is not None and inc.contributions and self.repeat_weight < 1.0 and contributions:
                # More of the same (the one new network, the one failing job) is weaker
                # evidence than a second, different anomaly.
                known = {c.feature for c in inc.contributions}
                total = sum(c.weight for c in contributions)
                again = sum(c.weight for c in contributions if c.feature in known)
                if total > 0.0 and again:
                    share *= (total - again + self.repeat_weight * again) / total
            add = self.gain * (s - self.noise_floor) / (1.0 - self.noise_floor) * share
        anomalous = add > 0.0
        if not anomalous:
            contributions = ()
        rules: list[RuleHit] = []
        critical = False
        known_rules = {r.rule for r in inc.rules} if inc is not None else set()
        for r in score.rules:
            if r.rule in sup_features:
                suppressed = True
                continue
            rules.append(r)
            # A rule already in the incident firing again is the same fact again, not a
            # second one (Critical rules still lift risk to the quarantine threshold below).
            w = self.repeat_weight if r.rule in known_rules else 1.0
            add += w * self._rule_risk.get(r.severity_id, 0.0)
            critical = critical or r.severity_id >= _CRITICAL

        if not anomalous and not rules:  # all noise or all suppressed: nothing to add
            if inc is not None:
                if suppressed:
                    inc.counters.suppressed += 1
                    state.rev += 1
                return self._quiet(state, inc, t)
            return closed

        # Decay to this event's time, then add (risk never decays backwards in time).
        now = t if t > state.updated_ms else state.updated_ms
        risk = self.risk_at(state, now) + add
        if critical and risk < self.quarantine_threshold:
            risk = self.quarantine_threshold
        risk = min(risk, self.max_risk)
        state.risk = risk
        state.updated_ms = now
        state.rev += 1

        if inc is None:
            inc = Incident(score.identity_uid, score.identity_kind, t, t, now)
            state.incident = inc
        new_rule, new_features = self._merge(
            inc, score, contributions, rules, anomalous, suppressed
        )
        inc.evidence_ms = max(inc.evidence_ms, t)
        if inc.released and new_rule:
            inc.released = False  # a new kind of rule after a release: contain may go out again
        if risk > inc.peak_risk:
            inc.peak_risk = risk
        if risk >= self.close_threshold:  # when will it fall below the close threshold?
            inc.quiet_ms = now + math.ceil(
                self._half_life_ms * math.log2(risk / self.close_threshold)
            )
        if (critical or risk >= self.quarantine_threshold) and not inc.released:
            inc.quarantine = True
        inc.pending = True

        decision: Decision | None = None
        if inc.status_id == CANDIDATE:
            if not critical and risk >= self.alert_threshold and self._recurs(state, inc, t):
                return self._recur(state, inc, t, closed)
            if critical or risk >= self.alert_threshold:
                if critical:
                    reason = "Critical rule " + ", ".join(
                        r.rule for r in rules if r.severity_id >= _CRITICAL
                    )
                else:
                    reason = f"risk {risk:.0f} reached the alert threshold {self.alert_threshold:g}"
                inc.uid = finding_uid(inc.identity_uid, inc.events[0] if inc.events else str(t))
                decision = self._emit(state, inc, "create", t, reason, sup)
        else:
            reason = ""
            level = self.level_of(inc.peak_risk)
            if level > inc.emitted_level:
                reason = f"risk level rose to {_RISK_LEVELS[level]}"
            elif new_rule:
                reason = "new rule " + ", ".join(new_rule)
            elif inc.quarantine and sup is None and not inc.emitted_quarantine:
                reason = "quarantine-worthy"
            elif (sup is not None) != (inc.status_id == STATUS_SUPPRESSED):
                reason = "identity suppressed" if sup is not None else "suppression ended"
            elif (renew := self._renew_due(inc)) is not None and t >= renew:
                reason = "quarantine renewed: evidence continued since the last contain command"
            elif new_features:
                reason = "new evidence: " + ", ".join(new_features)
            elif t - inc.last_emit_ms >= self._period_ms(inc):
                reason = "new evidence (periodic update)"
            if reason:
                decision = self._emit(state, inc, "update", t, reason, sup)

        if closed is None:
            return decision
        if decision is None:
            return closed
        return msgspec.structs.replace(decision, closed=closed)

    def _merge(
        self,
        inc: Incident,
        score: Score,
        contributions: tuple[Contribution, ...],
        rules: list[RuleHit],
        anomalous: bool,
        suppressed: bool,
    ) -> tuple[list[str], list[str]]:
        """Fold one event's evidence into the bounded incident summary; return the names of
        rules and of contribution features new to the incident."""
        t = score.time_ms
        if t < inc.first_seen_ms:
            inc.first_seen_ms = t
        if t > inc.last_seen_ms:
            inc.last_seen_ms = t
        events = inc.events
        if not events or events[-1] != score.event_uid:  # a replayed duplicate adds nothing new
            if len(events) >= self.max_events:
                del events[1]  # keep the first (it anchors the finding uid) and the latest
            events.append(score.event_uid)
        c = inc.counters
        c.events += 1
        if suppressed:
            c.suppressed += 1
        if anomalous:
            c.anomalous += 1
            if score.score > inc.confidence:
                inc.confidence = score.score
            if contributions:
                merged = {x.feature: x for x in inc.contributions}
                # A new kind of evidence: the first behavioural evidence on an incident that
                # had only rules (each further feature waits for the periodic update).
                new_features = [] if merged else [x.feature for x in contributions
                                                  if x.weight >= 0.5]  # fmt: skip
                for x in contributions:
                    old = merged.get(x.feature)
                    if old is None or x.weight >= old.weight:  # strongest, latest on ties
                        merged[x.feature] = x
                top = sorted(merged.values(), key=lambda x: x.weight, reverse=True)
                inc.contributions = top[: self.max_contributions]
        new_rules: list[str] = []
        if not (anomalous and contributions):
            new_features = []
        if rules:
            c.rule_hits += len(rules)
            inc.confidence = 1.0  # a rule checks facts, not likelihoods
            for r in rules:
                for i, old_rule in enumerate(inc.rules):
                    if old_rule.rule == r.rule:
                        inc.rules[i] = r  # latest evidence
                        break
                else:
                    if len(inc.rules) < self.max_rules:
                        inc.rules.append(r)
                    new_rules.append(r.rule)
        cred = score.credential_uid
        if cred and cred not in inc.credentials:
            if len(inc.credentials) >= self.max_credentials:
                del inc.credentials[0]
            inc.credentials.append(cred)
        why = score.rationale
        if why:
            why = why[: self.max_rationale_chars]  # agent-supplied text: bound it
            if why not in inc.rationales:
                if len(inc.rationales) >= self.max_rationales:
                    del inc.rationales[0]
                inc.rationales.append(why)
        return new_rules, new_features

    def _severity(self, inc: Incident) -> int:
        severity = self.severity_of(inc.peak_risk)
        for r in inc.rules:
            if r.severity_id > severity:
                severity = r.severity_id
        return min(severity, _CRITICAL)

    def _emit(
        self,
        state: RiskState,
        inc: Incident,
        action: Action,
        t: int,
        reason: str,
        sup: Suppression | None,
    ) -> Decision:
        """Build a create/update decision and record what was emitted."""
        if sup is not None:
            status = STATUS_SUPPRESSED
        else:
            status = STATUS_NEW if action == "create" else STATUS_IN_PROGRESS
        quarantine = inc.quarantine and sup is None
        contain = False
        if quarantine and not inc.released:
            renew = self._renew_due(inc)
            contain = inc.contain_ms < 0 or (renew is not None and t >= renew)
            if contain:
                inc.contain_ms = t
                inc.contains += 1
        level = self.level_of(inc.peak_risk)
        if action == "update":
            inc.counters.updates += 1
            if reason.endswith("(periodic update)"):
                inc.periodic += 1
        inc.status_id = status
        inc.last_emit_ms = t
        inc.emitted_level = level
        inc.emitted_quarantine = quarantine
        inc.pending = False
        state.rev += 1
        ask = contain and self._asks(state, inc, t)
        return self._decision(
            state, inc, action, t, reason, status, quarantine, sup, contain=contain,
            contain_ms=self._contain_ms_of(inc, inc.contains) if contain else 0, ask_first=ask,
        )

    def _asks(self, state: RiskState, inc: Incident, t: int) -> bool:
        """Whether this incident's contain waits for an analyst (see :meth:`_ask_next`)."""
        return t < state.ask_until_ms and not self._certain(inc)

    def _ended_unconfirmed(self, state: RiskState, inc: Incident, t: int) -> None:
        """An alerted incident closed or habituated without confirmation: what the identity
        remembers of it (its recurring evidence, and whether its next contains ask first)."""
        self._remember(state, inc, t)
        self._ask_next(state, inc, t)

    def _ask_next(self, state: RiskState, inc: Incident, t: int) -> None:
        """An incident that sent a contain (at once, or asking) ended unconfirmed: the
        identity's next contains, for ``ask_window_s``, wait for an analyst (one automatic
        quarantine per unconfirmed guess; a guess that keeps recurring keeps asking)."""
        if inc.contains and not inc.confirmed and self._ask_ms:
            state.ask_until_ms = max(state.ask_until_ms, t + self._ask_ms)
            state.rev += 1

    def _habituate(self, state: RiskState, inc: Incident, t: int) -> Decision | None:
        """Close an incident that outlived ``habituate_after_s`` unconfirmed; suppress its
        evidence for the identity for ``habituate_suppress_s`` (recorded in the state)."""
        hours = (t - inc.first_seen_ms) / 3_600_000
        why = f"{_HABITUATED} after {hours:.0f} h open without analyst confirmation"
        until = t + round(self.habituate_suppress_s * 1000.0)
        names = [c.feature for c in inc.contributions] + [r.rule for r in inc.rules]
        for name in dict.fromkeys(names):
            self.suppress(state, Suppression(identity=inc.identity_uid, feature=name,
                                             until_ms=until, reason=why), t)  # fmt: skip
        state.incident = None
        state.risk = 0.0
        state.updated_ms = max(t, state.updated_ms)
        state.rev += 1
        if inc.status_id == CANDIDATE:
            return None
        self._ended_unconfirmed(state, inc, t)
        reason = why + ("; suppressed for the identity: " + ", ".join(dict.fromkeys(names))
                        if names else "")  # fmt: skip
        return msgspec.structs.replace(
            self._decision(state, inc, "close", t, reason, STATUS_RESOLVED, False, None),
            habituated=True,
        )

    @staticmethod
    def _behaviour_names(inc: Incident) -> list[str]:
        """The evidence a recurrence may learn: features and :data:`RECURRING_RULES`."""
        return list(dict.fromkeys([c.feature for c in inc.contributions]
                                  + [r.rule for r in inc.rules
                                     if r.rule in RECURRING_RULES]))  # fmt: skip

    def _remember(self, state: RiskState, inc: Incident, t: int) -> None:
        """An alerted incident ended unconfirmed: remember its evidence for ``recur_window_s``
        (Critical rules are never a recurring behaviour; a confirmed incident is an attack)."""
        if not self._recur_ms or self._certain(inc):
            return
        kept = state.recurring if t < state.recurring_until_ms else []
        names = list(dict.fromkeys([*self._behaviour_names(inc), *kept]))
        state.recurring = names[:MAX_RECURRING]
        state.recurring_until_ms = t + self._recur_ms
        state.rev += 1

    def _recurs(self, state: RiskState, inc: Incident, t: int) -> bool:
        """Whether the candidate's evidence is only what recently ended unconfirmed."""
        if t >= state.recurring_until_ms or inc.released:
            return False
        if any(r.rule not in RECURRING_RULES for r in inc.rules):
            return False  # a fact again (a rule), not behaviour again
        names = self._behaviour_names(inc)
        return bool(names) and set(names) <= set(state.recurring)

    def _recur(self, state: RiskState, inc: Incident, t: int,
               closed: Decision | None) -> Decision:  # fmt: skip
        """A recurrence (a nightly job's volume again): not an alert but a suppressed finding that
        closes at once as habituated - its evidence suppressed and learned for
        ``habituate_suppress_s`` - so the audit trail shows what would have alerted and why not."""
        names = self._behaviour_names(inc)
        hours = (t - (state.recurring_until_ms - self._recur_ms)) / 3_600_000
        why = (f"{_HABITUATED}: recurring - only evidence ({', '.join(names)}) of an incident "
               f"that closed unconfirmed {hours:.0f} h ago")  # fmt: skip
        sup = Suppression(identity=inc.identity_uid, reason=why)
        inc.uid = finding_uid(inc.identity_uid, inc.events[0] if inc.events else str(t))
        created = self._decision(state, inc, "create", t, why, STATUS_SUPPRESSED, False, sup)
        until = t + round(self.habituate_suppress_s * 1000.0)
        for name in names:
            self.suppress(state, Suppression(identity=inc.identity_uid, feature=name,
                                             until_ms=until, reason=why), t)  # fmt: skip
        state.incident = None
        state.risk = 0.0
        state.rev += 1
        state.recurring_until_ms = t + self._recur_ms  # still recurring: remember it longer
        if closed is not None:
            created = msgspec.structs.replace(created, closed=closed)
        return msgspec.structs.replace(
            self._decision(state, inc, "close", t, why + "; suppressed and learned for the "
                           "identity", STATUS_RESOLVED, False, None, was_suppressed=True),
            habituated=True, closed=created,
        )  # fmt: skip

    def _close(self, state: RiskState, inc: Incident, t: int) -> Decision | None:
        """End the incident; a candidate that never alerted is dropped silently."""
        state.incident = None
        state.rev += 1
        if inc.status_id == CANDIDATE:
            return None
        reason = f"quiet: risk below {self.close_threshold:g} for {self.close_after_s:g} s"
        was_suppressed = inc.status_id == STATUS_SUPPRESSED
        if not was_suppressed:
            self._ended_unconfirmed(state, inc, t)
        quarantine = inc.quarantine and not was_suppressed
        return self._decision(
            state, inc, "close", t, reason, STATUS_RESOLVED, quarantine, None, was_suppressed
        )

    def _decision(
        self,
        state: RiskState,
        inc: Incident,
        action: Action,
        t: int,
        reason: str,
        status: int,
        quarantine: bool,
        sup: Suppression | None,
        was_suppressed: bool = False,
        *,
        contain: bool = False,
        contain_ms: int = 0,
        ask_first: bool = False,
    ) -> Decision:
        suppressed = sup is not None or was_suppressed
        c = inc.counters
        return Decision(
            action=action,
            activity_id=ACTIVITY_IDS[action],
            identity_uid=inc.identity_uid,
            identity_kind=inc.identity_kind,
            finding_uid=inc.uid,
            time_ms=t,
            first_seen_ms=inc.first_seen_ms,
            last_seen_ms=inc.last_seen_ms,
            risk=self.risk_at(state, t),
            peak_risk=inc.peak_risk,
            risk_level_id=self.level_of(inc.peak_risk),
            severity_id=self._severity(inc),
            status_id=status,
            is_alert=not suppressed,
            quarantine=quarantine,
            confidence=inc.confidence,
            reason=reason,
            related_events=tuple(inc.events),
            contributions=tuple(inc.contributions),
            rules=tuple(inc.rules),
            rationales=tuple(inc.rationales),
            counters=Counters(c.events, c.anomalous, c.rule_hits, c.suppressed, c.updates),
            suppressed_by=(sup.reason or "suppressed") if sup is not None else None,
            credentials=tuple(inc.credentials),
            contain=contain,
            contain_duration_ms=contain_ms,
            ask_first=ask_first,
        )
