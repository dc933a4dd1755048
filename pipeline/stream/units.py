"""The worker's units of work: each is one engine call between reading and committing.

A unit (a batch of events, of signals, one feedback message, a tick) reads its input, calls
:class:`pipeline.engine.Engine`, sends every output through an :class:`Outbox`, waits for the
broker to acknowledge them, and only then writes the identity state it staged and counts.
Units run one at a time (``lock``): a unit's staged state must not be read by another.

:mod:`pipeline.stream.hot` hands them the records it consumes, :mod:`pipeline.stream.app`
wires the timer and control topics; nothing here starts a consumer.

Offsets: each identity's state records the input offsets it includes
(:mod:`pipeline.stream.offsets`), so an event re-read after a crash is recognised and applied
to the shared models only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from joserfc.jwk import KeySet

from pipeline.alerts.decisions import Decision
from pipeline.alerts.findings import build_finding, encode_finding
from pipeline.config import Settings
from pipeline.control.reports import Report
from pipeline.control.reports import encode as encode_report
from pipeline.control.signing import (
    SigningKey,
    analyst_keys,
    trusted_keys,
    verify_agent_model_update,
    verify_feedback,
    with_analysts,
)
from pipeline.engine import Engine
from pipeline.errors import ConfigError, InvalidEvent
from pipeline.events.deadletter import dead_letter
from pipeline.events.schemas import Event, EventDecoder
from pipeline.kafka.ingest import IngestStats
from pipeline.kafka.metrics import Histogram
from pipeline.models.runtime import ModelRuntime
from pipeline.quarantine.commands import sign as sign_command
from pipeline.quarantine.decisions import release_for
from pipeline.quarantine.policy import QuarantinePolicy
from pipeline.scores.agent_models import AgentModelRegistry, InvalidAgentModelUpdate
from pipeline.scores.explanations import Signal
from pipeline.stream.delivery import Outbox, spill
from pipeline.stream.offsets import SOURCE_HEADER, SharedCheckpoint, Source, parse_source
from pipeline.stream.store import PartitionStore, Staged

__all__ = ["TICK_SLICE_S", "TICK_STEP", "Topics", "Units", "WorkerStats"]

log = logging.getLogger("custos.worker")

#: A tick's unit of work looks at open incidents :data:`TICK_STEP` at a time (~12 µs each
#: when not due, ~0.2 ms each when closed) until it has spent this long, then frees the event
#: loop before the next slice.
TICK_SLICE_S = 0.02
TICK_STEP = 64

#: The re-keyed topic's number in :attr:`Topics.index` (its records name where they were first
#: read: :meth:`Units.source_of`).
_REKEYED = 3


@dataclass
class WorkerStats(IngestStats):
    """Ingest counters plus what detection produced."""

    findings: int = 0
    alerts: int = 0
    quarantines: int = 0  # contain commands published (re-issues included)
    approvals: int = 0  # contain commands sent for an analyst's approval
    signals: int = 0  # evidence about other identities, sent to and applied by their owner
    batches: int = 0
    scored: int = 0
    replayed: int = 0  # events applied to state again, quietly, after a restart (hot.py)
    score_seconds: float = 0.0
    # Wall time per stage of the per-event path (consume, decode, score, publish, deliver),
    # so the cost per event can be split where it is spent (custos bench prints it).
    stage_seconds: dict[str, float] = field(default_factory=dict)
    # Kafka timestamp of an event → its batch scored (ms), for the most recent events.
    latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=50_000))
    # The same (seconds) for every event since the start: the difference of two scrapes is
    # one period's alone, where the window above still holds whatever came before.
    latency: Histogram = field(default_factory=Histogram)

    def latency_quantiles(self) -> tuple[float, float]:
        if not self.latency_ms:
            return 0.0, 0.0
        p50, p99 = np.quantile(np.fromiter(self.latency_ms, float), [0.5, 0.99])
        return float(p50), float(p99)


@dataclass(frozen=True)
class Topics:
    """The worker's topics (faust ``Topic`` objects: anything with ``send`` and a name)."""

    rekeyed: Any
    signals: Any
    deadletter: Any
    alerts: Any
    scores: Any
    quarantine: Any
    approvals: Any
    reports: Any
    feedback: Any
    #: Stable small numbers for the sources offsets are recorded under (offsets.py).
    index: dict[str, int]


def _version() -> str:
    from pipeline import __version__

    return __version__


class Units:
    """The worker's units of work over one engine, one state store and one checkpoint."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        store: PartitionStore,
        topics: Topics,
        checkpoint: SharedCheckpoint,
        *,
        quarantine: QuarantinePolicy,
        command_signer: SigningKey,
        runtime: ModelRuntime,
        service: str,
        die: Callable[[str], None],
        spill_path: Path,
        state_written: Callable[[], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.detection = engine.detection
        self.decoder = EventDecoder.from_settings(settings)
        self.store = store
        self.topics = topics
        self.checkpoint = checkpoint
        self.quarantine = quarantine
        self.command_signer = command_signer
        self.runtime = runtime
        self.service = service
        self.die = die
        self.spill_path = spill_path
        self.state_written = state_written
        self.stats = WorkerStats()
        # One unit of work at a time (a batch, signals, feedback, a tick): its state is staged
        # while its outputs are delivered, and no other unit may read the identity meanwhile.
        self.lock = asyncio.Lock()
        # Max offset per source of the units of work that ended (what a snapshot includes).
        self.processed: dict[Source, int] = dict(checkpoint.offsets)

    # --- pieces every unit uses ---------------------------------------------------------------

    def outbox(self) -> Outbox:
        return Outbox(self.settings.worker_send_timeout_s, self.die)

    def source_of(self, event: Any) -> tuple[Source, int]:
        """Where a record was first read: a re-keyed one names its origin in a header."""
        msg = event.message
        idx = self.topics.index.get(msg.topic, 0)
        if idx == _REKEYED:
            for name, value in msg.headers or ():
                if name == SOURCE_HEADER:
                    origin = parse_source(value)
                    if origin is not None:
                        # Its own mark: a re-keyed record can trail the identity's direct
                        # records of the same source partition.
                        (t, p), off = origin
                        return (128 + t, p), off
        return (idx, msg.partition), msg.offset

    def snapshot(self, done: dict[Source, int], learned: bool = True) -> None:
        """End of a unit of work: its offsets count as processed; the shared models' snapshot
        (serialised when next saved, and only if the unit may have changed them)."""
        for src, off in done.items():
            if off > self.processed.get(src, -1):
                self.processed[src] = off
        changed = learned or not self.checkpoint.holds()
        self.checkpoint.snapshot(self.processed,
                                 self.detection.shared_bytes if changed else None)  # fmt: skip

    async def publish(
        self, out: Outbox, decisions: list[Decision], approved_by: str | None = None,
        proof: str | None = None,
    ) -> None:  # fmt: skip
        """Queue findings, then commands, on ``out`` (counted once delivered)."""
        t = self.topics
        findings = alerts_n = quarantines = approvals = 0
        for d in decisions:
            finding = build_finding(d, product_version=_version())
            await out.send(t.alerts, d.identity_uid.encode(), encode_finding(finding))
            findings += 1
            alerts_n += int(d.is_alert and d.action == "create")
        now_ms = int(time.time() * 1000)
        # An analyst's confirmation is the human approval: such commands never wait.
        commands = self.quarantine.commands(decisions, now_ms, approved_by=approved_by,
                                            approval_proof=proof)  # fmt: skip
        if commands:
            # The findings first, acknowledged: no quarantine without its finding on record
            # (a responder or analyst looks it up when the command arrives).
            await out.barrier()
        for p in commands:
            topic = t.approvals if p.approval == "required" else t.quarantine
            await out.send(topic, p.identity.encode(), sign_command(p.message, self.command_signer))
            quarantines += int(p.approval == "automatic")
            approvals += int(p.approval != "automatic")

        def count() -> None:
            self.stats.findings += findings
            self.stats.alerts += alerts_n
            self.stats.quarantines += quarantines
            self.stats.approvals += approvals

        out.then.append(count)

    async def finish(self, out: Outbox, staged: Staged | None = None,
                     through: bool = False) -> None:  # fmt: skip
        """Delivery, then state, then the counters; a refusal stops the worker uncommitted.

        In snapshot mode the state stays in memory until the next snapshot, apart from a unit
        with no input a restart could replay (``through``: ticks, feedback), written now."""
        await out.delivered()
        if staged is not None:
            if staged.writes:
                store = self.store
                keys = list(staged.writes) if through and store.deferred else ()
                staged.commit()
                if not store.deferred or store.write_through(keys):
                    await self.state_written()  # acknowledged before the next unit starts
            self.store.forget()  # a unit's marks never outlive it (units hold the lock)

    async def send_dead(self, out: Outbox, event: Any, exc: InvalidEvent, now_ms: int) -> None:
        """Bad input (an event, a feedback message) to the dead-letter topic, bytes intact."""
        msg = event.message
        dl = dead_letter(
            exc, key=event.key, value=event.value, topic=msg.topic, partition=msg.partition,
            offset=msg.offset, timestamp_ms=int(msg.timestamp * 1000), now_ms=now_ms,
            source_headers=list(msg.headers or []),
        )  # fmt: skip
        # A refused dead letter stops the worker; the record is kept on local disk first.
        await out.send(self.topics.deadletter, dl.key, dl.value,
                       headers=dl.headers,  # type: ignore[arg-type]
                       on_refused=lambda e: spill(self.spill_path, dl, e))  # fmt: skip
        out.then.append(lambda: self.stats.dead.add(msg.topic, dl.reason))

    async def report(self, r: Report) -> None:
        out = self.outbox()
        await out.send(self.topics.reports, (r.subject or r.service).encode(), encode_report(r))
        await self.finish(out)

    # --- the units ----------------------------------------------------------------------------

    async def events(self, batch: Iterable[Any], quiet: bool = False) -> None:
        """A batch of input records: decode (or dead-letter), re-key, detect, publish.

        ``quiet``: records whose outputs were delivered before a restart (snapshot mode:
        replayed from the last snapshot up to the offsets committed), applied to the state and
        the shared models only - nothing is sent."""
        async with self.lock:
            await self._events(batch, quiet)

    async def _events(self, batch: Iterable[Any], quiet: bool = False) -> None:
        store, t = self.store, self.topics
        store.forget()
        now_ms = int(time.time() * 1000)
        out = self.outbox()
        valid: list[Event] = []
        again: list[Event] = []  # applied to their identity before a restart, not to shared
        mine: dict[str, Any] = {}  # identity uid -> one of its events in this batch
        applied: dict[str, dict[Source, int]] = {}  # what each identity's state includes
        done: dict[Source, int] = {}
        stamps: list[float] = []  # Kafka timestamps of the valid events (latency metric)
        stage = self.stats.stage_seconds
        # Per-record work runs ~100k times a second: what it reads is bound here once.
        index = self.topics.index
        shared = self.checkpoint.offsets
        store_applied = store.applied
        shared_get, done_get, applied_get = shared.get, done.get, applied.get
        valid_append, stamps_append = valid.append, stamps.append
        t_in = time.perf_counter()
        records = list(batch)
        # The whole batch at once (its duplicate-key scans are one compiled call); a value of
        # None, a tombstone, is refused as such.
        decoded = self.decoder.decode_batch([event.value for event in records], now_ms)
        for event, ev in zip(records, decoded, strict=True):
            msg = event.message
            idx = index.get(msg.topic, 0)
            if idx == _REKEYED:  # its origin is in a header (source_of)
                src, offset = self.source_of(event)
            else:
                src, offset = (idx, msg.partition), msg.offset
            if offset > done_get(src, -1):
                done[src] = offset
            if isinstance(ev, InvalidEvent):  # refused
                if not quiet:
                    await self.send_dead(out, event, ev, now_ms)
                continue
            uid = ev.identity_uid
            if event.key != uid.encode():
                if quiet:  # re-keyed before: it comes back on the re-keyed topic
                    continue
                where = f"{src[0]}:{src[1]}:{offset}".encode()
                await out.send(
                    t.rekeyed, uid.encode(), event.value, headers=[(SOURCE_HEADER, where)]
                )
                continue
            marks = applied_get(uid)
            if marks is None:
                marks = applied[uid] = store_applied(uid)
            if offset <= marks.get(src, -1):  # re-read after a restart: in the state already
                if offset > shared_get(src, -1):
                    again.append(ev)
                continue
            marks[src] = offset
            valid_append(ev)
            stamps_append(msg.timestamp)
            mine[uid] = event  # as store.remember (its last event in the batch)
        t_dec = time.perf_counter()
        stage["decode"] = stage.get("decode", 0.0) + t_dec - t_in
        if again:
            # The shared models (peers, detector, calibrators) learn these once; the identity
            # states and outputs of this pass are thrown away: they were written before. So
            # the pass writes through (to a store thrown away) and reads states from the store,
            # never the core's deferred ones, which it would change in place.
            det = self.detection
            det.flush_states(store, {ev.identity_uid for ev in again})
            with det.deferring(False):
                self.engine.step(again, Staged(store), route_signals=True)
            log.info("%d re-read events applied to the shared models only", len(again))
        if not valid:
            await self.finish(out)
            self.snapshot(done, learned=bool(again))  # dead letters and re-keying teach nothing
            return
        staged = Staged(store)
        t0 = time.perf_counter()
        result = self.engine.step(valid, staged, route_signals=True)
        t1 = time.perf_counter()
        self.stats.score_seconds += t1 - t0
        stage["score"] = stage.get("score", 0.0) + t1 - t0
        if quiet:
            self.stats.replayed += len(valid)
        else:
            if self.settings.emit_scores:
                for s in result.scores:
                    await out.send(t.scores, s.identity_uid.encode(), msgspec.json.encode(s))
            for sig in result.signals:
                await out.send(t.signals, sig.identity_uid.encode(),
                               msgspec.msgpack.encode(sig))  # fmt: skip
            await self.publish(out, result.decisions)

        def count() -> None:
            self.stats.batches += 1
            self.stats.scored += len(valid)
            self.stats.signals += len(result.signals)
            self.stats.record("inputs", valid, 0)
            seconds = time.time() - np.asarray(stamps, dtype=float)
            self.stats.latency.observe(seconds)
            self.stats.latency_ms.extend((seconds * 1000).tolist())

        if not quiet:
            out.then.append(count)
        store.events = mine  # the table files each identity's write under its own partition
        store.marks = {uid: applied[uid] for uid in mine}
        t2 = time.perf_counter()
        stage["publish"] = stage.get("publish", 0.0) + t2 - t1
        await self.finish(out, staged)
        self.snapshot(done)
        stage["deliver"] = stage.get("deliver", 0.0) + time.perf_counter() - t2
        adopted = self.runtime.maybe_adopt(self.detection)
        if adopted is not None:
            await self.report(adopted)

    _decode_signal = staticmethod(msgspec.msgpack.Decoder(Signal).decode)

    async def signals(self, batch: Iterable[Any], quiet: bool = False) -> None:
        """Evidence about identities this worker owns, sent by the owners of other identities
        (``quiet``: as for :meth:`events`)."""
        async with self.lock:
            store = self.store
            store.forget()
            mine: dict[str, Any] = {}
            applied: dict[str, dict[Source, int]] = {}
            done: dict[Source, int] = {}
            signals = []
            for event in batch:
                sig = self._decode_signal(event.value)  # our own writes: an error is a bug
                src, offset = self.source_of(event)
                done[src] = max(done.get(src, -1), offset)
                uid = sig.identity_uid
                marks = applied.get(uid)
                if marks is None:
                    marks = applied[uid] = store.applied(uid)
                if offset <= marks.get(src, -1):
                    continue  # applied before a restart
                marks[src] = offset
                store.remember(uid, event, mine)
                signals.append(sig)
            out = self.outbox()
            staged = Staged(store)
            decisions = self.engine.signals(signals, staged)
            if not quiet:
                await self.publish(out, decisions)
            store.events = mine
            store.marks = {uid: applied[uid] for uid in mine}
            await self.finish(out, staged)
            self.snapshot(done)

    async def feedback_batch(self, batch: Iterable[Any]) -> None:
        """Analyst decisions, keyed by identity: applied where the identity's state lives."""
        keys: KeySet | None = None
        missing = ""
        try:  # read per batch, not per message: keys rotate, but not that often
            keys = with_analysts(trusted_keys(self.settings), analyst_keys(self.settings))
        except ConfigError as exc:  # no trusted keys: nobody's feedback counts
            missing = str(exc)
        for event in batch:
            async with self.lock:
                await self.feedback(event, keys, missing)

    async def feedback(self, event: Any, keys: KeySet | None, missing: str) -> None:
        """One feedback message: verified (or dead-lettered), then one engine call."""
        store, t = self.store, self.topics
        now_ms = int(time.time() * 1000)
        out = self.outbox()
        try:
            if keys is None:
                raise InvalidEvent("no_trusted_keys", missing)
            fb = verify_feedback(event.value or b"", keys, now_ms=now_ms)
        except InvalidEvent as exc:
            await self.send_dead(out, event, exc, now_ms)
            await self.finish(out)
            return
        if event.key != fb.identity.encode():  # to the partition that owns the identity
            await out.send(t.feedback, fb.identity.encode(), event.value)
            await self.finish(out)
            return
        store.remember(fb.identity, event, {})
        staged = Staged(store)
        outcome, decisions = self.engine.feedback(fb, staged)
        confirm = fb.action == "confirm"
        # The analyst's signed confirmation travels with the command it approves.
        await self.publish(out, decisions, approved_by=fb.by if confirm else None,
                           proof=(event.value or b"").decode("ascii", "replace") if confirm
                           else None)  # fmt: skip
        cancel = release_for(fb, outcome, now_ms)
        if cancel is not None:
            await out.send(t.quarantine, fb.identity.encode(),
                           sign_command(cancel, self.command_signer))  # fmt: skip
        r = Report(f"feedback.{outcome.outcome}", self.service, now_ms,
                   subject=fb.identity, reason=fb.action, detail=outcome.detail,
                   requested=msgspec.to_builtins(fb))  # fmt: skip
        await out.send(t.reports, fb.identity.encode(), encode_report(r))
        store.events = {fb.identity: event}
        # Not replayed from a snapshot (hot.py reads feedback from the committed offsets on):
        # its state is written now.
        await self.finish(out, staged, through=True)
        self.snapshot({})

    async def tick(self) -> None:
        """Close quiet incidents (event time: simulated time may run faster than the clock).

        One pass over the incidents open when it starts, in units of work of at most about
        :data:`TICK_SLICE_S` each, the event loop free between two (the web pages, the hot
        loop and the control topics run meanwhile): a worker holding tens of thousands of open
        incidents must not stop answering while it looks at them all. Each slice ticks at the
        latest event time then and skips those closed or handed over meanwhile; incidents
        opened meanwhile wait for the next pass.
        """
        if not self.detection.watermark_ms:
            return
        pending = list(self.detection.open_incidents)
        done = 0
        while True:
            async with self.lock:
                done = await self._tick(pending, done)
            if done >= len(pending):
                return
            await asyncio.sleep(0)  # what waits on the loop runs before the next slice

    async def _tick(self, pending: list[str], start: int) -> int:
        """One slice of a tick, from ``pending[start]`` on: a unit of work like any other
        (outputs delivered, then state written). Returns where the next slice starts."""
        out = self.outbox()
        staged = Staged(self.store)
        decisions: list[Decision] = []
        t0 = time.perf_counter()
        end = start
        while True:
            decisions += self.engine.tick(staged, uids=pending[end : end + TICK_STEP])
            end += TICK_STEP
            if end >= len(pending) or time.perf_counter() - t0 >= TICK_SLICE_S:
                break
        await self.publish(out, decisions)
        self.store.events = {}  # writes go by the key's partition (no batch is running)
        await self.finish(out, staged, through=True)  # no input: nothing to replay it from
        # Ticks teach the shared models nothing: their snapshot is taken once a pass (which
        # also records a model swapped in while no events come), not once a slice.
        self.snapshot({}, learned=end >= len(pending))
        return end

    # --- control topics (broadcast: every worker reads all of them) ---------------------------

    async def models(self, values: list[bytes], catching_up: bool) -> None:
        """Model announcements; catching up, only the latest matters (not every version)."""
        for value in values[-1:] if catching_up else values:
            await self.report(self.runtime.apply(self.detection, value))

    def agent_model_registry(self) -> AgentModelRegistry:
        """The registry the topic's updates apply to (an empty one if no file gave one)."""
        rules = self.detection.rules
        if rules.agent_models is None:
            rules.agent_models = AgentModelRegistry()
        return rules.agent_models

    async def agent_models(self, values: list[bytes], catching_up: bool) -> None:
        """Agent-model registry updates: all apply, in order (apply is idempotent).

        Catching up, they were reported when they first arrived; only live ones are. Only
        updates signed by a trusted command key count (re-read per delivery: keys rotate).
        """
        registry = self.agent_model_registry()
        try:
            keys = trusted_keys(self.settings)
        except ConfigError as exc:
            log.error("%d agent model update(s) not applied: %s", len(values), exc)
            if not catching_up:
                await self.report(Report("agent_model.refused", self.service,
                                         int(time.time() * 1000), reason="no_trusted_keys",
                                         detail=str(exc)))  # fmt: skip
            return
        for value in values:
            now = int(time.time() * 1000)
            try:
                change = registry.apply(verify_agent_model_update(value, keys))
            except InvalidAgentModelUpdate as exc:
                log.error("agent model update refused: %s", exc)
                if not catching_up:
                    await self.report(Report("agent_model.refused", self.service, now,
                                             reason=exc.reason, detail=exc.detail))  # fmt: skip
                continue
            if not catching_up:
                kind = "agent_model.applied" if change.changed else "agent_model.unchanged"
                build = {"name": change.name, "version": change.version,
                         "digest": change.digest, "status": change.after}  # fmt: skip
                await self.report(Report(kind, self.service, now, subject=change.name,
                                         detail=change.detail, model=build))  # fmt: skip
