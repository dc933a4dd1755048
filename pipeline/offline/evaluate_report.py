"""The evaluation report: Markdown, PNG plots (matplotlib, no display) and ``metrics.json``.

Written by :meth:`pipeline.offline.evaluate.Evaluation.write` (``custos evaluate --out DIR``):

* ``report.md`` - the run, overall and per-scenario tables, misses, false alerts, definitions;
* ``metrics.json`` - ``metrics`` (every number, flat: :meth:`Evaluation.metrics`; NaN as
  null), ``event_labels``, ``source``, ``model``, and one entry per labels row and per alert;
* ``pr_curve.png``, ``roc_curve.png`` - event level, overall (calibrated score and the
  rule → 1.0 score) and per scenario;
* ``time_to_detect.png`` - detected labels rows per time-to-detect bucket (events, seconds),
  stacked by scenario;
* ``scores.png`` - calibrated score histograms, benign against malicious (log counts), and per
  scenario.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from pipeline.offline.evaluate import Evaluation, EventScores, ScenarioRow

__all__ = ["DEFINITIONS", "markdown", "plots", "pr_points", "write"]

#: Metric definitions, as the report states them.
DEFINITIONS = """\
- **Labels row**: one (campaign, identity) pair of the labels file; "attacked" counts them.
- **Alert**: one per incident (finding uid) that alerted - its first decision with `is_alert`
  (a `create`, or an `update` once a suppression ended). Suppressed findings and `close`
  decisions are not alerts.
- **Counts for a campaign**: the alert names the labels row's identity and comes at or after the
  row's `first_time_ms` (the campaign's first malicious event of that identity).
- **Precision (alert level)**: alerts that count for some campaign / all alerts.
- **False alert**: an alert that counts for no campaign (an identity no campaign touched, or an
  attacked identity before its attack began).
- **False alerts per 1,000 identity-days**: false alerts x 1000 / (benign identities x days
  spanned by the events).
- **Detected**: an alerting decision (`create` or `update`) names the row's identity at or after
  `first_time_ms`. An update of a finding opened before the attack counts (the analyst sees the
  attack's evidence arrive on it): "via earlier finding" counts those.
- **Campaigns detected**: campaigns with at least one of their labels rows detected.
- **Time to detect, seconds**: detecting decision's event time - `first_time_ms`.
- **Time to detect, events**: the identity's events (benign or malicious) from its first
  malicious event up to and including the detecting one (at least 1).
- **Median / p90**: over detected rows; p90 by nearest rank (90 % of detected rows were
  detected within it).
- **Event level**: every scored event is malicious or benign. *Exact* labels come from the
  simulator's event labels (every malicious event's uid); *window* labels approximate them: an
  event is malicious when its identity has a labels row with `first_time_ms <= time <=
  last_time_ms`, so that identity's benign events inside the window count as malicious too.
- **Score**: the calibrated anomaly score in [0, 1]. **Score, rule → 1.0** ("rules"): 1.0 when
  a Zero Trust rule fired on the event, else the score.
- **ROC-AUC**: probability that a malicious event scores above a benign one (ties count half).
  **PR-AUC**: average precision (scikit-learn's definition). Per scenario: that scenario's
  malicious events against all benign events (prevalence differs per scenario, so PR-AUCs are
  not comparable across scenarios; ROC-AUCs are). Pooled over all malicious events, scenarios
  with many labelled events (a slow drift labels every event of its identity) dominate; the
  *mean of scenarios* weighs each scenario the same.
"""


def _f(x: float, digits: int = 3) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def _dur(seconds: float) -> str:
    """Seconds in readable units.

    >>> _dur(0), _dur(42.4), _dur(518), _dur(7200), _dur(200000), _dur(float("nan"))
    ('0 s', '42 s', '8.6 min', '2.0 h', '2.3 d', '-')
    """
    if math.isnan(seconds):
        return "-"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + "Z"


def _pct(num: int, den: int) -> str:
    return f"{num}/{den} ({num / den:.0%})" if den else f"{num}/{den}"


# --- Markdown ------------------------------------------------------------------------------------
def markdown(ev: Evaluation, plots: Sequence[Path] = ()) -> str:
    t = ev.total
    model = (
        f"{ev.model.get('name')} {ev.model.get('version')}"
        if ev.model
        else "built-in cold start (no trained model)"
    )
    out = ["# Custos detection evaluation", ""]
    out += [
        f"- source: {ev.source or '-'}",
        f"- model: {model}",
        f"- {ev.events:,} events from {ev.identities:,} identities ({ev.benign_identities:,} "
        f"benign) over {ev.span_days:.2f} days",
        f"- {t.campaigns} campaigns, {t.attacked} labels rows (campaign, identity), "
        f"{t.malicious_events:,} malicious events ({ev.event_labels} event labels)",
        f"- scored in {ev.seconds:.1f} s ({ev.events_per_s:,.0f} events/s, one process)",
        "",
        "## Overall",
        "",
        "| metric | value |",
        "|---|---|",
        f"| identities detected / attacked (labels rows) | {_pct(t.detected, t.attacked)} |",
        f"| campaigns detected | {_pct(t.campaigns_detected, t.campaigns)} |",
        f"| time to detect, events (median / p90) | {_f(t.ttd_events_median, 0)} / "
        f"{_f(t.ttd_events_p90, 0)} |",
        f"| time to detect (median / p90) | {_dur(t.ttd_seconds_median)} / "
        f"{_dur(t.ttd_seconds_p90)} |",
        f"| alerts (one per incident) | {ev.alerts} |",
        f"| precision at alert level | {_f(ev.precision)} ({ev.true_alerts} / {ev.alerts}) |",
        f"| false alerts | {ev.false_alerts} |",
        f"| false alerts per 1,000 identity-days | {ev.false_per_1000_identity_days:.2f} |",
    ]
    for combined, what in ((False, "score"), (True, "score, rule → 1.0")):
        roc, pr = ev.auc(None, combined)
        out.append(f"| event ROC-AUC / PR-AUC ({what}) | {_f(roc)} / {_f(pr)} |")
        roc, pr = ev.auc_macro(combined)
        out.append(f"| event ROC-AUC / PR-AUC ({what}), mean of scenarios | {_f(roc)} / "
                   f"{_f(pr)} |")  # fmt: skip
    prevalence = t.malicious_events / ev.events if ev.events else math.nan
    out += [f"| malicious share of events | {_f(100 * prevalence, 3)} % |", ""]

    out += [
        "## Per scenario",
        "",
        "| scenario | detected / attacked | campaigns | via earlier finding | TTD events "
        "median | p90 | TTD median | p90 | true alerts | malicious events | ROC-AUC | PR-AUC "
        "| ROC-AUC (rules) | PR-AUC (rules) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    names: list[str | None] = [*sorted(ev.rows), None]
    for name in names:
        r: ScenarioRow = ev.rows[name] if name is not None else t
        roc, pr = ev.auc(name)
        roc_c, pr_c = ev.auc(name, True)
        label = r.scenario if name is not None else "**all**"
        out.append(
            f"| {label} | {_pct(r.detected, r.attacked)} | {r.campaigns_detected}/{r.campaigns} "
            f"| {r.via_earlier_finding} | {_f(r.ttd_events_median, 0)} | "
            f"{_f(r.ttd_events_p90, 0)} | {_dur(r.ttd_seconds_median)} | "
            f"{_dur(r.ttd_seconds_p90)} | {r.alerts} | {r.malicious_events:,} | {_f(roc)} | "
            f"{_f(pr)} | {_f(roc_c)} | {_f(pr_c)} |"
        )
    out.append("")

    missed = [x for x in ev.row_results if x.detected_ms is None]
    out += ["## Missed labels rows", ""]
    if missed:
        out += ["| campaign | scenario | identity | attack began |", "|---|---|---|---|"]
        out += [f"| {x.campaign_id} | {x.scenario} | {x.identity_uid} | {_iso(x.first_time_ms)} |"
                for x in missed[:100]]  # fmt: skip
        if len(missed) > 100:
            out.append(f"\n… and {len(missed) - 100} more (metrics.json lists them all).")
    else:
        out.append("None.")
    out.append("")
    false = [a for a in ev.alert_records if not a.true]
    out += ["## False alerts", ""]
    if false:
        out += ["| finding | identity | alerted |", "|---|---|---|"]
        out += [f"| {a.finding_uid} | {a.identity_uid} | {_iso(a.time_ms)} |" for a in false[:50]]
        if len(false) > 50:
            out.append(f"\n… and {len(false) - 50} more (metrics.json lists them all).")
    else:
        out.append("None.")
    out.append("")
    if plots:
        out += ["## Plots", ""]
        out += [f"![{p.stem}]({p.name})" for p in plots]
        out.append("")
    out += ["## Definitions", "", DEFINITIONS]
    return "\n".join(out)


# --- plots ---------------------------------------------------------------------------------------
def pr_points(pos: npt.ArrayLike, neg_sorted: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) at each distinct positive score, highest first (the PR steps).

    >>> r, p = pr_points([0.9, 0.5], [0.1, 0.7])
    >>> r.tolist(), p.round(4).tolist()
    ([0.5, 1.0], [1.0, 0.6667])
    """
    p = np.sort(np.asarray(pos, dtype=np.float64))
    n = np.asarray(neg_sorted, dtype=np.float64)
    if not len(p):
        return np.zeros(0), np.zeros(0)
    values = np.unique(p)[::-1]
    tp = len(p) - np.searchsorted(p, values, side="left")
    fp = len(n) - np.searchsorted(n, values, side="left")
    return tp / len(p), tp / (tp + fp)


def _from_zero(recall: np.ndarray, precision: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start the PR steps at recall 0 (the first threshold's precision holds from there)."""
    if not len(recall):
        return recall, precision
    return np.r_[0.0, recall], np.r_[precision[0], precision]


def _thin(*arrays: np.ndarray, keep: int = 4000) -> tuple[np.ndarray, ...]:
    if not len(arrays[0]) or len(arrays[0]) <= keep:
        return arrays
    idx = np.unique(np.linspace(0, len(arrays[0]) - 1, keep).astype(int))
    return tuple(a[idx] for a in arrays)


def _legend(ax: Axes, **kw: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, **kw)


def _figure(ncols: int) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(6.0 * ncols, 4.8), layout="constrained")


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _pr_plot(ev: Evaluation, path: Path) -> None:
    es: EventScores = ev.event_scores
    fig = _figure(2)
    ax_all, ax_sc = fig.subplots(1, 2)
    for combined, label, style in ((False, "score", "-"), (True, "score, rule → 1.0", "--")):
        values = es.values(combined)
        neg = np.sort(values[~es.malicious])
        rec, prec = _from_zero(*_thin(*pr_points(values[es.malicious], neg)))
        ap = ev.auc(None, combined)[1]
        ax_all.plot(rec, prec, style, drawstyle="steps-post", label=f"{label} (AP {_f(ap)})")
    prevalence = float(es.malicious.mean()) if len(es) else 0.0
    ax_all.axhline(prevalence, color="grey", lw=0.8, ls=":", label="chance")
    ax_all.set_title("All malicious events")
    values = es.score
    neg = np.sort(values[~es.malicious])
    for name, color in zip(es.scenarios, _colors(len(es.scenarios)), strict=True):
        pos = values[es.positives(name)]
        if not len(pos):
            continue
        rec, prec = _from_zero(*_thin(*pr_points(pos, neg)))
        ax_sc.plot(rec, prec, drawstyle="steps-post", color=color,
                   label=f"{name} (AP {_f(ev.auc(name)[1])})")  # fmt: skip
    ax_sc.set_title("Per scenario (score) against all benign events")
    for ax in (ax_all, ax_sc):
        _pr_axes(ax)
    fig.suptitle(f"Event-level precision-recall ({ev.event_labels} labels)")
    fig.savefig(path, dpi=110)


def _pr_axes(ax: Axes) -> None:
    ax.set_xlabel("recall (malicious events)")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    _legend(ax, loc="best")


def _roc_plot(ev: Evaluation, path: Path) -> None:
    from sklearn.metrics import roc_curve

    es = ev.event_scores
    fig = _figure(2)
    ax_all, ax_sc = fig.subplots(1, 2)
    for combined, label, style in ((False, "score", "-"), (True, "score, rule → 1.0", "--")):
        values = es.values(combined)
        if es.malicious.any() and not es.malicious.all():
            fpr, tpr, _ = roc_curve(es.malicious, values)
            fpr, tpr = _thin(fpr, tpr)
            auc = ev.auc(None, combined)[0]
            ax_all.plot(fpr, tpr, style, label=f"{label} (AUC {_f(auc)})")
    ax_all.set_title("All malicious events")
    benign = ~es.malicious
    for name, color in zip(es.scenarios, _colors(len(es.scenarios)), strict=True):
        pos = es.positives(name)
        if not pos.any() or not benign.any():
            continue
        keep = pos | benign
        fpr, tpr, _ = roc_curve(pos[keep], es.score[keep])
        fpr, tpr = _thin(fpr, tpr)
        ax_sc.plot(fpr, tpr, color=color, label=f"{name} (AUC {_f(ev.auc(name)[0])})")
    ax_sc.set_title("Per scenario (score) against all benign events")
    for ax in (ax_all, ax_sc):
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        ax.set_xlabel("false positive rate (benign events)")
        ax.set_ylabel("true positive rate (malicious events)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        _legend(ax, loc="best")
    fig.suptitle(f"Event-level ROC ({ev.event_labels} labels)")
    fig.savefig(path, dpi=110)


#: Time-to-detect buckets: (upper bound inclusive, label).
EVENT_BUCKETS = ((1, "1"), (3, "2-3"), (10, "4-10"), (30, "11-30"), (100, "31-100"),
                 (math.inf, ">100"))  # fmt: skip
SECOND_BUCKETS = ((0, "0 s"), (10, "≤10 s"), (60, "≤1 min"), (600, "≤10 min"), (3600, "≤1 h"),
                  (6 * 3600, "≤6 h"), (86400, "≤1 d"), (math.inf, ">1 d"))  # fmt: skip


def _bucket(values: Sequence[float], buckets: Sequence[tuple[float, str]]) -> list[int]:
    counts = [0] * len(buckets)
    for v in values:
        for i, (hi, _) in enumerate(buckets):
            if v <= hi:
                counts[i] += 1
                break
    return counts


def _ttd_plot(ev: Evaluation, path: Path) -> None:
    fig = _figure(2)
    axes = fig.subplots(1, 2)
    names = sorted(ev.rows)
    colors = _colors(len(names))
    for ax, attr, buckets, xlabel in (
        (axes[0], "events_to_alert", EVENT_BUCKETS, "events from the first malicious one"),
        (axes[1], "seconds_to_alert", SECOND_BUCKETS, "time from the first malicious event"),
    ):
        x = np.arange(len(buckets))
        bottom = np.zeros(len(buckets))
        for name, color in zip(names, colors, strict=True):
            counts = np.array(_bucket(getattr(ev.rows[name], attr), buckets), dtype=float)
            if counts.any():
                ax.bar(x, counts, bottom=bottom, color=color, label=name)
                bottom += counts
        ax.set_xticks(x, [label for _, label in buckets], fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("detected labels rows")
        ax.grid(axis="y", alpha=0.3)
    _legend(axes[0])
    t = ev.total
    fig.suptitle(f"Time to detect ({t.detected} of {t.attacked} labels rows detected)")
    fig.savefig(path, dpi=110)


def _scores_plot(ev: Evaluation, path: Path) -> None:
    es = ev.event_scores
    fig = _figure(2)
    ax_bm, ax_sc = fig.subplots(1, 2)
    bins = np.linspace(0.0, 1.0, 51)
    ax_bm.hist(es.score[~es.malicious], bins=bins, color="tab:blue", alpha=0.6,
               label=f"benign ({int((~es.malicious).sum()):,})")  # fmt: skip
    ax_bm.hist(es.score[es.malicious], bins=bins, color="tab:red", alpha=0.6,
               label=f"malicious ({int(es.malicious.sum()):,})")  # fmt: skip
    ax_bm.set_title("Benign against malicious events")
    for name, color in zip(es.scenarios, _colors(len(es.scenarios)), strict=True):
        values = es.score[es.positives(name)]
        if len(values):
            ax_sc.hist(values, bins=bins, histtype="step", color=color, lw=1.4,
                       label=f"{name} ({len(values):,})")  # fmt: skip
    ax_sc.set_title("Malicious events per scenario")
    for ax in (ax_bm, ax_sc):
        if len(es):
            ax.set_yscale("log")
        ax.set_xlabel("calibrated score")
        ax.set_ylabel("events (log)")
        ax.grid(alpha=0.3)
        _legend(ax)
    rules = int(es.rule.sum())
    fig.suptitle(
        f"Score distributions ({ev.event_labels} labels; a rule fired on {rules:,} events)"
    )
    fig.savefig(path, dpi=110)


def plots(ev: Evaluation, out_dir: Path) -> list[Path]:
    """Write the PNGs into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out = []
    drawings = (
        ("pr_curve.png", _pr_plot),
        ("roc_curve.png", _roc_plot),
        ("time_to_detect.png", _ttd_plot),
        ("scores.png", _scores_plot),
    )
    for name, draw in drawings:
        path = out_dir / name
        draw(ev, path)
        out.append(path)
    return out


# --- files ---------------------------------------------------------------------------------------
def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    return x


def write(ev: Evaluation, out_dir: Path) -> list[Path]:
    """``report.md``, ``metrics.json`` and the plots into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = plots(ev, out_dir)
    report = out_dir / "report.md"
    report.write_text(markdown(ev, pngs), encoding="utf-8")
    data = {
        "metrics": ev.metrics(),
        "event_labels": ev.event_labels,
        "source": ev.source,
        "model": ev.model,
        "labels_rows": [asdict(r) for r in ev.row_results],
        "alerts": [asdict(a) | {"true": a.true} for a in ev.alert_records],
    }
    metrics = out_dir / "metrics.json"
    metrics.write_text(json.dumps(_json_safe(data), indent=1, allow_nan=False) + "\n")
    return [report, metrics, *pngs]
