"""Detection quality on labelled traffic: the same code path as the worker, offline.

:func:`evaluate` feeds events through :class:`~pipeline.detection.Detection` as a worker
would (micro-batches, signals routed back, a final tick) and scores what comes out against the
simulator's labels (``docs/EVENTS.md``, Labels). Definitions (also in the Markdown report):

* **alert** - one per incident (``finding_uid``) that alerted: the incident's first decision
  with ``is_alert`` (a ``create``, or an ``update`` once a suppression ended); its time is that
  decision's event time. Suppressed findings and ``close`` decisions are not alerts.
* An alert **counts for a campaign** when it names the campaign's identity (a labels row) and
  comes at or after that row's ``first_time_ms``. Alerts that count for no campaign - on
  identities no campaign touched, or on attacked identities before their attack began - are
  **false alerts**. **Precision** = alerts that count for some campaign / all alerts.
* A labels row (campaign, identity) is **detected** when an alerting decision (``create`` or
  ``update``) names its identity at or after ``first_time_ms``; an open finding that the attack's
  evidence updates does alert the analyst, so it counts even if the finding opened earlier
  (``via_earlier_finding`` counts those).
* **Time to detect**: in seconds, detecting decision time - ``first_time_ms``; in events, the
  identity's events (benign or not) from its first malicious event up to and including the
  detecting one (at least 1). Median, and p90 by nearest rank: 90 % of detected rows were
  detected within it.
* **False alerts per 1,000 identity-days**: false alerts x 1000 / (benign identities x days
  spanned by the events).
* **Event level**: every scored event is labelled malicious or benign - exactly from an event
  labels file (the simulator's ``label_events``), or, without one, by the labels windows: an
  event is malicious when its identity has a labels row with ``first_time_ms <= time <=
  last_time_ms`` (benign events of that identity inside the window are then counted malicious).
  ``score`` is the calibrated anomaly score (:attr:`pipeline.scores.explanations.Score.score`);
  ``combined`` is 1.0 when a rule fired on the event, else ``score`` (rules decide on facts).
  ROC-AUC (ties count half) and PR-AUC (average precision, as scikit-learn computes it) of each;
  per scenario, that scenario's malicious events against all benign events.

>>> ev = EventScores.from_arrays([0.1, 0.9, 0.3], [False, False, True], [-1, 0, -1], ("x",))
>>> ev.auc()
(1.0, 1.0)
"""

from __future__ import annotations

import bisect
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from pipeline.control.feedback import read as read_feedback
from pipeline.detection import BatchResult, Detection
from pipeline.engine import Engine
from pipeline.events.schemas import Event
from pipeline.scores.directory import Directory
from pipeline.simulate.directory import population_directory
from pipeline.simulate.labels import EventLabel, LabelRow

if TYPE_CHECKING:
    from collections.abc import Callable

    from pipeline.config import Settings
    from pipeline.control.feedback import Feedback
    from pipeline.models.registry import Loaded

__all__ = [
    "AlertRecord",
    "Evaluation",
    "EventScores",
    "RowResult",
    "ScenarioRow",
    "average_precision",
    "compare",
    "evaluate",
    "evaluate_as_worker",
    "p90",
    "roc_auc",
    "run_evaluation",
    "run_offline",
]

F32 = npt.NDArray[np.float32]
B = npt.NDArray[np.bool_]


def run_offline(
    events: Iterable[Event],
    detection: Detection,
    *,
    batch: int = 2000,
    swap_in: Loaded | None = None,
    swap_after: int = 0,
    feedback: Iterable[Feedback] = (),
) -> Iterator[tuple[list[Event], BatchResult]]:
    """Feed events (in the given order) through ``detection`` in micro-batches
    (:class:`pipeline.engine.Engine`, the loop replay runs too).

    ``feedback``: analyst decisions applied before the first batch that starts at or after
    each one's ``at_ms`` (as :func:`pipeline.offline.replay.replay` does); their findings come with
    that batch's result.

    ``swap_in``: a verified model swapped into ``detection`` between micro-batches, at the first
    batch boundary where at least ``swap_after`` events have been fed (as a worker adopts a
    promoted model after its warm-up).
    """
    pending = [swap_in] if swap_in is not None else []

    def swap(engine: Engine) -> None:
        if pending and engine.fed >= swap_after:
            detection.swap_model(pending.pop())

    yield from Engine(detection, feedback=feedback).run(events, batch, before=swap)


# --- small statistics ----------------------------------------------------------------------------
def p90(values: Sequence[float]) -> float:
    """90th percentile by nearest rank: the smallest value with >= 90 % of values at or below.

    >>> p90(list(range(1, 11))), p90([5.0]), math.isnan(p90([]))
    (9, 5.0, True)
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def roc_auc(pos: npt.ArrayLike, neg_sorted: npt.ArrayLike) -> float:
    """ROC-AUC of positives against (ascending) sorted negatives; ties count half.

    Same value as ``sklearn.metrics.roc_auc_score``; NaN when either side is empty.

    >>> roc_auc([0.9, 0.5], [0.1, 0.5])
    0.875
    """
    p = np.asarray(pos, dtype=np.float64)
    n = np.asarray(neg_sorted, dtype=np.float64)
    if not len(p) or not len(n):
        return math.nan
    below = np.searchsorted(n, p, side="left")
    upto = np.searchsorted(n, p, side="right")
    return float((below.sum() + 0.5 * (upto - below).sum()) / (len(p) * len(n)))


def average_precision(pos: npt.ArrayLike, neg_sorted: npt.ArrayLike) -> float:
    """Average precision (PR-AUC) of positives against (ascending) sorted negatives.

    Sum over distinct positive scores ``v`` (descending) of recall gained at ``v`` times the
    precision of "score >= v"; same value as ``sklearn.metrics.average_precision_score``.
    NaN without positives.

    >>> round(average_precision([0.9, 0.5], [0.1, 0.7]), 4)
    0.8333
    """
    p = np.sort(np.asarray(pos, dtype=np.float64))
    n = np.asarray(neg_sorted, dtype=np.float64)
    if not len(p):
        return math.nan
    values, counts = np.unique(p, return_counts=True)
    tp = len(p) - np.searchsorted(p, values, side="left")  # positives >= v
    fp = len(n) - np.searchsorted(n, values, side="left")  # negatives >= v
    return float(np.sum(counts / len(p) * tp / (tp + fp)))


# --- event-level scores --------------------------------------------------------------------------
@dataclass
class EventScores:
    """One entry per scored event, compact: 1M events take about 8 MB.

    ``scenario`` is the index into ``scenarios`` of the malicious event's campaign scenario, -1
    for benign events.
    """

    score: F32
    rule: B
    scenario: npt.NDArray[np.int16]
    scenarios: tuple[str, ...] = ()
    _auc: dict[tuple[str | None, bool], tuple[float, float]] = field(
        default_factory=dict, repr=False, compare=False
    )
    _neg: dict[bool, npt.NDArray[np.float32]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @classmethod
    def empty(cls) -> EventScores:
        return cls.from_arrays([], [], [], ())

    @classmethod
    def from_arrays(
        cls,
        score: npt.ArrayLike,
        rule: npt.ArrayLike,
        scenario: npt.ArrayLike,
        scenarios: tuple[str, ...],
    ) -> EventScores:
        return cls(
            np.asarray(score, dtype=np.float32),
            np.asarray(rule, dtype=np.bool_),
            np.asarray(scenario, dtype=np.int16),
            scenarios,
        )

    def __len__(self) -> int:
        return len(self.score)

    @property
    def malicious(self) -> B:
        return self.scenario >= 0

    def combined(self) -> F32:
        """1.0 where a rule fired, else the calibrated score."""
        return np.where(self.rule, np.float32(1.0), self.score).astype(np.float32)

    def values(self, combined: bool = False) -> F32:
        return self.combined() if combined else self.score

    def positives(self, scenario: str | None = None) -> B:
        if scenario is None:
            return self.malicious
        if scenario not in self.scenarios:
            return np.zeros(len(self.scenario), dtype=np.bool_)
        out: B = self.scenario == self.scenarios.index(scenario)
        return out

    def auc(self, scenario: str | None = None, combined: bool = False) -> tuple[float, float]:
        """(ROC-AUC, PR-AUC) of ``scenario``'s malicious events (None: all) against benign."""
        key = (scenario, combined)
        if key not in self._auc:
            values = self.values(combined)
            neg = self._neg.get(combined)
            if neg is None:
                neg = self._neg[combined] = np.sort(values[~self.malicious])
            pos = values[self.positives(scenario)]
            self._auc[key] = (roc_auc(pos, neg), average_precision(pos, neg))
        return self._auc[key]


# --- results -------------------------------------------------------------------------------------
@dataclass
class ScenarioRow:
    """Per scenario (or ``all``): labels rows attacked and detected, and how fast."""

    scenario: str
    attacked: int = 0
    detected: int = 0
    events_to_alert: list[int] = field(default_factory=list)
    seconds_to_alert: list[float] = field(default_factory=list)
    alerts: int = 0  # alerts that count for a campaign of this scenario
    campaigns: int = 0
    campaigns_detected: int = 0  # campaigns with at least one of their identities detected
    via_earlier_finding: int = 0  # detected by an update of a finding opened before the attack
    malicious_events: int = 0

    @property
    def rate(self) -> float:
        return self.detected / self.attacked if self.attacked else 0.0

    @property
    def ttd_events_median(self) -> float:
        return _median(self.events_to_alert)

    @property
    def ttd_events_p90(self) -> float:
        return float(p90(self.events_to_alert))

    @property
    def ttd_seconds_median(self) -> float:
        return _median(self.seconds_to_alert)

    @property
    def ttd_seconds_p90(self) -> float:
        return float(p90(self.seconds_to_alert))


@dataclass(frozen=True)
class AlertRecord:
    """One alert (incident that alerted) and the campaigns it counts for."""

    finding_uid: str
    identity_uid: str
    time_ms: int
    campaigns: tuple[str, ...]  # empty: a false alert

    @property
    def true(self) -> bool:
        return bool(self.campaigns)


@dataclass(frozen=True)
class RowResult:
    """One labels row (campaign, identity) and whether / when it was detected."""

    campaign_id: str
    scenario: str
    identity_uid: str
    first_time_ms: int
    detected_ms: int | None
    events_to_alert: int | None
    finding_uid: str | None


@dataclass
class Evaluation:
    rows: dict[str, ScenarioRow]
    identities: int
    benign_identities: int
    span_days: float
    false_alerts: int
    events: int
    seconds: float
    alerts: int = 0
    event_scores: EventScores = field(default_factory=EventScores.empty)
    event_labels: str = "window"  # "exact" (event labels file) or "window" (approximation)
    alert_records: list[AlertRecord] = field(default_factory=list)
    row_results: list[RowResult] = field(default_factory=list)
    model: dict[str, str] | None = None  # detection.model_ref at the end
    source: str = ""  # what was evaluated, in words
    # Per alerted incident (finding uid): update decisions and contain commands it produced.
    updates: dict[str, int] = field(default_factory=dict)
    contains: dict[str, int] = field(default_factory=dict)
    # Benign identities (no labels row) quarantined at once (an automatic contain command):
    # identity -> number of distinct incidents that contained them.
    benign_contained: dict[str, int] = field(default_factory=dict)
    # Benign identities whose contain commands waited for an analyst's approval instead
    # (severity below the automatic level, or the policy asked first): identity -> incidents.
    benign_asked: dict[str, int] = field(default_factory=dict)
    inventory: int = 0  # informational inventory findings (new agent model builds)

    @property
    def contains_per_incident_max(self) -> int:
        return max(self.contains.values(), default=0)

    @property
    def contains_per_contained_incident(self) -> float:
        sent = [v for v in self.contains.values() if v]
        return sum(sent) / len(sent) if sent else 0.0

    @property
    def updates_per_incident_max(self) -> int:
        return max(self.updates.values(), default=0)

    @property
    def benign_quarantined_twice(self) -> int:
        return sum(1 for v in self.benign_contained.values() if v > 1)

    @property
    def false_per_1000_identity_days(self) -> float:
        days = self.benign_identities * self.span_days
        return 1000.0 * self.false_alerts / days if days else 0.0

    @property
    def true_alerts(self) -> int:
        return self.alerts - self.false_alerts

    @property
    def precision(self) -> float:
        """Alert-level precision; NaN without alerts."""
        return self.true_alerts / self.alerts if self.alerts else math.nan

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def total(self) -> ScenarioRow:
        """All scenarios together (alerts: the true alerts, each counted once)."""
        t = ScenarioRow("all")
        for r in self.rows.values():
            t.attacked += r.attacked
            t.detected += r.detected
            t.events_to_alert += r.events_to_alert
            t.seconds_to_alert += r.seconds_to_alert
            t.campaigns += r.campaigns
            t.campaigns_detected += r.campaigns_detected
            t.via_earlier_finding += r.via_earlier_finding
            t.malicious_events += r.malicious_events
        t.alerts = self.true_alerts
        return t

    def auc(self, scenario: str | None = None, combined: bool = False) -> tuple[float, float]:
        """Event-level (ROC-AUC, PR-AUC); ``scenario`` None for all malicious events."""
        return self.event_scores.auc(scenario, combined)

    def auc_macro(self, combined: bool = False) -> tuple[float, float]:
        """Mean over scenarios of their event-level (ROC-AUC, PR-AUC): each scenario weighs the
        same, however many events it labels (one long campaign dominates the pooled AUCs)."""
        per = [self.auc(name, combined) for name in sorted(self.rows)]
        rocs = [r for r, _ in per if not math.isnan(r)]
        prs = [p for _, p in per if not math.isnan(p)]
        return (
            float(np.mean(rocs)) if rocs else math.nan,
            float(np.mean(prs)) if prs else math.nan,
        )

    def table(self) -> list[str]:
        """A plain-text table (per scenario, then all) and the alert-level summary."""
        out = [
            f"{'scenario':<24} {'detected':>9} {'rate':>6} {'events→alert':>13} "
            f"{'s→alert':>13} {'ROC-AUC':>8} {'PR-AUC':>7}",
            f"{'':<24} {'':>9} {'':>6} {'median  p90':>13} {'median    p90':>13}",
        ]
        for name in sorted(self.rows):
            out.append(self._line(self.rows[name], name))
        out.append(self._line(self.total, None))
        prec = "-" if math.isnan(self.precision) else f"{self.precision:.1%}"
        out.append(
            f"alerts: {self.alerts} (one per incident), {self.true_alerts} count for a campaign, "
            f"precision {prec}"
        )
        out.append(
            f"false alerts: {self.false_alerts} on {self.benign_identities:,} benign identities "
            f"over {self.span_days:.1f} days = {self.false_per_1000_identity_days:.1f} "
            "per 1,000 identity-days"
        )
        roc, pr = self.auc(None, combined=True)
        m_roc, m_pr = self.auc_macro()
        out.append(
            f"event level ({self.event_labels} labels, {self.total.malicious_events:,} malicious "
            f"events): ROC-AUC/PR-AUC columns score the calibrated score; all, rule → 1.0: "
            f"{_f(roc, 3)} / {_f(pr, 3)}; mean of scenarios: {_f(m_roc, 3)} / {_f(m_pr, 3)}"
        )
        out.append(
            f"incidents: finding updates max {self.updates_per_incident_max}; contain commands "
            f"per contained incident {self.contains_per_contained_incident:.1f} (max "
            f"{self.contains_per_incident_max}); benign identities contained "
            f"{len(self.benign_contained)} ({self.benign_quarantined_twice} more than once), "
            f"sent for approval {len(self.benign_asked)}; inventory findings {self.inventory}"
        )
        out.append(f"{self.events:,} events scored in {self.seconds:.1f} s "
                   f"({self.events_per_s:,.0f} events/s, one process)")  # fmt: skip
        return out

    def _line(self, r: ScenarioRow, name: str | None) -> str:
        roc, pr = self.auc(name)
        ttd_e = f"{_f(r.ttd_events_median, 0)} {_f(r.ttd_events_p90, 0):>5}"
        ttd_s = f"{_f(r.ttd_seconds_median, 0)} {_f(r.ttd_seconds_p90, 0):>7}"
        return (
            f"{r.scenario:<24} {r.detected:>4}/{r.attacked:<4} {r.rate:>6.0%} {ttd_e:>13} "
            f"{ttd_s:>13} {_f(roc, 3):>8} {_f(pr, 3):>7}"
        )

    def metrics(self) -> dict[str, float]:
        """Every number, flat (``name`` overall, ``scenario.name`` per scenario); NaN: n/a."""
        t = self.total
        out: dict[str, float] = {
            "events": float(self.events),
            "identities": float(self.identities),
            "benign_identities": float(self.benign_identities),
            "span_days": self.span_days,
            "seconds": self.seconds,
            "events_per_s": self.events_per_s,
            "alerts": float(self.alerts),
            "true_alerts": float(self.true_alerts),
            "false_alerts": float(self.false_alerts),
            "precision": self.precision,
            "false_alerts_per_1000_identity_days": self.false_per_1000_identity_days,
            "finding_updates_per_incident_max": float(self.updates_per_incident_max),
            "contains_per_contained_incident": self.contains_per_contained_incident,
            "contains_per_incident_max": float(self.contains_per_incident_max),
            "benign_identities_contained": float(len(self.benign_contained)),
            "benign_identities_contained_twice": float(self.benign_quarantined_twice),
            "benign_identities_sent_for_approval": float(len(self.benign_asked)),
            "inventory_findings": float(self.inventory),
            "malicious_events": float(t.malicious_events),
            "event_prevalence": t.malicious_events / self.events if self.events else math.nan,
        }
        out.update(_row_metrics(t, ""))
        for combined, suffix in ((False, ""), (True, "_combined")):
            roc, pr = self.auc(None, combined)
            out[f"event_roc_auc{suffix}"] = roc
            out[f"event_pr_auc{suffix}"] = pr
            roc, pr = self.auc_macro(combined)
            out[f"event_roc_auc_macro{suffix}"] = roc
            out[f"event_pr_auc_macro{suffix}"] = pr
        for name in sorted(self.rows):
            out.update(_row_metrics(self.rows[name], f"{name}."))
            for combined, suffix in ((False, ""), (True, "_combined")):
                roc, pr = self.auc(name, combined)
                out[f"{name}.event_roc_auc{suffix}"] = roc
                out[f"{name}.event_pr_auc{suffix}"] = pr
        return out

    # --- outputs (pipeline.offline.evaluate_report: matplotlib is imported only when needed) ---
    def to_markdown(self, plots: Sequence[Path] = ()) -> str:
        """The report: run, overall and per-scenario tables, definitions, plot links."""
        from pipeline.offline.evaluate_report import markdown

        return markdown(self, plots)

    def plots(self, out_dir: Path) -> list[Path]:
        """PR and ROC curves, time-to-detect and score histograms as PNGs in ``out_dir``."""
        from pipeline.offline.evaluate_report import plots

        return plots(self, Path(out_dir))

    def write(self, out_dir: Path) -> list[Path]:
        """``report.md``, ``metrics.json`` and the PNGs into ``out_dir``; returns the paths."""
        from pipeline.offline.evaluate_report import write

        return write(self, Path(out_dir))


def _f(x: float, digits: int) -> str:
    return "-" if math.isnan(x) else f"{x:.{digits}f}"


def _row_metrics(r: ScenarioRow, prefix: str) -> dict[str, float]:
    return {
        f"{prefix}attacked": float(r.attacked),
        f"{prefix}detected": float(r.detected),
        f"{prefix}detection_rate": r.rate,
        f"{prefix}campaigns": float(r.campaigns),
        f"{prefix}campaigns_detected": float(r.campaigns_detected),
        f"{prefix}via_earlier_finding": float(r.via_earlier_finding),
        f"{prefix}ttd_events_median": r.ttd_events_median,
        f"{prefix}ttd_events_p90": r.ttd_events_p90,
        f"{prefix}ttd_seconds_median": r.ttd_seconds_median,
        f"{prefix}ttd_seconds_p90": r.ttd_seconds_p90,
        f"{prefix}true_alerts": float(r.alerts),
        f"{prefix}malicious_events": float(r.malicious_events),
    }


# --- evaluation ----------------------------------------------------------------------------------
class _EventLabeller:
    """Scenario index (or -1) of each scored event: exact uids, or the labels windows."""

    def __init__(
        self,
        labels: list[LabelRow],
        scenarios: tuple[str, ...],
        event_labels: Iterable[EventLabel] | Mapping[str, str] | None,
    ) -> None:
        code = {s: i for i, s in enumerate(scenarios)}
        self.exact: dict[str, int] | None = None
        self.windows: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
        if event_labels is not None:
            of_campaign = {r.campaign_id: code[r.scenario] for r in labels}
            pairs = (
                event_labels.items()
                if isinstance(event_labels, Mapping)
                else ((e.event_uid, e.campaign_id) for e in event_labels)
            )
            self.exact = {uid: of_campaign.get(cid, -1) for uid, cid in pairs}
        else:
            for r in labels:
                self.windows[r.identity_uid].append(
                    (r.first_time_ms, r.last_time_ms, code[r.scenario])
                )

    def codes(self, result: BatchResult) -> list[int]:
        if self.exact is not None:
            exact = self.exact
            return [exact.get(s.event_uid, -1) for s in result.scores]
        out = []
        windows = self.windows
        for s in result.scores:
            c = -1
            ws = windows.get(s.identity_uid)
            if ws:
                t = s.time_ms
                for lo, hi, k in ws:
                    if lo <= t <= hi:
                        c = k
                        break
            out.append(c)
        return out


def evaluate(
    events: Iterable[Event],
    labels: list[LabelRow],
    detection: Detection,
    *,
    event_labels: Iterable[EventLabel] | Mapping[str, str] | None = None,
    swap_in: Loaded | None = None,
    swap_after: int = 0,
    batch: int = 2000,
    source: str = "",
    feedback: Iterable[Feedback] = (),
) -> Evaluation:
    """Run ``events`` through ``detection`` and score its alerts and scores against ``labels``.

    ``event_labels``: exact per-event ground truth (the simulator's event labels, or a mapping
    event uid → campaign id); without it events are labelled by the labels windows (see the
    module docstring). ``swap_in``/``swap_after``: swap that model in once ``swap_after`` events
    have been fed (:func:`run_offline`), e.g. to compare two models on the same held-out data.
    ``feedback``: analyst decisions replayed at their time, to see what they change.
    """
    attacked: dict[str, list[LabelRow]] = defaultdict(list)
    for row in labels:
        attacked[row.identity_uid].append(row)
    scenarios = tuple(sorted({r.scenario for r in labels}))
    labeller = _EventLabeller(labels, scenarios, event_labels)
    times: dict[str, list[int]] = defaultdict(list)  # attacked identities' event times
    identities: set[str] = set()
    first = last = None
    alerting: dict[str, list[tuple[int, str]]] = defaultdict(list)  # identity -> (t, finding)
    opened: dict[str, tuple[str, int]] = {}  # finding -> (identity, first alerting decision)
    score_parts: list[F32] = []
    rule_parts: list[B] = []
    code_parts: list[npt.NDArray[np.int16]] = []
    n = 0
    updates: dict[str, int] = {}
    contains: dict[str, int] = {}
    contained: dict[str, set[str]] = {}
    asked: dict[str, set[str]] = {}
    inventory = 0
    from pipeline.quarantine.policy import QuarantinePolicy

    # Only its wants() and approval_of(): which decisions contain, and which at once.
    quarantine = QuarantinePolicy(duration_ms=1)
    t0 = time.perf_counter()
    for chunk, result in run_offline(
        events, detection, batch=batch, swap_in=swap_in, swap_after=swap_after, feedback=feedback
    ):
        for ev in chunk:
            identities.add(ev.identity_uid)
            if ev.identity_uid in attacked:
                times[ev.identity_uid].append(ev.time_ms)
        if chunk:
            n += len(chunk)
            lo, hi = min(e.time_ms for e in chunk), max(e.time_ms for e in chunk)
            first = lo if first is None else min(first, lo)
            last = hi if last is None else max(last, hi)
        if result.scores:
            k = len(result.scores)
            score_parts.append(
                np.fromiter((s.score for s in result.scores), dtype=np.float32, count=k)
            )
            rule_parts.append(
                np.fromiter((bool(s.rules) for s in result.scores), dtype=np.bool_, count=k)
            )
            code_parts.append(np.asarray(labeller.codes(result), dtype=np.int16))
        for d in result.decisions:
            if d.rules and d.rules[0].rule == "model_inventory":  # decisions.inventory_decision
                inventory += 1
                continue
            if d.action == "update":
                updates[d.finding_uid] = updates.get(d.finding_uid, 0) + 1
            if quarantine.wants(d):
                contains[d.finding_uid] = contains.get(d.finding_uid, 0) + 1
                if d.identity_uid not in attacked:
                    at_once = quarantine.approval_of(d) == "automatic"
                    (contained if at_once else asked).setdefault(
                        d.identity_uid, set()).add(d.finding_uid)
            if d.is_alert and d.action in ("create", "update"):
                alerting[d.identity_uid].append((d.time_ms, d.finding_uid))
                seen = opened.get(d.finding_uid)
                if seen is None or d.time_ms < seen[1]:
                    opened[d.finding_uid] = (d.identity_uid, d.time_ms)
    seconds = time.perf_counter() - t0

    def cat(parts: list[Any], dtype: Any) -> Any:
        return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

    ev_scores = EventScores(
        cat(score_parts, np.float32), cat(rule_parts, np.bool_), cat(code_parts, np.int16),
        scenarios,
    )  # fmt: skip

    # Alert level: one alert per incident, true when it counts for some campaign.
    records: list[AlertRecord] = []
    for fuid, (uid, t) in opened.items():
        camps = tuple(r.campaign_id for r in attacked.get(uid, ()) if t >= r.first_time_ms)
        records.append(AlertRecord(fuid, uid, t, camps))
    records.sort(key=lambda a: (a.time_ms, a.finding_uid))
    scenario_of = {r.campaign_id: r.scenario for r in labels}

    rows: dict[str, ScenarioRow] = {}
    results: list[RowResult] = []
    campaign_hit: dict[str, bool] = {}
    ordered: dict[str, list[int]] = {}
    for row in labels:
        r = rows.setdefault(row.scenario, ScenarioRow(row.scenario))
        r.attacked += 1
        hits = [(t, f) for t, f in alerting.get(row.identity_uid, []) if t >= row.first_time_ms]
        campaign_hit[row.campaign_id] = campaign_hit.get(row.campaign_id, False) or bool(hits)
        if not hits:
            results.append(RowResult(row.campaign_id, row.scenario, row.identity_uid,
                                     row.first_time_ms, None, None, None))  # fmt: skip
            continue
        r.detected += 1
        t_alert, fuid = min(hits)
        if opened[fuid][1] < row.first_time_ms:
            r.via_earlier_finding += 1
        ts = ordered.get(row.identity_uid)
        if ts is None:
            ts = ordered[row.identity_uid] = sorted(times[row.identity_uid])
        a = bisect.bisect_left(ts, row.first_time_ms)
        b = bisect.bisect_right(ts, t_alert)
        n_events = max(1, b - a)
        r.events_to_alert.append(n_events)
        r.seconds_to_alert.append((t_alert - row.first_time_ms) / 1000)
        results.append(RowResult(row.campaign_id, row.scenario, row.identity_uid,
                                 row.first_time_ms, t_alert, n_events, fuid))  # fmt: skip
    for cid, hit in campaign_hit.items():
        r = rows[scenario_of[cid]]
        r.campaigns += 1
        r.campaigns_detected += int(hit)
    for alert in records:
        for name in {scenario_of[c] for c in alert.campaigns}:
            rows[name].alerts += 1
    for i, name in enumerate(scenarios):
        rows[name].malicious_events = int(np.count_nonzero(ev_scores.scenario == i))

    span_days = ((last or 0) - (first or 0)) / 86_400_000
    return Evaluation(
        rows=rows,
        identities=len(identities),
        benign_identities=len(identities - set(attacked)),
        span_days=span_days,
        false_alerts=sum(1 for a in records if not a.true),
        events=n,
        seconds=seconds,
        alerts=len(records),
        event_scores=ev_scores,
        event_labels="exact" if event_labels is not None else "window",
        alert_records=records,
        row_results=results,
        model=detection.model_ref,
        source=source,
        updates={f: updates.get(f, 0) for f in opened},
        contains={f: contains.get(f, 0) for f in opened},
        benign_contained={k: len(v) for k, v in contained.items()},
        benign_asked={k: len(v) for k, v in asked.items()},
        inventory=inventory,
    )


def compare(evaluations: Mapping[str, Evaluation], keys: Sequence[str] | None = None) -> Any:
    """A pandas DataFrame of :meth:`Evaluation.metrics`: one row per metric, one column each.

    For notebooks comparing models on the same held-out events::

        core = lambda: Detection.from_settings(settings, directory=d)
        base = evaluate(events, labels, core(), event_labels=marks)
        cand = evaluate(events, labels, core(), event_labels=marks,
                        swap_in=loaded, swap_after=settings.model_warmup_events)
        compare({"built-in": base, "candidate": cand})
    """
    import pandas as pd

    frame = pd.DataFrame({name: ev.metrics() for name, ev in evaluations.items()})
    return frame.loc[list(keys)] if keys is not None else frame


# --- the command -------------------------------------------------------------------------------
def evaluate_as_worker(
    settings: Settings,
    events: Sequence[Event],
    labels: list[LabelRow],
    *,
    event_labels: Iterable[EventLabel] | None = None,
    directory: Directory | None = None,
    source: str = "",
    feedback: Iterable[Feedback] = (),
    echo: Callable[[str], None] = print,
) -> Evaluation:
    """:func:`evaluate` with the model the worker would score with (the promoted one,
    verified, adopted after the warm-up) in the worker's batch size."""
    from pipeline.models.runtime import ModelRuntime

    detection = Detection.from_settings(settings, directory=directory)
    runtime = ModelRuntime(settings, "evaluate")
    for r in runtime.start(detection):
        echo(f"model: {r.kind} {r.detail or ''}".rstrip())
    swap_in = runtime.pending[0] if runtime.pending is not None else None
    return evaluate(
        events,
        labels,
        detection,
        event_labels=event_labels,
        source=source,
        swap_in=swap_in,
        swap_after=settings.model_warmup_events,
        batch=settings.worker_batch,
        feedback=feedback,
    )


def run_evaluation(
    settings: Settings,
    *,
    events_path: Path | str | None = None,
    labels_path: Path | str | None = None,
    event_labels_path: Path | str | None = None,
    directory_path: Path | str | None = None,
    identities: int = 1_000,
    duration_s: float = 172_800.0,
    seed: int = 7,
    out_dir: Path | str | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    feedback_path: Path | str | None = None,
    with_directory: bool = True,
) -> Evaluation:
    """``custos evaluate``: simulate (or read ``events_path``), evaluate, print, write outputs.

    ``feedback_path``: analyst feedback (JSONL) replayed at its time (:func:`run_offline`).

    Without ``events_path`` the simulator generates ``identities`` over ``duration_s`` with
    ``seed`` (exact event labels; the population's identity directory). With it: JSONL or
    Parquet events (:func:`pipeline.offline.replay.read_raw`; invalid ones are skipped and counted),
    sorted by event time (stable), ``labels_path`` (required), optionally ``event_labels_path``
    (exact event-level labels, else the labels windows) and ``directory_path``.
    ``out_dir``: also write ``report.md``, ``metrics.json`` and the plots there.
    """
    from pipeline.errors import CustosError, InvalidEvent
    from pipeline.events.schemas import EventDecoder

    decoder = EventDecoder(max_future_skew_ms=10**13)  # recorded traffic: any past or future
    t0 = time.perf_counter()
    event_labels: list[EventLabel] | None = None
    if events_path is not None:
        from pipeline.offline.replay import read_raw
        from pipeline.simulate.labels import read_event_labels, read_labels

        if labels_path is None:
            raise CustosError("--events needs --labels")
        events: list[Event] = []
        invalid: dict[str, int] = {}
        for _, raw in read_raw(Path(events_path)):
            try:
                events.append(decoder.decode(raw))
            except InvalidEvent as exc:
                invalid[exc.reason] = invalid.get(exc.reason, 0) + 1
        if invalid:
            echo(f"skipped {sum(invalid.values()):,} invalid events: "
                 + ", ".join(f"{k} {v:,}" for k, v in sorted(invalid.items())))  # fmt: skip
        events.sort(key=lambda e: e.time_ms)  # stable: ties keep file order
        labels = read_labels(Path(labels_path))
        if event_labels_path is not None:
            event_labels = read_event_labels(Path(event_labels_path))
        directory = Directory.load(directory_path) if directory_path else None
        source = f"{events_path} (labels {labels_path})"
    else:
        from pipeline.simulate import Simulation

        sim = Simulation(
            settings, identities=identities, duration_s=duration_s, seed=seed, label_events=True
        )
        events = [decoder.decode(value) for _, _, value, _ in sim.events(progress=progress)]
        labels = sim.label_rows()
        event_labels = sim.event_labels()
        directory = population_directory(identities, seed) if with_directory else None
        source = (f"simulated: {identities:,} identities, {duration_s / 3600:g} h, "
                  f"seed {seed}{'' if with_directory else ', no directory'}")  # fmt: skip
    echo(f"{len(events):,} events, {len(labels)} labels rows ready in "
         f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
    result = evaluate_as_worker(
        settings, events, labels, event_labels=event_labels, directory=directory,
        source=source, feedback=read_feedback(feedback_path) if feedback_path else (),
        echo=echo,
    )  # fmt: skip
    for line in result.table():
        echo(line)
    if out_dir is not None:
        paths = result.write(Path(out_dir))
        echo(f"wrote {', '.join(p.name for p in paths)} to {out_dir}")
    return result
