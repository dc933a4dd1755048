"""The faust worker: the only module that imports faust.

Input topics → decode (bad input → dead-letter topic) → micro-batches → the pure detection core
(:mod:`pipeline.scores.scoring`) with per-identity state in a RocksDB-backed table whose changelog
lets a restarted or rebalanced worker resume → OCSF findings on ``custos.alerts``.

Partitioning: the state table writes its changelog *by key* (``use_partitioner``) with the
same murmur2 partitioner the producers use, so identity X's state lives in the partition its
events arrive on. Events whose Kafka key is not their identity uid (producers that did not
key) are re-keyed through ``<app_id>-rekeyed`` before scoring, so one identity's state is
only ever touched by the worker that owns its partition. For the same reason, evidence one
identity's event reveals about *another* (the delegator of an unauthorised delegation) travels
through ``<app_id>-signals``, keyed by the identity it is about.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
import msgspec
import numpy as np
from aiokafka.partitioner import murmur2
from faust.streams import _current_event
from joserfc.jwk import KeySet
from mode import CrashingSupervisor
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from pipeline.alerts.findings import build_finding, encode_finding
from pipeline.alerts.policy import Decision
from pipeline.config import Settings
from pipeline.control.feedback import release_message
from pipeline.control.reports import Report, config_report
from pipeline.control.reports import encode as encode_report
from pipeline.control.signing import (
    analyst_keys,
    command_key,
    verify_agent_model_update,
    verify_feedback,
    with_analysts,
)
from pipeline.control.signing import trusted_keys as trusted_command_keys
from pipeline.engine import Engine
from pipeline.errors import ConfigError, InvalidEvent
from pipeline.events.deadletter import DeadLetter, dead_letter
from pipeline.events.schemas import Event, EventDecoder
from pipeline.kafka.clients import aiokafka_auth, faust_auth
from pipeline.kafka.ingest import IngestStats
from pipeline.models.runtime import ModelRuntime
from pipeline.quarantine.commands import sign as sign_command
from pipeline.quarantine.policy import QuarantinePolicy
from pipeline.scores.agent_models import AgentModelRegistry, InvalidAgentModelUpdate
from pipeline.scores.explanations import Signal
from pipeline.scores.scoring import Detection
from pipeline.stream.offsets import (
    SOURCE_HEADER,
    SharedCheckpoint,
    Source,
    parse_source,
    unwrap,
    wrap,
)

log = logging.getLogger("custos.worker")


class TableStore(MutableMapping[str, bytes]):
    """A faust table seen as ``str → bytes`` (what the pure core expects).

    faust's RocksDB store files a written key under the partition of the *current event*.
    The pure core writes back once per identity after a whole micro-batch, so before each
    write this sets the current event to one of that identity's own events (or, for timer
    writes, to a recent event of the partition the key hashes to).
    """

    def __init__(self, table: Any, partitions: int) -> None:
        self.table = table
        self.partitions = partitions
        self.events: dict[str, Any] = {}  # identity uid → one of its events in this batch
        self.by_partition: dict[int, Any] = {}  # partition → a recent event from it
        # Offsets the next write of an identity includes (pipeline.stream.offsets): set by the
        # unit of work before its state is committed; a write without marks keeps the old ones.
        self.marks: dict[str, dict[Source, int]] = {}
        # Values read by applied() in this unit of work: the core reads the same identity
        # right after, and one RocksDB get per identity and batch is enough (forget() per unit).
        self._read: dict[str, bytes | None] = {}

    def forget(self) -> None:
        """End of a unit of work: later units read the table afresh (rebalances move it)."""
        self._read.clear()
        self.marks = {}

    def _value(self, key: str) -> bytes | None:
        if key in self._read:
            return self._read[key]
        return self.table.get(key.encode())  # type: ignore[no-any-return]

    def applied(self, key: str) -> dict[Source, int]:
        """The input offsets ``key``'s stored state already includes."""
        value = self._read[key] = self.table.get(key.encode())
        return unwrap(value)[1] if value is not None else {}

    def remember(self, uid: str, event: Any, batch: dict[str, Any]) -> None:
        """Note ``event`` as ``uid``'s in a batch's own map (agents interleave at awaits)."""
        batch[uid] = event
        self.by_partition[event.message.partition] = event

    def _enter(self, key: str) -> None:
        event = self.events.get(key)
        if event is None:
            part = (murmur2(key.encode()) & 0x7FFFFFFF) % self.partitions
            event = self.by_partition.get(part)
        if event is not None:
            _current_event.set(weakref.ref(event))

    def __getitem__(self, key: str) -> bytes:
        value = self._value(key)
        if value is None:
            raise KeyError(key)
        return unwrap(value)[0]

    def get(self, key: str, default: Any = None) -> Any:
        value = self._value(key)
        return default if value is None else unwrap(value)[0]

    def __setitem__(self, key: str, value: bytes) -> None:
        marks = self.marks.pop(key, None)
        if marks is None:
            marks = self.applied(key)
        self._read.pop(key, None)
        self._enter(key)
        self.table[key.encode()] = wrap(value, marks)

    def __delitem__(self, key: str) -> None:
        self._read.pop(key, None)
        self._enter(key)
        del self.table[key.encode()]

    def __iter__(self) -> Iterator[str]:
        return (k.decode() for k in self.table.keys())

    def __len__(self) -> int:
        return len(self.table)


class Staged(MutableMapping[str, bytes]):
    """State writes of one unit of work, held back until its outputs are delivered.

    Results before state: if the worker dies after writing an identity's new state but before
    its findings and commands reach the broker, the restarted worker re-reads the events, finds
    the incident already recorded in the state and never reports it. Reads see the staged
    writes first; :meth:`commit` writes them to the table (its changelog) afterwards.
    """

    def __init__(self, base: MutableMapping[str, bytes]) -> None:
        self.base = base
        self.writes: dict[str, bytes | None] = {}  # None: deleted

    def __getitem__(self, key: str) -> bytes:
        if key in self.writes:
            value = self.writes[key]
            if value is None:
                raise KeyError(key)
            return value
        return self.base[key]

    def get(self, key: str, default: Any = None) -> Any:
        if key in self.writes:
            value = self.writes[key]
            return default if value is None else value
        return self.base.get(key, default)

    def __setitem__(self, key: str, value: bytes) -> None:
        self.writes[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self.writes[key] = None

    def __contains__(self, key: object) -> bool:
        if key in self.writes:
            return self.writes[key] is not None
        return key in self.base

    def __iter__(self) -> Iterator[str]:
        seen = set(self.writes)
        yield from (k for k, v in self.writes.items() if v is not None)
        yield from (k for k in self.base if k not in seen)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def commit(self) -> int:
        for key, value in self.writes.items():
            if value is None:
                self.base.pop(key, None)
            else:
                self.base[key] = value
        n = len(self.writes)
        self.writes.clear()
        return n


class OutputRefused(RuntimeError):
    """The broker refused or did not acknowledge an output: the input must not be committed."""


class Outbox:
    """The outputs of one unit of work: sent at once, then awaited together (delivered).

    faust's own path attaches a send to the current event and publishes it at commit time,
    where a refusal is only logged and the offset is committed anyway. Here every output is
    sent immediately and :meth:`delivered` waits for the broker's acknowledgement of each.
    A refusal calls ``die`` (the worker stops before the input is committed) after the
    failed write's ``on_refused`` (a dead letter is kept on disk); ``then`` callbacks
    (counters) run only once everything is delivered.
    """

    def __init__(self, timeout_s: float, die: Callable[[str], None]) -> None:
        self.timeout_s = timeout_s
        self.die = die
        self.pending: list[tuple[str, Any, Callable[[BaseException], None] | None]] = []
        self.then: list[Callable[[], None]] = []

    def _refused(self, reason: str) -> OutputRefused:
        self.die(reason)
        return OutputRefused(reason)

    async def send(
        self, topic: Any, key: bytes | None, value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        on_refused: Callable[[BaseException], None] | None = None,
    ) -> None:  # fmt: skip
        name = topic.get_topic_name()
        try:
            fut = await asyncio.wait_for(
                topic.send(key=key, value=value, headers=headers, force=True), self.timeout_s
            )
        except Exception as exc:
            if on_refused is not None:
                on_refused(exc)
            raise self._refused(f"write to {name} failed: {exc!r}") from exc
        self.pending.append((name, fut, on_refused))

    async def barrier(self) -> int:
        """Wait until everything sent so far is acknowledged (what follows depends on it)."""
        pending, self.pending = self.pending, []
        if not pending:
            return 0
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(f for _, f, _ in pending), return_exceptions=True),
                self.timeout_s,
            )
        except TimeoutError:
            results = [TimeoutError(f"not acknowledged in {self.timeout_s} s")] * len(pending)
        failed = [(name, res, cb) for (name, _, cb), res in zip(pending, results, strict=True)
                  if isinstance(res, BaseException)]  # fmt: skip
        for _, res, cb in failed:
            if cb is not None:
                cb(res)
        if failed:
            name, res, _ = failed[0]
            raise self._refused(f"{len(failed)} of {len(pending)} writes failed, first on "
                                f"{name}: {res!r}")  # fmt: skip
        return len(pending)

    async def delivered(self) -> int:
        """:meth:`barrier`, then the ``then`` callbacks."""
        n = await self.barrier()
        then, self.then = self.then, []
        for callback in then:
            callback()
        return n


def _die(reason: str) -> None:
    """Stop now, before faust acknowledges and commits the offsets of the unit in flight.

    An exception is not enough: faust's batching acknowledges a batch's events in a
    ``finally`` and commits them on shutdown, so a crash would still move the offsets past
    input whose outputs never arrived. The restarted worker re-reads it instead.
    """
    import os
    import sys

    log.critical("an output was refused or not acknowledged; stopping without commit: %s", reason)
    for h in logging.getLogger().handlers + log.handlers:
        h.flush()
    sys.stderr.flush()
    os._exit(70)  # EX_SOFTWARE


class _Checkpoints(faust.Sensor):
    """Save the shared models' checkpoint just before faust commits input offsets.

    The checkpoint is the snapshot taken at the end of the last unit of work; every offset
    faust is about to commit belongs to a unit that ended, so the saved shared state always
    includes at least what is committed (a kill loses no shared learning, see offsets.py).
    """

    def __init__(self, checkpoint: SharedCheckpoint) -> None:
        super().__init__()
        self.checkpoint = checkpoint

    def on_commit_initiated(self, consumer: Any) -> Any:
        self.checkpoint.save()
        return None


class _SendErrors(faust.Sensor):
    """Any refused write (changelog, control, reports) stops the worker before a commit.

    faust flushes the producer and then commits; a failed record completes its future with
    an error during that flush, which is when this runs.
    """

    def __init__(self, die: Callable[[str], None]) -> None:
        super().__init__()
        self.die = die

    def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
        self.die(f"write refused by the broker: {exc!r}")


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
    score_seconds: float = 0.0
    # Kafka timestamp of an event → its batch scored (ms), for the most recent events.
    latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=50_000))

    def latency_quantiles(self) -> tuple[float, float]:
        if not self.latency_ms:
            return 0.0, 0.0
        p50, p99 = np.quantile(np.fromiter(self.latency_ms, float), [0.5, 0.99])
        return float(p50), float(p99)


def spill(path: Path, dl: DeadLetter, error: BaseException) -> None:
    """Append a dead letter Kafka refused to a local JSONL file, durably (fsync)."""
    import base64
    import json
    import os

    record = {
        "error": repr(error),
        "reason": dl.reason,
        "key_b64": base64.b64encode(dl.key).decode() if dl.key is not None else None,
        "value_b64": base64.b64encode(dl.value).decode() if dl.value is not None else None,
        "headers": {k: (v.decode("utf-8", "replace") if isinstance(v, bytes) else v)
                    for k, v in dl.headers},
    }  # fmt: skip
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    log.critical("dead letter could not be published (%s); kept in %s", error, path)


def datadir(settings: Settings) -> Path:
    if settings.worker_datadir:
        return Path(settings.worker_datadir).expanduser()
    return settings.home_path / "worker" / settings.app_id


def faust_app(settings: Settings, data: Path, store: str = "rocksdb://") -> faust.App:
    """The faust app with Custos's settings (consumer, producer, RocksDB, web), no agents.

    ``store``: ``memory://`` for faust's ``test_context`` unit tests only.
    """
    return faust.App(
        settings.app_id,
        **faust_auth(settings),
        broker=f"kafka://{settings.bootstrap_servers}",
        store=store,
        datadir=str(data),
        web_host="127.0.0.1",
        web_bind="127.0.0.1",
        web_port=settings.worker_web_port,
        topic_partitions=settings.worker_partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        stream_buffer_maxsize=max(4 * settings.worker_batch, 4096),
        broker_max_poll_records=max(settings.worker_batch, 500),
        # Oversized input (up to the topics' 2 MiB) must still fit into the dead-letter topic.
        producer_max_request_size=4 * 1024 * 1024,
        # Tables hold bytes the pure core (de)serialises itself: no JSON layer in between.
        key_serializer="raw",
        value_serializer="raw",
    )


def create_app(
    settings: Settings,
    detection: Detection | None = None,
    *,
    store_url: str = "rocksdb://",
    die: Callable[[str], None] = _die,
) -> faust.App:
    """Build the faust app and its agent for ``settings`` (nothing runs until started).

    ``die``: how the worker stops when an output is refused (tests pass a recorder).
    """
    detection = detection or Detection.from_settings(settings)
    decoder = EventDecoder.from_settings(settings)
    stats = WorkerStats()
    data = datadir(settings)
    data.mkdir(parents=True, exist_ok=True)
    shared_path = data / "shared-state.msgpack"  # before checkpoints carried offsets
    checkpoint = SharedCheckpoint(data / "shared-checkpoint.msgpack")
    spill_path = data / "deadletter-spill.jsonl"
    if spill_path.exists() and spill_path.stat().st_size:
        log.warning("%s holds dead letters a previous run could not publish", spill_path)
    saved = checkpoint.load()
    if saved is not None and detection.load_shared_bytes(saved[0], str(checkpoint.path)):
        log.info("loaded the shared models' checkpoint from %s (%d sources)", checkpoint.path,
                 len(saved[1]))  # fmt: skip
    elif detection.load_shared(shared_path):
        log.info("loaded shared detector state from %s", shared_path)
        checkpoint.offsets = {}
    # Max offset per source of the units of work that ended (what a snapshot includes).
    processed: dict[Source, int] = dict(checkpoint.offsets)
    service = f"worker:{settings.app_id}"
    runtime = ModelRuntime(settings, service)
    # Reports waiting for the producer: configuration and the model chosen at start.
    startup = [config_report(settings, service), *runtime.start(detection)]
    if detection.policy.suppressions:
        # What is silenced from the start, in the audit log beside the configuration.
        startup.append(Report(
            "suppressions.loaded", service, int(time.time() * 1000),
            detail=f"{len(detection.policy.suppressions)} suppression(s) from "
                   f"{settings.suppressions_file}",
            requested={"suppressions": [msgspec.to_builtins(x)
                                        for x in detection.policy.suppressions]},
        ))  # fmt: skip

    engine = Engine(detection)  # every unit of work below is one engine call
    app = faust_app(settings, data, store_url)
    app.sensors.add(_SendErrors(die))
    app.sensors.add(_Checkpoints(checkpoint))

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def _final_checkpoint(app: Any, *args: Any, **kwargs: Any) -> None:
        # A clean stop keeps the shared models up to the last unit of work, whether or not
        # faust commits once more on its way down.
        checkpoint.save()
    # One unit of work at a time (a batch, signals, feedback, a tick): its state is staged
    # while its outputs are delivered, and no other unit may read the identity meanwhile.
    work = asyncio.Lock()
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                           "key_serializer": "raw", "value_serializer": "raw"}  # fmt: skip
    rekeyed = app.topic(
        f"{settings.app_id}-rekeyed", partitions=settings.worker_partitions, internal=True, **raw
    )
    inputs = app.topic(settings.identity_topic, settings.agent_topic, **raw)
    dlq = app.topic(settings.deadletter_topic, **raw)
    alerts = app.topic(settings.alerts_topic, **raw)
    scores_topic = app.topic(settings.scores_topic, **raw)
    quarantine_topic = app.topic(settings.quarantine_topic, **raw)
    approvals_topic = app.topic(settings.approvals_topic, **raw)
    reports_topic = app.topic(settings.reports_topic, **raw)
    # Keyed by identity like the inputs (same partition count): co-partitioned with the table.
    feedback_topic = app.topic(settings.feedback_topic, **raw)
    quarantine = QuarantinePolicy.from_settings(settings)
    command_signer = command_key(settings.command_key_path, settings.command_jwks_path)
    # Evidence about another identity (the delegator of an unauthorised delegation) goes to
    # the worker that owns that identity's partition, like re-keyed events.
    signals_topic = app.topic(
        f"{settings.app_id}-signals", partitions=settings.worker_partitions, internal=True, **raw
    )
    table = app.Table(
        "identity-state",
        partitions=settings.worker_partitions,
        key_type=bytes,
        value_type=bytes,
        use_partitioner=True,
    )
    store = TableStore(table, settings.worker_partitions)
    # Stable small numbers for the sources offsets are recorded under (offsets.py).
    topic_index = {settings.identity_topic: 1, settings.agent_topic: 2,
                   rekeyed.get_topic_name(): 3, signals_topic.get_topic_name(): 5}  # fmt: skip

    def source_of(event: Any) -> tuple[Source, int]:
        """Where a record was first read: a re-keyed one names its origin in a header."""
        msg = event.message
        idx = topic_index.get(msg.topic, 0)
        if idx == 3:
            for name, value in msg.headers or ():
                if name == SOURCE_HEADER:
                    origin = parse_source(value)
                    if origin is not None:
                        # Its own mark: a re-keyed record can trail the identity's direct
                        # records of the same source partition.
                        (t, p), off = origin
                        return (128 + t, p), off
        return (idx, msg.partition), msg.offset

    def snapshot(done: dict[Source, int], learned: bool = True) -> None:
        """End of a unit of work: its offsets count as processed; the shared models' snapshot
        (serialised again only if the unit may have changed them)."""
        for src, off in done.items():
            if off > processed.get(src, -1):
                processed[src] = off
        blob = checkpoint.blob
        if learned or blob is None:
            blob = detection.shared_bytes()
        checkpoint.snapshot(blob, processed)
    changelog_known = store_url.startswith("memory:")  # test_context: no Kafka, no changelog

    async def changelog_metadata() -> None:
        # faust picks a table write's changelog partition eagerly, from the producer's
        # metadata; just after start that may not hold the changelog topic yet (a TypeError
        # deep in aiokafka, seen under load). Wait for it once, before the first write.
        nonlocal changelog_known
        if not changelog_known:
            producer = app.producer._ensure_producer()  # type: ignore[attr-defined]
            await producer.partitions_for(table.changelog_topic.get_topic_name())
            changelog_known = True

    async def publish(
        out: Outbox, decisions: list[Decision], approved_by: str | None = None,
        proof: str | None = None,
    ) -> None:  # fmt: skip
        """Queue findings, then commands, on ``out`` (counted once delivered)."""
        findings = alerts_n = quarantines = approvals = 0
        for d in decisions:
            finding = build_finding(d, product_version=_version())
            await out.send(alerts, d.identity_uid.encode(), encode_finding(finding))
            findings += 1
            alerts_n += int(d.is_alert and d.action == "create")
        now_ms = int(time.time() * 1000)
        # An analyst's confirmation is the human approval: such commands never wait.
        commands = quarantine.commands(decisions, now_ms, approved_by=approved_by,
                                       approval_proof=proof)  # fmt: skip
        if commands:
            # The findings first, acknowledged: no quarantine without its finding on record
            # (a responder or analyst looks it up when the command arrives).
            await out.barrier()
        for p in commands:
            topic = approvals_topic if p.approval == "required" else quarantine_topic
            signed = sign_command(p.message, command_signer)
            await out.send(topic, p.identity.encode(), signed)
            quarantines += int(p.approval == "automatic")
            approvals += int(p.approval != "automatic")

        def count() -> None:
            stats.findings += findings
            stats.alerts += alerts_n
            stats.quarantines += quarantines
            stats.approvals += approvals

        out.then.append(count)

    async def finish(out: Outbox, staged: Staged | None = None) -> None:
        """Delivery, then state, then the counters; a refusal stops the worker uncommitted."""
        await out.delivered()
        if staged is not None:
            if staged.writes:
                await changelog_metadata()
                staged.commit()
            store.forget()  # a unit's marks and reads never outlive it (units hold the lock)

    async def send_dead(out: Outbox, event: Any, exc: InvalidEvent, now_ms: int) -> None:
        """Bad input (an event, a feedback message) to the dead-letter topic, bytes intact."""
        msg = event.message
        dl = dead_letter(
            exc, key=event.key, value=event.value, topic=msg.topic, partition=msg.partition,
            offset=msg.offset, timestamp_ms=int(msg.timestamp * 1000), now_ms=now_ms,
            source_headers=list(msg.headers or []),
        )  # fmt: skip
        # A refused dead letter stops the worker; the record is kept on local disk first.
        await out.send(dlq, dl.key, dl.value, headers=dl.headers,  # type: ignore[arg-type]
                       on_refused=lambda e: spill(spill_path, dl, e))  # fmt: skip
        out.then.append(lambda: stats.dead.add(msg.topic, dl.reason))

    async def handle(batch: Any) -> None:
        async with work:
            await handle_batch(batch)

    async def handle_batch(batch: Any) -> None:
        store.forget()
        now_ms = int(time.time() * 1000)
        out = Outbox(settings.worker_send_timeout_s, die)
        valid: list[Event] = []
        again: list[Event] = []  # applied to their identity before a restart, not to shared
        mine: dict[str, Any] = {}  # identity uid -> one of its events in this batch
        applied: dict[str, dict[Source, int]] = {}  # what each identity's state includes
        done: dict[Source, int] = {}
        stamps: list[float] = []  # Kafka timestamps of the valid events (latency metric)
        for event in batch:
            msg = event.message
            value = event.value
            src, offset = source_of(event)
            done[src] = max(done.get(src, -1), offset)
            try:
                ev = decoder.decode(value if value is not None else b"", now_ms)
            except InvalidEvent as exc:
                await send_dead(out, event, exc, now_ms)
                continue
            uid = ev.identity_uid
            if event.key != uid.encode():
                where = f"{src[0]}:{src[1]}:{offset}".encode()
                await out.send(rekeyed, uid.encode(), value, headers=[(SOURCE_HEADER, where)])
                continue
            marks = applied.get(uid)
            if marks is None:
                marks = applied[uid] = store.applied(uid)
            if offset <= marks.get(src, -1):  # re-read after a restart: in the state already
                if offset > checkpoint.offsets.get(src, -1):
                    again.append(ev)
                continue
            marks[src] = offset
            valid.append(ev)
            stamps.append(msg.timestamp)
            store.remember(uid, event, mine)
        if again:
            # The shared models (peers, detector, calibrators) learn these once; the identity
            # states and outputs of this pass are thrown away: they were written before.
            engine.step(again, Staged(store), route_signals=True)
            log.info("%d re-read events applied to the shared models only", len(again))
        if not valid:
            await finish(out)
            snapshot(done, learned=bool(again))  # dead letters and re-keying teach nothing
            return
        staged = Staged(store)
        t0 = time.perf_counter()
        result = engine.step(valid, staged, route_signals=True)
        stats.score_seconds += time.perf_counter() - t0
        if settings.emit_scores:
            for s in result.scores:
                await out.send(scores_topic, s.identity_uid.encode(), msgspec.json.encode(s))
        for sig in result.signals:
            await out.send(signals_topic, sig.identity_uid.encode(), msgspec.msgpack.encode(sig))
        await publish(out, result.decisions)

        def count() -> None:
            stats.batches += 1
            stats.scored += len(valid)
            stats.signals += len(result.signals)
            stats.record("inputs", valid, 0)
            now = time.time()
            stats.latency_ms.extend((now - ts) * 1000 for ts in stamps)

        out.then.append(count)
        store.events = mine  # the table files each identity's write under its own partition
        store.marks = {uid: applied[uid] for uid in mine}
        await finish(out, staged)
        snapshot(done)
        adopted = runtime.maybe_adopt(detection)
        if adopted is not None:
            await report(adopted)

    async def report(r: Report) -> None:
        out = Outbox(settings.worker_send_timeout_s, die)
        await out.send(reports_topic, (r.subject or r.service).encode(), encode_report(r))
        await finish(out)

    async def apply_signals(stream: Any) -> None:
        decode = msgspec.msgpack.Decoder(Signal).decode
        async for batch in stream.take_events(
            settings.worker_batch, within=settings.worker_batch_within_s
        ):
            async with work:
                store.forget()
                mine: dict[str, Any] = {}
                applied: dict[str, dict[Source, int]] = {}
                done: dict[Source, int] = {}
                signals = []
                for event in batch:
                    sig = decode(event.value)  # our own writes: a decode error is a bug (crash)
                    src, offset = source_of(event)
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
                out = Outbox(settings.worker_send_timeout_s, die)
                staged = Staged(store)
                await publish(out, engine.signals(signals, staged))
                store.events = mine
                store.marks = {uid: applied[uid] for uid in mine}
                await finish(out, staged)
                snapshot(done)

    async def apply_feedback(stream: Any) -> None:
        # Analyst decisions, keyed by identity: applied where the identity's state lives.
        async for batch in stream.take_events(100, within=settings.worker_batch_within_s):
            keys: KeySet | None = None
            missing = ""
            try:  # read per batch, not per message: keys rotate, but not that often
                keys = with_analysts(trusted_command_keys(settings), analyst_keys(settings))
            except ConfigError as exc:  # no trusted keys: nobody's feedback counts
                missing = str(exc)
            for event in batch:
                async with work:
                    await handle_feedback(event, keys, missing)

    async def handle_feedback(event: Any, keys: KeySet | None, missing: str) -> None:
        now_ms = int(time.time() * 1000)
        out = Outbox(settings.worker_send_timeout_s, die)
        try:
            if keys is None:
                raise InvalidEvent("no_trusted_keys", missing)
            fb = verify_feedback(event.value or b"", keys, now_ms=now_ms)
        except InvalidEvent as exc:
            await send_dead(out, event, exc, now_ms)
            await finish(out)
            return
        if event.key != fb.identity.encode():  # to the partition that owns the identity
            await out.send(feedback_topic, fb.identity.encode(), event.value)
            await finish(out)
            return
        store.remember(fb.identity, event, {})
        staged = Staged(store)
        outcome, decisions = engine.feedback(fb, staged)
        confirm = fb.action == "confirm"
        # The analyst's signed confirmation travels with the command it approves.
        await publish(out, decisions, approved_by=fb.by if confirm else None,
                      proof=(event.value or b"").decode("ascii", "replace") if confirm else None)
        cancel = release_message(fb, outcome, now_ms)
        if cancel is not None:
            signed = sign_command(cancel, command_signer)
            await out.send(quarantine_topic, fb.identity.encode(), signed)
        r = Report(f"feedback.{outcome.outcome}", service, now_ms,
                   subject=fb.identity, reason=fb.action, detail=outcome.detail,
                   requested=msgspec.to_builtins(fb))  # fmt: skip
        await out.send(reports_topic, fb.identity.encode(), encode_report(r))
        store.events = {fb.identity: event}
        await finish(out, staged)
        snapshot({})

    async def detect(stream: Any) -> None:
        async for batch in stream.take_events(
            settings.worker_batch, within=settings.worker_batch_within_s
        ):
            await handle(batch)

    # Same code on both: events keyed right at the source, and those re-keyed by identity.
    # Error policy: bad *input* is dead-lettered inside handle(); anything else (a dead-letter
    # or alert write that fails, a bug) crashes the whole worker. faust's default would restart
    # the agent and carry on past the failed batch; crashing leaves its offsets uncommitted so
    # the restarted worker re-reads it. Nothing is skipped silently.
    app.agent(inputs, name="detect", supervisor_strategy=CrashingSupervisor)(detect)
    app.agent(rekeyed, name="detect-rekeyed", supervisor_strategy=CrashingSupervisor)(detect)
    app.agent(signals_topic, name="signals", supervisor_strategy=CrashingSupervisor)(apply_signals)
    app.agent(feedback_topic, name="feedback", supervisor_strategy=CrashingSupervisor)(
        apply_feedback
    )

    @app.task  # type: ignore[untyped-decorator]
    async def control() -> None:
        # Control topics are broadcast: every worker reads all of them, outside the group.
        for r in startup:
            await report(r)

        async def on_model(values: list[bytes], catching_up: bool) -> None:
            # Catching up, only the latest announcement matters: replaying history would
            # swap through every version ever promoted.
            for value in values[-1:] if catching_up else values:
                await report(runtime.apply(detection, value))

        if detection.rules.agent_models is None:
            detection.rules.agent_models = AgentModelRegistry()
        agent_models = detection.rules.agent_models

        async def on_agent_models(values: list[bytes], catching_up: bool) -> None:
            # Registry updates accumulate: all of them apply, in order (apply is idempotent).
            # Catching up, they were reported when they first arrived; only live ones are.
            # Only updates signed by a trusted command key count (re-read per delivery: keys
            # rotate).
            try:
                keys = trusted_command_keys(settings)
            except ConfigError as exc:
                log.error("%d agent model update(s) not applied: %s", len(values), exc)
                if not catching_up:
                    await report(Report("agent_model.refused", service, int(time.time() * 1000),
                                        reason="no_trusted_keys", detail=str(exc)))  # fmt: skip
                return
            for value in values:
                now = int(time.time() * 1000)
                try:
                    change = agent_models.apply(verify_agent_model_update(value, keys))
                except InvalidAgentModelUpdate as exc:
                    log.error("agent model update refused: %s", exc)
                    if not catching_up:
                        await report(Report("agent_model.refused", service, now,
                                            reason=exc.reason, detail=exc.detail))  # fmt: skip
                    continue
                if not catching_up:
                    kind = "agent_model.applied" if change.changed else "agent_model.unchanged"
                    build = {"name": change.name, "version": change.version,
                             "digest": change.digest, "status": change.after}  # fmt: skip
                    await report(Report(kind, service, now, subject=change.name,
                                        detail=change.detail, model=build))  # fmt: skip

        await asyncio.gather(
            follow(settings, settings.models_topic, on_model),
            follow(settings, settings.agent_models_topic, on_agent_models),
        )

    @app.timer(interval=10.0)  # type: ignore[untyped-decorator]
    async def housekeeping() -> None:
        # Close quiet incidents (event time: simulated time may run faster than the clock)
        # and checkpoint the shared detector state beside the tables.
        if detection.watermark_ms:
            async with work:
                out = Outbox(settings.worker_send_timeout_s, die)
                staged = Staged(store)
                await publish(out, engine.tick(staged))
                store.events = {}  # writes go by the key's partition (no batch is running)
                await finish(out, staged)
                snapshot({})
        checkpoint.save()

    @app.page("/custos/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        from pipeline.ops.metrics import render

        body = render(stats, lambda: _worker_metrics(stats, detection))
        return web.text(body, content_type="text/plain")

    app.custos_stats = stats  # type: ignore[attr-defined]
    app.custos_detection = detection  # type: ignore[attr-defined]
    return app


async def follow(
    settings: Settings,
    topic: str,
    handle: Callable[[list[bytes], bool], Awaitable[None]],
) -> None:
    """Read every partition of ``topic`` from the start, outside any consumer group.

    ``handle(values, catching_up)`` gets everything up to the end offsets seen at start in
    one call with ``catching_up`` True, then new messages as they come. Runs until cancelled.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                **aiokafka_auth(settings))  # fmt: skip
    await consumer.start()
    try:
        parts = await _partitions(settings, topic)
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        history: list[bytes] = []
        async def behind() -> bool:
            return any([await consumer.position(tp) < end[tp] for tp in tps])

        while await behind():
            got = await consumer.getmany(*tps, timeout_ms=1000)
            for records in got.values():
                history.extend(r.value for r in records if r.value is not None)
        await handle(history, True)
        while True:
            got = await consumer.getmany(*tps, timeout_ms=1000)
            values = [r.value for records in got.values() for r in records if r.value is not None]
            if values:
                await handle(values, False)
    finally:
        await consumer.stop()


async def _partitions(settings: Settings, topic: str) -> set[int]:
    from pipeline.kafka.clients import make_admin

    def lookup() -> set[int]:
        md = make_admin(settings).list_topics(topic, timeout=10)
        t = md.topics.get(topic)
        return set(t.partitions) if t is not None and t.error is None else set()

    waited = 0
    while True:  # the topic may be created after the worker starts; detection goes on meanwhile
        parts = await asyncio.to_thread(lookup)
        if parts:
            return parts
        if waited % 60 == 0:
            log.error("control topic %s does not exist (custos topics apply); waiting", topic)
        await asyncio.sleep(1.0)
        waited += 1


def _worker_metrics(stats: WorkerStats, detection: Detection) -> Iterator[Metric]:
    """The worker's own metric families, added to the ingest ones at scrape time."""
    yield CounterMetricFamily("custos_findings", "OCSF findings published.", stats.findings)
    yield CounterMetricFamily("custos_alerts", "Findings that opened an alert.", stats.alerts)
    yield CounterMetricFamily("custos_scored", "Events scored.", stats.scored)
    yield CounterMetricFamily(
        "custos_quarantine_commands", "Signed contain commands published.", stats.quarantines
    )
    yield CounterMetricFamily(
        "custos_approval_requests", "Contain commands sent for approval.", stats.approvals
    )
    yield CounterMetricFamily(
        "custos_signals", "Evidence about other identities sent to their owner.", stats.signals
    )
    lat = stats.score_seconds / stats.scored * 1e6 if stats.scored else 0.0
    yield GaugeMetricFamily(
        "custos_scoring_microseconds_per_event", "Mean scoring cost per event.", lat
    )
    p50, p99 = stats.latency_quantiles()
    latency = GaugeMetricFamily(
        "custos_event_to_score_ms",
        "Kafka timestamp of an event to its batch scored (recent events).",
        labels=["quantile"],
    )
    latency.add_metric(["0.5"], p50)
    latency.add_metric(["0.99"], p99)
    yield latency
    yield CounterMetricFamily(
        "custos_state_resets", "Unreadable identity states started afresh.", detection.state_resets
    )
    yield GaugeMetricFamily(
        "custos_open_incidents", "Identities with an open incident.", len(detection.open_incidents)
    )


def _version() -> str:
    from pipeline import __version__

    return __version__


def run_worker(settings: Settings, loglevel: str = "warning") -> None:
    """Run the worker in the foreground until interrupted (``custos worker``)."""
    from faust.worker import Worker

    app = create_app(settings)
    Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()
