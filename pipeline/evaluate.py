"""Detection quality on labelled traffic: the same code path as the worker, offline.

An alert counts for a campaign when it names the campaign's identity and comes at or after its
first malicious event. Alerts on identities no campaign touched — or on attacked identities
before their attack began — are false alerts, reported per 1,000 identity-days.
"""

from __future__ import annotations

import bisect
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from pipeline.policy import Decision
from pipeline.schemas import Event
from pipeline.scoring import BatchResult, Detection
from pipeline.simulate.labels import LabelRow


def run_offline(
    events: Iterable[Event], detection: Detection, *, batch: int = 2000
) -> Iterator[tuple[list[Event], BatchResult]]:
    """Feed events (in the given order) through ``detection`` in micro-batches."""
    store: dict[str, bytes] = {}
    buf: list[Event] = []

    def run(events: list[Event]) -> BatchResult:
        result = detection.process(events, store)
        if result.signals:  # the worker routes these through Kafka to the owning partition
            result.decisions.extend(detection.apply_signals(result.signals, store))
        return result

    for ev in events:
        buf.append(ev)
        if len(buf) >= batch:
            yield buf, run(buf)
            buf = []
    if buf:
        yield buf, run(buf)
    if detection.watermark_ms:
        yield [], BatchResult(decisions=detection.tick(detection.watermark_ms, store))


@dataclass
class ScenarioRow:
    scenario: str
    attacked: int = 0
    detected: int = 0
    events_to_alert: list[int] = field(default_factory=list)
    seconds_to_alert: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.detected / self.attacked if self.attacked else 0.0


@dataclass
class Evaluation:
    rows: dict[str, ScenarioRow]
    identities: int
    benign_identities: int
    span_days: float
    false_alerts: int
    events: int
    seconds: float

    @property
    def false_per_1000_identity_days(self) -> float:
        days = self.benign_identities * self.span_days
        return 1000.0 * self.false_alerts / days if days else 0.0

    def table(self) -> list[str]:
        out = [
            f"{'scenario':<24} {'detected':>9} {'rate':>6} {'events→alert':>13} {'s→alert':>9}",
        ]
        total = ScenarioRow("all")
        for name in sorted(self.rows):
            r = self.rows[name]
            total.attacked += r.attacked
            total.detected += r.detected
            total.events_to_alert += r.events_to_alert
            total.seconds_to_alert += r.seconds_to_alert
            out.append(_row(r))
        out.append(_row(total))
        out.append(
            f"false alerts: {self.false_alerts} on {self.benign_identities:,} benign identities "
            f"over {self.span_days:.1f} days = {self.false_per_1000_identity_days:.1f} "
            "per 1,000 identity-days"
        )
        out.append(f"{self.events:,} events scored in {self.seconds:.1f} s "
                   f"({self.events / self.seconds:,.0f} events/s, one process)")  # fmt: skip
        return out


def _row(r: ScenarioRow) -> str:
    med_e = f"{statistics.median(r.events_to_alert):.0f}" if r.events_to_alert else "-"
    med_s = f"{statistics.median(r.seconds_to_alert):.0f}" if r.seconds_to_alert else "-"
    return f"{r.scenario:<24} {r.detected:>4}/{r.attacked:<4} {r.rate:>6.0%} {med_e:>13} {med_s:>9}"


def evaluate(events: Iterable[Event], labels: list[LabelRow], detection: Detection) -> Evaluation:
    """Run ``events`` through ``detection`` and score the alerts against ``labels``."""
    attacked: dict[str, list[LabelRow]] = defaultdict(list)
    for row in labels:
        attacked[row.identity_uid].append(row)
    times: dict[str, list[int]] = defaultdict(list)  # attacked identities' event times
    identities: set[str] = set()
    first = last = None
    alerts: dict[str, list[Decision]] = defaultdict(list)
    n = 0
    t0 = time.perf_counter()
    for batch, result in run_offline(events, detection):
        for ev in batch:
            identities.add(ev.identity_uid)
            if ev.identity_uid in attacked:
                times[ev.identity_uid].append(ev.time_ms)
        if batch:
            n += len(batch)
            lo, hi = min(e.time_ms for e in batch), max(e.time_ms for e in batch)
            first = lo if first is None else min(first, lo)
            last = hi if last is None else max(last, hi)
        for d in result.decisions:
            if d.is_alert and d.action in ("create", "update"):
                alerts[d.identity_uid].append(d)
    seconds = time.perf_counter() - t0

    rows: dict[str, ScenarioRow] = {}
    for row in labels:
        r = rows.setdefault(row.scenario, ScenarioRow(row.scenario))
        r.attacked += 1
        hit = [
            d.time_ms for d in alerts.get(row.identity_uid, []) if d.time_ms >= row.first_time_ms
        ]
        if hit:
            r.detected += 1
            t_alert = min(hit)
            ts = sorted(times[row.identity_uid])
            a = bisect.bisect_left(ts, row.first_time_ms)
            b = bisect.bisect_right(ts, t_alert)
            r.events_to_alert.append(max(1, b - a))
            r.seconds_to_alert.append((t_alert - row.first_time_ms) / 1000)
    false = 0
    for uid, ds in alerts.items():
        created = {d.finding_uid for d in ds}
        if uid not in attacked:
            false += len(created)
        else:
            start = min(r.first_time_ms for r in attacked[uid])
            false += len({d.finding_uid for d in ds if d.last_seen_ms < start})
    span_days = ((last or 0) - (first or 0)) / 86_400_000
    return Evaluation(
        rows=rows,
        identities=len(identities),
        benign_identities=len(identities - set(attacked)),
        span_days=span_days,
        false_alerts=false,
        events=n,
        seconds=seconds,
    )
