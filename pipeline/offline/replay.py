"""``custos replay``: event files through exactly the worker's code path, with no Kafka.

Input: JSONL (one event per line) or Parquet (the simulator's layout: an ``event`` column of
JSON, or any column named ``event``/``value``). Events are decoded by the worker's decoder,
sorted into event-time order (stable), and fed in micro-batches of ``CUSTOS_WORKER_BATCH`` to
:class:`pipeline.detection.Detection` with the same model selection (:class:`ModelRuntime`:
promoted model after the warm-up), the same signals routing, the same findings and the same
quarantine policy. Outputs in ``DIR``:

* ``alerts.jsonl`` - OCSF 2004 findings, as the worker publishes them on ``custos.alerts``;
* ``quarantine.jsonl`` - the OpenC2 commands the worker would publish (unsigned: signing is
  I/O with a key; ``topic`` says quarantine or approvals), stamped with event time;
* ``scores.parquet`` - one row per event: uid, identity, kind, time, score, raw, learned, peer
  weight, top features and rules;
* ``features.parquet`` - the deviation vector each event fed the detector (one float column
  per :data:`~pipeline.baselines.layout.DEVIATIONS` name, plus uid, identity, time, learned):
  the training set for a new shared detector;
* ``deadletter.jsonl`` - rejected input: original bytes (base64), reason, detail, source file
  and line (the "offset");
* ``reports.jsonl`` - which model scored (loaded / pending / refused), and what each replayed
  analyst feedback did (``--feedback``).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec
import numpy as np

from pipeline.alerts.decisions import Decision
from pipeline.alerts.findings import build_finding, encode_finding
from pipeline.config import Settings
from pipeline.control.feedback import Feedback, FeedbackOutcome
from pipeline.control.feedback import read as read_feedback
from pipeline.control.reports import Report
from pipeline.control.reports import encode as encode_report
from pipeline.detection import Detection
from pipeline.engine import Engine
from pipeline.errors import InvalidEvent
from pipeline.events.schemas import Event, EventDecoder
from pipeline.models.runtime import ModelRuntime
from pipeline.quarantine.decisions import release_for
from pipeline.quarantine.policy import QuarantinePolicy
from pipeline.scores.explanations import Score

__all__ = ["SCORE_COLUMNS", "ReplayResult", "read_raw", "replay"]


def read_raw(path: Path) -> Iterator[tuple[int, bytes]]:
    """(offset, raw event bytes): line number in JSONL, row number in Parquet."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        column = next((c for c in ("event", "value") if c in names), None)
        if column is None:
            raise ValueError(f"{path}: no 'event' or 'value' column (columns: {names})")
        n = 0
        for batch in pf.iter_batches(columns=[column]):
            for value in batch.column(0).to_pylist():
                raw = value if isinstance(value, bytes) else (value or "").encode()
                yield n, raw
                n += 1
        return
    with open(path, "rb") as fh:
        # Every line is a record, a blank one too (an empty message, a tombstone exported as
        # nothing): it is dead-lettered like the worker's, never dropped without a count.
        for n, line in enumerate(fh):
            yield n, line.rstrip(b"\r\n")


@dataclass
class ReplayResult:
    events: int = 0
    scored: int = 0
    dead: int = 0
    findings: int = 0
    alerts: int = 0
    commands: int = 0
    feedback: int = 0
    seconds: float = 0.0
    model: dict[str, str] | None = None
    dead_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return self.scored / self.seconds if self.seconds else 0.0


#: scores.parquet columns, in order.
SCORE_COLUMNS = ("event_uid", "identity_uid", "identity_kind", "time_ms", "score", "raw",
                 "learned", "peer_weight", "top_features", "rules")  # fmt: skip


def _scores_schema() -> Any:
    import pyarrow as pa

    s, f = pa.string(), pa.float64()
    types = [s, s, s, pa.int64(), f, f, pa.bool_(), f, pa.list_(s), pa.list_(s)]
    return pa.schema(list(zip(SCORE_COLUMNS, types, strict=True)))


class _Outputs:
    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.alerts: IO[bytes] = open(out / "alerts.jsonl", "wb")
        self.quarantine: IO[bytes] = open(out / "quarantine.jsonl", "wb")
        self.dead: IO[bytes] = open(out / "deadletter.jsonl", "wb")
        self.reports: IO[bytes] = open(out / "reports.jsonl", "wb")
        self.rows: dict[str, list[Any]] = {k: [] for k in SCORE_COLUMNS}
        self.features: list[np.ndarray] = []

    def close(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from pipeline.baselines.layout import DEVIATIONS

        for fh in (self.alerts, self.quarantine, self.dead, self.reports):
            fh.close()
        table = pa.table(self.rows, schema=_scores_schema())
        pq.write_table(table, self.out / "scores.parquet", compression="zstd")
        x = np.concatenate(self.features) if self.features else np.zeros((0, len(DEVIATIONS)))
        cols: dict[str, Any] = {k: self.rows[k] for k in ("event_uid", "identity_uid", "time_ms",
                                                          "learned")}  # fmt: skip
        cols.update({name: x[:, j].astype(np.float32) for j, name in enumerate(DEVIATIONS)})
        pq.write_table(pa.table(cols), self.out / "features.parquet", compression="zstd")


def _score_row(rows: dict[str, list[Any]], s: Score) -> None:
    rows["event_uid"].append(s.event_uid)
    rows["identity_uid"].append(s.identity_uid)
    rows["identity_kind"].append(s.identity_kind)
    rows["time_ms"].append(s.time_ms)
    rows["score"].append(s.score)
    rows["raw"].append(s.raw)
    rows["learned"].append(s.learned)
    rows["peer_weight"].append(s.peer_weight)
    rows["top_features"].append([f"{c.feature}:{c.kind}" for c in s.contributions[:3]])
    rows["rules"].append([h.rule for h in s.rules])


def replay(
    settings: Settings,
    events_path: Path,
    out: Path,
    *,
    detection: Detection | None = None,
    feedback_path: Path | None = None,
    echo: Any = None,
) -> ReplayResult:
    """Run ``events_path`` through the worker's code path; write the outputs into ``out``.

    ``feedback_path``: analyst feedback (JSONL of :class:`pipeline.control.feedback.Feedback`),
    applied when event time reaches each one's ``at_ms`` - to see what it would change.
    """
    from pipeline import __version__

    # Replay is read by people, score by score: every score explained (top_features).
    detection = detection or Detection.from_settings(settings, keep_rows=True, explain_all=True)
    runtime = ModelRuntime(settings, "replay")
    quarantine = QuarantinePolicy.from_settings(settings)
    # Recorded traffic: any time is plausible (the worker bounds future skew by wall clock).
    decoder = EventDecoder(max_future_skew_ms=10**13)
    res = ReplayResult()
    outs = _Outputs(out)

    def report(r: Report) -> None:
        outs.reports.write(encode_report(r) + b"\n")

    def on_feedback(fb: Feedback, outcome: FeedbackOutcome, decisions: list[Decision]) -> None:
        res.feedback += 1
        publish(decisions, approved_by=fb.by if fb.action == "confirm" else None)
        cancel = release_for(fb, outcome, fb.at_ms)
        if cancel is not None:
            line = {"topic": "quarantine", "identity": fb.identity, "approval": "analyst",
                    "command": cancel}  # fmt: skip
            outs.quarantine.write(msgspec.json.encode(line) + b"\n")
            res.commands += 1
        kind = f"feedback.{outcome.outcome}"
        report(Report(kind, "replay", fb.at_ms, subject=fb.identity, reason=fb.action,
                      detail=outcome.detail))  # fmt: skip

    engine = Engine(detection, feedback=read_feedback(feedback_path) if feedback_path else (),
                    on_feedback=on_feedback)  # fmt: skip

    def publish(decisions: list[Decision], approved_by: str | None = None) -> None:
        for d in decisions:
            outs.alerts.write(
                encode_finding(build_finding(d, product_version=__version__)) + b"\n"
            )
            res.findings += 1
            res.alerts += int(d.is_alert and d.action == "create")
        t = max((d.time_ms for d in decisions), default=0)
        for p in quarantine.commands(decisions, t, approved_by=approved_by):
            topic = "quarantine" if p.approval == "automatic" else "approvals"
            line = {"topic": topic, "identity": p.identity, "approval": p.approval,
                    "command": p.message}  # fmt: skip
            outs.quarantine.write(msgspec.json.encode(line) + b"\n")
            res.commands += 1

    t0 = time.perf_counter()
    try:
        for r in runtime.start(detection):
            report(r)
        valid: list[Event] = []
        for offset, raw in read_raw(events_path):
            res.events += 1
            try:
                if not raw.strip():
                    raise InvalidEvent("invalid_json", "empty record (an empty line)")
                valid.append(decoder.decode(raw))
            except InvalidEvent as exc:
                res.dead += 1
                res.dead_reasons[exc.reason] = res.dead_reasons.get(exc.reason, 0) + 1
                outs.dead.write(
                    json.dumps(
                        {"reason": exc.reason, "detail": exc.detail[:1000],
                         "source": str(events_path), "offset": offset,
                         "value_b64": base64.b64encode(raw).decode()}
                    ).encode() + b"\n"
                )  # fmt: skip
        valid.sort(key=lambda e: e.time_ms)  # stable: ties keep file order
        for chunk, result in engine.run(valid, settings.worker_batch):
            for s in result.scores:
                _score_row(outs.rows, s)
            if result.rows is not None:
                outs.features.append(result.rows.astype(np.float32))
            res.scored += len(result.scores)
            publish(result.decisions)
            if chunk:  # a model is adopted at a batch boundary, as the worker does
                adopted = runtime.maybe_adopt(detection)
                if adopted is not None:
                    report(adopted)
        if res.scored + res.dead != res.events:  # every record is scored or dead-lettered
            raise RuntimeError(f"replay lost records: {res.events} read, {res.scored} scored, "
                               f"{res.dead} dead-lettered")  # fmt: skip
    finally:
        res.seconds = time.perf_counter() - t0
        outs.close()
    res.model = detection.model_ref
    return res
