"""Evaluation metrics on hand-made traffic with known answers, the report files, and a small
simulated run end to end (no Kafka)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from pipeline.alerts.decisions import Decision
from pipeline.config import Settings
from pipeline.detection import BatchResult
from pipeline.events.schemas import Event
from pipeline.offline.evaluate import (
    Evaluation,
    EventScores,
    ScenarioRow,
    average_precision,
    compare,
    evaluate,
    p90,
    roc_auc,
    run_evaluation,
    run_offline,
)
from pipeline.scores.explanations import RuleHit, Score
from pipeline.simulate import Simulation, read_labels, simulate
from pipeline.simulate.labels import EventLabel, LabelRow, read_event_labels
from pipeline.simulate.sinks import open_sink

DAY = 86_400_000
HIT = RuleHit("credential_misuse", 5, "credential of x used by y")


# --- a scripted stand-in for Detection -----------------------------------------------------------
def _decision(
    identity: str, finding: str, t: int, action: str = "create", alert: bool = True
) -> Decision:
    return Decision(
        action=action, activity_id=1, identity_uid=identity, identity_kind="human",  # type: ignore[arg-type]
        finding_uid=finding, time_ms=t, first_seen_ms=t, last_seen_ms=t, risk=50.0,
        peak_risk=50.0, risk_level_id=2, severity_id=3, status_id=1, is_alert=alert,
        quarantine=False, confidence=0.9, reason="test",
    )  # fmt: skip


class Scripted:
    """Scores and decisions fixed in advance, keyed by event uid."""

    def __init__(
        self,
        scores: dict[str, tuple[float, bool]],
        decisions: dict[str, list[Decision]] | None = None,
    ) -> None:
        self.scores = scores
        self.decisions = decisions or {}
        self.watermark_ms = 0
        self.model_ref: dict[str, str] | None = None
        self.fed = 0
        self.swaps: list[int] = []
        self.defer_writes = False  # Engine.run defers state writes; this fake keeps none

    def flush_states(self, store: MutableMapping[str, bytes]) -> int:
        return 0

    @contextmanager
    def deferring(self, on: bool) -> Iterator[None]:
        yield

    def process(self, events: Sequence[Event], store: MutableMapping[str, bytes]) -> BatchResult:
        out = BatchResult()
        for ev in events:
            score, rule = self.scores[ev.uid]
            out.scores.append(Score(ev.uid, ev.identity_uid, ev.identity_kind, ev.time_ms, score,
                                    score, rules=(HIT,) if rule else ()))  # fmt: skip
            out.decisions.extend(self.decisions.get(ev.uid, []))
            self.watermark_ms = max(self.watermark_ms, ev.time_ms)
        self.fed += len(events)
        return out

    def apply_signals(self, signals: Any, store: Any) -> list[Decision]:
        return []

    def tick(self, now_ms: int, store: Any) -> list[Decision]:
        return []

    def swap_model(self, model: Any) -> None:
        self.swaps.append(self.fed)
        self.model_ref = {"name": "swapped", "version": "2"}


def _ev(uid: str, identity: str, t: int) -> Event:
    return Event(uid=uid, class_uid=3002, activity_id=1, time_ms=t, identity_uid=identity,
                 identity_kind="human")  # fmt: skip


def _label(cid: str, scenario: str, identity: str, first: int, last: int, n: int) -> LabelRow:
    return LabelRow(cid, scenario, identity, "x", "y", first, last, n)


# a1: attacked (s1, c1) from t=1000 to 4000; its event at 2000 is benign (the user still works).
# a2: attacked (s2, c2) from t=2000 to 3000; a finding opened at 1500 (false), updated at 2500.
# a3: attacked (s1, c3), never alerted. b1-b3: benign; b1 alerts (false), b2 is suppressed.
EVENTS = [
    _ev("e0", "b3", 0),
    _ev("a1-0", "a1", 500),
    _ev("a1-1", "a1", 1000),
    _ev("a3-1", "a3", 1200),
    _ev("a2-0", "a2", 1500),
    _ev("a1-2", "a1", 2000),
    _ev("a2-1", "a2", 2000),
    _ev("a2-2", "a2", 2500),
    _ev("a1-3", "a1", 3000),
    _ev("b1-1", "b1", 3500),
    _ev("a1-4", "a1", 4000),
    _ev("b1-2", "b1", 4500),
    _ev("b2-1", "b2", 5000),
    _ev("e9", "b3", DAY),  # the events span exactly one day
]
MALICIOUS = {"a1-1": "c1", "a1-3": "c1", "a1-4": "c1", "a2-1": "c2", "a2-2": "c2", "a3-1": "c3"}
LABELS = [
    _label("c1", "s1", "a1", 1000, 4000, 3),
    _label("c2", "s2", "a2", 2000, 2500, 2),
    _label("c3", "s1", "a3", 1200, 1200, 1),
]
DECISIONS = {
    "a1-3": [_decision("a1", "f1", 3000)],
    "a1-4": [_decision("a1", "f1", 4000, "update")],
    "a2-0": [_decision("a2", "f2", 1500)],
    "a2-2": [_decision("a2", "f2", 2500, "update")],
    "b1-1": [_decision("b1", "f3", 3500)],
    "b1-2": [_decision("b1", "f3", 4500, "update"), _decision("b1", "f3", 4500, "close")],
    "b2-1": [_decision("b2", "f4", 5000, alert=False)],
}


def _scores(separable: bool) -> dict[str, tuple[float, bool]]:
    out = {}
    for i, ev in enumerate(EVENTS):
        bad = ev.uid in MALICIOUS
        out[ev.uid] = ((0.9 if bad else 0.1) if separable else 0.5 + 0.01 * (i % 3), False)
    return out


def _run(scores: dict[str, tuple[float, bool]], exact: bool = True, **kw: Any) -> Evaluation:
    det = Scripted(scores, DECISIONS)
    labels = MALICIOUS if exact else None
    return evaluate(EVENTS, LABELS, det, event_labels=labels, batch=4, **kw)  # type: ignore[arg-type]


# --- alert level ---------------------------------------------------------------------------------
def test_alert_level_precision_detection_and_false_rate() -> None:
    ev = _run(_scores(True))
    assert ev.events == 14 and ev.identities == 6 and ev.benign_identities == 3
    assert ev.span_days == pytest.approx(1.0)
    # f1 true (a1 after 1000); f2 opened at 1500 before a2's attack (false); f3 on b1 false;
    # f4 suppressed: not an alert; the close is not an alert.
    assert (ev.alerts, ev.true_alerts, ev.false_alerts) == (3, 1, 2)
    assert ev.precision == pytest.approx(1 / 3)
    assert ev.false_per_1000_identity_days == pytest.approx(1000 * 2 / 3)
    assert [(a.finding_uid, a.campaigns) for a in ev.alert_records] == [
        ("f2", ()), ("f1", ("c1",)), ("f3", ())
    ]  # fmt: skip
    s1, s2 = ev.rows["s1"], ev.rows["s2"]
    assert (s1.attacked, s1.detected, s1.campaigns, s1.campaigns_detected) == (2, 1, 2, 1)
    assert (s2.attacked, s2.detected, s2.via_earlier_finding, s2.alerts) == (1, 1, 1, 0)
    # a1: events 1000, 2000, 3000 up to the alert at 3000, 2 s; a2: 2000, 2500 and 0.5 s.
    assert s1.events_to_alert == [3] and s1.seconds_to_alert == [2.0]
    assert s2.events_to_alert == [2] and s2.seconds_to_alert == [0.5]
    total = ev.total
    assert (total.attacked, total.detected, total.alerts) == (3, 2, 1)
    assert total.ttd_seconds_median == pytest.approx(1.25) and total.ttd_seconds_p90 == 2.0
    missed = [r.campaign_id for r in ev.row_results if r.detected_ms is None]
    assert missed == ["c3"]


def test_medians_and_nearest_rank_p90() -> None:
    row = ScenarioRow("x", events_to_alert=list(range(1, 11)), seconds_to_alert=[0.0, 10.0])
    assert (row.ttd_events_median, row.ttd_events_p90) == (5.5, 9)
    assert (row.ttd_seconds_median, row.ttd_seconds_p90) == (5.0, 10.0)
    assert p90([3, 1, 2]) == 3 and math.isnan(ScenarioRow("y").ttd_events_median)


# --- event level ---------------------------------------------------------------------------------
def test_event_level_auc_separable() -> None:
    ev = _run(_scores(True))
    assert ev.total.malicious_events == 6
    assert ev.auc() == (1.0, 1.0)
    assert ev.auc("s1") == (1.0, 1.0) and ev.auc("s2") == (1.0, 1.0)
    m = ev.metrics()
    assert m["event_roc_auc"] == 1.0 and m["s1.malicious_events"] == 4


def test_event_level_auc_inseparable_matches_sklearn() -> None:
    scores = _scores(False)
    ev = _run(scores)
    y = [ev_.uid in MALICIOUS for ev_ in EVENTS]
    s = [scores[ev_.uid][0] for ev_ in EVENTS]
    roc, pr = ev.auc()
    assert roc == pytest.approx(roc_auc_score(y, s)) and 0.3 < roc < 0.7
    assert pr == pytest.approx(average_precision_score(y, s))


def test_combined_score_counts_rules_as_certain() -> None:
    scores = _scores(False)
    for uid in ("a1-3", "a2-2"):  # rules fired on two malicious events
        scores[uid] = (scores[uid][0], True)
    scores["b1-1"] = (scores["b1-1"][0], True)  # and on one benign event
    ev = _run(scores)
    roc_c, pr_c = ev.auc(combined=True)
    assert roc_c > ev.auc()[0]
    combined = [1.0 if scores[e.uid][1] else scores[e.uid][0] for e in EVENTS]
    y = [e.uid in MALICIOUS for e in EVENTS]
    assert roc_c == pytest.approx(roc_auc_score(y, combined))
    assert pr_c == pytest.approx(average_precision_score(y, combined))


def test_window_labels_approximate_exact_ones() -> None:
    exact = _run(_scores(True))
    window = _run(_scores(True), exact=False)
    assert exact.event_labels == "exact" and window.event_labels == "window"
    # a1's benign event at 2000 lies inside c1's window: labelled malicious there.
    assert window.total.malicious_events == exact.total.malicious_events + 1
    assert window.auc()[0] < 1.0
    # alert-level numbers do not depend on event labels
    assert (window.alerts, window.false_alerts) == (exact.alerts, exact.false_alerts)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_auc_helpers_match_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    s = np.round(rng.random(500), 1)  # many ties
    y = rng.random(500) < 0.2 + 0.5 * s
    neg = np.sort(s[~y])
    assert roc_auc(s[y], neg) == pytest.approx(roc_auc_score(y, s))
    assert average_precision(s[y], neg) == pytest.approx(average_precision_score(y, s))
    assert math.isnan(roc_auc([], neg)) and math.isnan(average_precision([], neg))


def test_event_scores_are_compact() -> None:
    es = EventScores.from_arrays([0.5] * 10, [False] * 10, [-1] * 10, ())
    assert es.score.dtype == np.float32 and es.rule.dtype == np.bool_
    assert es.scenario.dtype == np.int16 and len(es) == 10
    assert all(math.isnan(x) for x in es.auc())


# --- swapping a model in -------------------------------------------------------------------------
def test_swap_in_at_the_first_batch_boundary_after_swap_after() -> None:
    det = Scripted(_scores(True))
    list(run_offline(EVENTS, det, batch=4, swap_in=object(), swap_after=5))  # type: ignore[arg-type]
    assert det.swaps == [8]
    det = Scripted(_scores(True))
    ev = evaluate(EVENTS, LABELS, det, swap_in=object(), batch=4)  # type: ignore[arg-type]
    assert det.swaps == [0] and ev.model == {"name": "swapped", "version": "2"}


def test_compare_lines_up_metrics() -> None:
    a, b = _run(_scores(True)), _run(_scores(False))
    frame = compare({"a": a, "b": b}, keys=["precision", "event_roc_auc"])
    assert list(frame.columns) == ["a", "b"] and frame.loc["event_roc_auc", "a"] == 1.0
    assert frame.loc["event_roc_auc", "b"] < 1.0


# --- outputs -------------------------------------------------------------------------------------
def test_table_markdown_plots_and_metrics_json(tmp_path: Path) -> None:
    ev = _run(_scores(False))
    text = "\n".join(ev.table())
    assert "s1" in text and "precision 33.3%" in text
    md = ev.to_markdown()
    assert "| s1 | 1/2 (50%)" in md and "| s2 | 1/1 (100%)" in md and "| **all** |" in md
    assert "## Definitions" in md and "| c3 | s1 | a3 |" in md
    paths = ev.write(tmp_path / "out")
    names = {p.name for p in paths}
    assert {"report.md", "metrics.json", "pr_curve.png", "roc_curve.png", "time_to_detect.png",
            "scores.png"} == names  # fmt: skip
    for p in paths:
        assert p.stat().st_size > 0
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![pr_curve](pr_curve.png)" in (tmp_path / "out" / "report.md").read_text()
    data = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert data["metrics"]["precision"] == pytest.approx(1 / 3)
    assert data["metrics"]["s1.ttd_events_p90"] == 3
    assert data["event_labels"] == "exact" and len(data["alerts"]) == 3
    assert set(ev.metrics()) == set(data["metrics"])


def test_empty_evaluation_renders(tmp_path: Path) -> None:
    det = Scripted({})
    ev = evaluate([], [], det)  # type: ignore[arg-type]
    assert ev.events == 0 and math.isnan(ev.precision)
    assert "None." in ev.to_markdown()
    assert len(ev.write(tmp_path)) == 6
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"]["precision"] is None


# --- simulated, end to end -----------------------------------------------------------------------
def test_run_evaluation_simulated_end_to_end(tmp_path: Path) -> None:
    lines: list[str] = []
    ev = run_evaluation(Settings(), identities=200, duration_s=6 * 3600, seed=5,
                        out_dir=tmp_path, progress=False, echo=lines.append)  # fmt: skip
    assert ev.event_labels == "exact" and ev.events > 10_000
    t = ev.total
    assert t.attacked > 10 and 0.5 <= t.rate <= 1.0
    assert t.malicious_events > 0 and len(ev.event_scores) == ev.events
    assert 0.0 <= ev.precision <= 1.0 and ev.false_per_1000_identity_days >= 0
    m = ev.metrics()
    for key in ("event_roc_auc", "event_roc_auc_combined", "event_roc_auc_macro"):
        assert 0.5 < m[key] <= 1.0, key
    for key in ("event_pr_auc", "event_pr_auc_combined", "event_pr_auc_macro"):
        assert m["event_prevalence"] < m[key] <= 1.0, key
    assert m["event_roc_auc_combined"] >= m["event_roc_auc"]
    for name in ("report.md", "metrics.json", "pr_curve.png", "scores.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert any(line.startswith("all ") for line in lines)
    assert any("wrote report.md" in line for line in lines)


def test_event_labels_file_keeps_other_outputs_identical(tmp_path: Path) -> None:
    settings = Settings()
    start = 1_699_920_000_000
    kw: dict[str, Any] = dict(identities=100, duration_s=2 * 3600, seed=4, start_ms=start)
    simulate(settings, sink=open_sink(settings, tmp_path / "a.jsonl"),
             labels_path=tmp_path / "a.labels.jsonl", **kw)  # fmt: skip
    report = simulate(settings, sink=open_sink(settings, tmp_path / "b.jsonl"),
                      labels_path=tmp_path / "b.labels.jsonl",
                      event_labels_path=tmp_path / "b.events.jsonl", **kw)  # fmt: skip
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "a.labels.jsonl").read_bytes() == (tmp_path / "b.labels.jsonl").read_bytes()
    rows = read_labels(tmp_path / "b.labels.jsonl")
    marked = read_event_labels(tmp_path / "b.events.jsonl")
    assert len(marked) == sum(r.event_count for r in rows) == len({m.event_uid for m in marked})
    assert {m.campaign_id for m in marked} == {r.campaign_id for r in rows}
    assert report.campaigns == len({r.campaign_id for r in rows})

    # ... and evaluating the files with them gives exact event labels
    quiet: dict[str, Any] = {"echo": lambda _: None, "labels_path": tmp_path / "b.labels.jsonl"}
    marks = tmp_path / "b.events.jsonl"
    ev = run_evaluation(
        settings, events_path=tmp_path / "b.jsonl", event_labels_path=marks, **quiet
    )
    assert ev.event_labels == "exact" and ev.total.malicious_events == len(marked)
    window = run_evaluation(settings, events_path=tmp_path / "b.jsonl", **quiet)
    assert window.event_labels == "window"
    assert window.total.malicious_events >= ev.total.malicious_events
    assert (window.alerts, window.total.detected) == (ev.alerts, ev.total.detected)

    # Parquet (the simulator's layout) reads the same
    simulate(settings, sink=open_sink(settings, tmp_path / "c.parquet"), labels_path=None, **kw)
    pq = run_evaluation(
        settings, events_path=tmp_path / "c.parquet", event_labels_path=marks, **quiet
    )
    assert pq.metrics() | {"seconds": 0, "events_per_s": 0} == ev.metrics() | {
        "seconds": 0, "events_per_s": 0
    }  # fmt: skip


def test_simulation_event_labels_need_opting_in() -> None:
    sim = Simulation(Settings(), identities=50, duration_s=600, seed=1, start_ms=1_699_920_000_000)
    list(sim.events())
    with pytest.raises(ValueError):
        sim.event_labels()
    assert isinstance(EventLabel("u", "c"), EventLabel)
