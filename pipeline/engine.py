"""The batch loop of detection, written once: feedback due → detect → signals → ticks.

Pure code: no Kafka, no files. :class:`Engine` drives a :class:`~pipeline.detection.Detection`
over micro-batches with the per-identity state in any ``str → bytes`` mapping. ``custos replay``
(files out), ``custos evaluate``, training and the notebooks (memory) run its loop
(:meth:`Engine.run`); the worker calls its steps one unit of work at a time (:meth:`step` with
signals routed through Kafka to the worker owning each identity, :meth:`signals`,
:meth:`feedback`, :meth:`tick`); the parity test checks both give the same findings.

Per batch, in order: analyst feedback whose time has come (before the first batch that starts
at or after its ``at_ms``), the batch itself, the signals it raised about other identities
(applied at once: offline there is only one owner); at the end, feedback still due and a tick
at the last event time (quiet incidents close).

>>> from pipeline.detection import Detection
>>> engine = Engine(Detection())
>>> engine.finish()
[]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence

from pipeline.alerts.decisions import Decision
from pipeline.control.feedback import Feedback, FeedbackOutcome, Schedule
from pipeline.detection import BatchResult, Detection
from pipeline.events.schemas import Event
from pipeline.scores.explanations import Signal

__all__ = ["Engine", "FeedbackSink"]

#: Where applied feedback goes (replay writes its commands and reports); without one, the
#: decisions feedback causes join the next batch's result.
FeedbackSink = Callable[[Feedback, FeedbackOutcome, list[Decision]], None]


class Engine:
    def __init__(
        self,
        detection: Detection,
        store: MutableMapping[str, bytes] | None = None,
        *,
        feedback: Iterable[Feedback] = (),
        on_feedback: FeedbackSink | None = None,
    ) -> None:
        self.detection = detection
        self.store: MutableMapping[str, bytes] = {} if store is None else store
        self.schedule = Schedule(feedback)
        self.on_feedback = on_feedback
        self.fed = 0  # events processed so far

    def _feedback_until(self, until_ms: int | None) -> list[Decision]:
        out: list[Decision] = []
        for fb in self.schedule.due(until_ms):
            outcome, decisions = self.detection.apply_feedback(fb, self.store)
            if self.on_feedback is not None:
                self.on_feedback(fb, outcome, decisions)
            else:
                out.extend(decisions)
        return out

    def step(
        self,
        events: Sequence[Event],
        store: MutableMapping[str, bytes] | None = None,
        *,
        route_signals: bool = False,
    ) -> BatchResult:
        """One micro-batch (non-empty): feedback due, detection, the signals it raised.

        ``store``: this batch's state view (the worker stages writes until its outputs are
        delivered); ``route_signals``: leave ``result.signals`` to the caller, which sends
        each to the worker owning its identity, instead of applying them here.
        """
        store = self.store if store is None else store
        earlier = self._feedback_until(events[0].time_ms) if self.schedule else []
        result = self.detection.process(events, store)
        self.fed += len(events)
        result.decisions[:0] = earlier
        if result.signals and not route_signals:
            result.decisions.extend(self.detection.apply_signals(result.signals, store))
        return result

    def signals(
        self, signals: Sequence[Signal], store: MutableMapping[str, bytes] | None = None
    ) -> list[Decision]:
        """Evidence about identities this process owns, raised elsewhere (routed signals)."""
        return self.detection.apply_signals(list(signals), self.store if store is None else store)

    def feedback(
        self, fb: Feedback, store: MutableMapping[str, bytes] | None = None
    ) -> tuple[FeedbackOutcome, list[Decision]]:
        """One analyst decision as it arrives (the worker's feedback topic)."""
        return self.detection.apply_feedback(fb, self.store if store is None else store)

    def tick(
        self, store: MutableMapping[str, bytes] | None = None, *, uids: Iterable[str] | None = None
    ) -> list[Decision]:
        """Close quiet incidents as of the last event time (``uids``: only these of them; the
        worker goes through them a slice at a time)."""
        if not self.detection.watermark_ms:
            return []
        store = self.store if store is None else store
        if uids is None:  # replay's call, unchanged
            return self.detection.tick(self.detection.watermark_ms, store)
        return self.detection.tick(self.detection.watermark_ms, store, uids)

    def finish(self) -> list[Decision]:
        """Feedback still due, then a tick at the last event time (quiet incidents close)."""
        return self._feedback_until(None) + self.tick()

    def run(
        self,
        events: Iterable[Event],
        batch: int,
        before: Callable[[Engine], None] | None = None,
    ) -> Iterator[tuple[list[Event], BatchResult]]:
        """Micro-batches of ``batch`` events in the given order, then :meth:`finish` (as a
        last result with no events, if it decided anything). ``before`` runs ahead of each
        batch (a model swap at a batch boundary).

        The identity states are written to :attr:`store` at the end (``defer_writes``): nothing
        reads them from there meanwhile, and encoding each after every batch costs more than
        scoring several events.
        """
        det = self.detection
        with det.deferring(True):
            try:
                buf: list[Event] = []
                for ev in events:
                    buf.append(ev)
                    if len(buf) >= batch:
                        if before is not None:
                            before(self)
                        yield buf, self.step(buf)
                        buf = []
                if buf:
                    if before is not None:
                        before(self)
                    yield buf, self.step(buf)
                late = self.finish()
                if late:
                    yield [], BatchResult(decisions=late)
            finally:
                det.flush_states(self.store)
