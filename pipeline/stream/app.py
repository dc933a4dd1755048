"""The faust worker: the application shell that wires topics to the units of work.

Input topics → decode (bad input → dead-letter topic) → micro-batches → the engine
(:mod:`pipeline.engine`) with per-identity state in a RocksDB-backed table whose changelog
lets a restarted or rebalanced worker resume → OCSF findings on ``custos.alerts``. What each
unit does is :mod:`pipeline.stream.units`; this module builds the faust app, its topics, table,
agents, timer, control task, sensors and metrics page, and holds no detection logic.

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
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import faust
import msgspec
from mode import CrashingSupervisor
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from pipeline.config import Settings
from pipeline.control.reports import Report, config_report
from pipeline.control.signing import command_key
from pipeline.detection import Detection
from pipeline.engine import Engine
from pipeline.errors import ConfigError
from pipeline.kafka.clients import aiokafka_auth, faust_auth
from pipeline.models.runtime import ModelRuntime
from pipeline.quarantine.policy import QuarantinePolicy
from pipeline.stream.delivery import die_uncommitted
from pipeline.stream.offsets import SharedCheckpoint
from pipeline.stream.store import TableStore
from pipeline.stream.units import Topics, Units, WorkerStats

__all__ = [
    "changelog_partitions", "create_app", "datadir", "faust_app", "follow", "output_topics",
    "preflight", "run_worker",
]  # fmt: skip

log = logging.getLogger("custos.worker")


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
    an error during that flush, which is when this runs. Writes a unit of work sends through
    its :class:`~pipeline.stream.delivery.Outbox` (``outbox_topics``) are the outbox's to
    handle - it keeps a refused dead letter on disk before it stops the worker - so for those
    this only stops the worker ``grace_s`` later, in case no unit was waiting for them (their
    input is not acknowledged meanwhile, so nothing of it can be committed).
    """

    def __init__(
        self, die: Callable[[str], None], outbox_topics: frozenset[str] = frozenset(),
        grace_s: float = 0.0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.die = die
        self.outbox_topics = outbox_topics
        self.grace_s = grace_s

    def on_send_initiated(
        self, producer: Any, topic: str, message: Any, keysize: int, valsize: int
    ) -> Any:
        return topic

    def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
        reason = f"write to {state} refused by the broker: {exc!r}"
        if state in self.outbox_topics:
            asyncio.get_running_loop().call_later(self.grace_s, self.die, reason)
        else:
            self.die(reason)


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
    die: Callable[[str], None] = die_uncommitted,
) -> faust.App:
    """Build the faust app and its agents for ``settings`` (nothing runs until started).

    ``die``: how the worker stops when an output is refused (tests pass a recorder).
    """
    detection = detection or Detection.from_settings(settings)
    data = datadir(settings)
    data.mkdir(parents=True, exist_ok=True)
    checkpoint = _load_shared(detection, data)
    spill_path = data / "deadletter-spill.jsonl"
    if spill_path.exists() and spill_path.stat().st_size:
        log.warning("%s holds dead letters a previous run could not publish", spill_path)
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

    app = faust_app(settings, data, store_url)
    app.sensors.add(_Checkpoints(checkpoint))
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                           "key_serializer": "raw", "value_serializer": "raw"}  # fmt: skip
    parts = settings.worker_partitions
    inputs = app.topic(settings.identity_topic, settings.agent_topic, **raw)
    rekeyed = app.topic(f"{settings.app_id}-rekeyed", partitions=parts, internal=True, **raw)
    # Evidence about another identity (the delegator of an unauthorised delegation) goes to
    # the worker that owns that identity's partition, like re-keyed events.
    signals = app.topic(f"{settings.app_id}-signals", partitions=parts, internal=True, **raw)
    # Keyed by identity like the inputs (same partition count): co-partitioned with the table.
    feedback = app.topic(settings.feedback_topic, **raw)
    topics = Topics(
        rekeyed=rekeyed, signals=signals, feedback=feedback,
        deadletter=app.topic(settings.deadletter_topic, **raw),
        alerts=app.topic(settings.alerts_topic, **raw),
        scores=app.topic(settings.scores_topic, **raw),
        quarantine=app.topic(settings.quarantine_topic, **raw),
        approvals=app.topic(settings.approvals_topic, **raw),
        reports=app.topic(settings.reports_topic, **raw),
        index={settings.identity_topic: 1, settings.agent_topic: 2,
               rekeyed.get_topic_name(): 3, signals.get_topic_name(): 5},
    )  # fmt: skip
    outbox_topics = frozenset(t.get_topic_name() for t in (
        topics.rekeyed, topics.signals, topics.feedback, topics.deadletter, topics.alerts,
        topics.scores, topics.quarantine, topics.approvals, topics.reports))  # fmt: skip
    app.sensors.add(_SendErrors(die, outbox_topics, settings.worker_send_timeout_s + 1.0))
    table = app.Table("identity-state", partitions=parts, key_type=bytes, value_type=bytes,
                      use_partitioner=True)  # fmt: skip
    units = Units(
        settings, Engine(detection), TableStore(table, parts), topics, checkpoint,
        quarantine=QuarantinePolicy.from_settings(settings),
        command_signer=command_key(settings.command_key_path, settings.command_jwks_path),
        runtime=runtime, service=service, die=die, spill_path=spill_path,
        changelog_ready=_changelog_ready(app, table, known=store_url.startswith("memory:")),
    )  # fmt: skip

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def _final_checkpoint(app: Any, *args: Any, **kwargs: Any) -> None:
        # A clean stop keeps the shared models up to the last unit of work, whether or not
        # faust commits once more on its way down.
        checkpoint.save()

    # Error policy: bad *input* is dead-lettered inside a unit; anything else (a dead-letter
    # or alert write that fails, a bug) crashes the whole worker. faust's default would restart
    # the agent and carry on past the failed batch; crashing leaves its offsets uncommitted so
    # the restarted worker re-reads it. Nothing is skipped silently.
    batch, within = settings.worker_batch, settings.worker_batch_within_s
    for topic, name, unit, size in (
        (inputs, "detect", units.events, batch),
        (rekeyed, "detect-rekeyed", units.events, batch),  # the same unit: re-keyed by identity
        (signals, "signals", units.signals, batch),
        (feedback, "feedback", units.feedback_batch, 100),
    ):
        app.agent(topic, name=name, supervisor_strategy=CrashingSupervisor)(
            _batches(unit, size, within)
        )

    @app.task  # type: ignore[untyped-decorator]
    async def control() -> None:
        for r in startup:
            await units.report(r)
        units.agent_model_registry()
        await asyncio.gather(
            follow(settings, settings.models_topic, units.models),
            follow(settings, settings.agent_models_topic, units.agent_models),
        )

    @app.timer(interval=10.0)  # type: ignore[untyped-decorator]
    async def housekeeping() -> None:
        # Close quiet incidents and checkpoint the shared models beside the tables.
        await units.tick()
        checkpoint.save()

    @app.page("/custos/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        from pipeline.kafka.metrics import render

        body = render(units.stats, lambda: _worker_metrics(units.stats, detection))
        return web.text(body, content_type="text/plain")

    app.custos_stats = units.stats  # type: ignore[attr-defined]
    app.custos_detection = detection  # type: ignore[attr-defined]
    app.custos_units = units  # type: ignore[attr-defined]
    return app


def _batches(
    unit: Callable[[list[Any]], Awaitable[None]], size: int, within: float
) -> Callable[[Any], Awaitable[None]]:
    """A faust agent that hands each micro-batch of its stream to ``unit``."""

    async def agent(stream: Any) -> None:
        async for batch in stream.take_events(size, within=within):
            await unit(batch)

    agent.__name__ = getattr(unit, "__name__", "agent")
    return agent


def _load_shared(detection: Detection, data: Path) -> SharedCheckpoint:
    """The shared models' checkpoint, loaded into ``detection`` if there is a usable one."""
    checkpoint = SharedCheckpoint(data / "shared-checkpoint.msgpack")
    shared_path = data / "shared-state.msgpack"  # before checkpoints carried offsets
    saved = checkpoint.load()
    if saved is not None and detection.load_shared_bytes(saved[0], str(checkpoint.path)):
        log.info("loaded the shared models' checkpoint from %s (%d sources)", checkpoint.path,
                 len(saved[1]))  # fmt: skip
    elif detection.load_shared(shared_path):
        log.info("loaded shared detector state from %s", shared_path)
        checkpoint.offsets = {}
    return checkpoint


def _changelog_ready(app: faust.App, table: Any, *, known: bool) -> Callable[[], Awaitable[None]]:
    """Before a unit's table writes: the producer must know the changelog topic's partitions.

    faust picks a table write's changelog partition eagerly, from the producer's metadata, and
    crashes (a TypeError deep in aiokafka) when the topic is not in it: just after start, and
    again whenever a metadata refresh came back without the topic (an error for it under load:
    seen in ``make demo``, minutes in). So check on every unit - a dict lookup - and wait for
    the metadata when it is missing. ``known``: no Kafka at all (faust's test_context).
    """

    async def ready() -> None:
        if known:
            return
        producer = app.producer._ensure_producer()  # type: ignore[attr-defined]
        await changelog_partitions(producer, table.changelog_topic.get_topic_name())

    return ready


async def changelog_partitions(producer: Any, topic: str) -> None:
    """Wait until ``producer`` (aiokafka) has ``topic``'s partitions in its metadata."""
    if producer._metadata.partitions_for_topic(topic) is None:
        log.info("producer metadata lacks %s: waiting for it before writing state", topic)
        await producer.partitions_for(topic)


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


def output_topics(settings: Settings) -> list[str]:
    """The topics the worker reads and writes that it does not create itself.

    faust creates its own internal topics (re-keyed, signals, the table's changelog); these
    come from ``custos topics apply``. The control topics (models, agent models) may appear
    later: the worker waits for them and detects meanwhile.
    """
    names = [settings.identity_topic, settings.agent_topic, settings.deadletter_topic,
             settings.alerts_topic, settings.quarantine_topic, settings.approvals_topic,
             settings.reports_topic, settings.feedback_topic]  # fmt: skip
    return [*names, settings.scores_topic] if settings.emit_scores else names


def preflight(settings: Settings) -> None:
    """Refuse to start without the topics the worker writes to.

    A missing output topic does not fail a send: the producer waits for metadata that never
    comes and retries, logging without end, while input piles up unscored. Stop at once with
    what is missing instead.
    """
    from pipeline.kafka.topics import missing_topics

    missing = missing_topics(settings, output_topics(settings))
    if missing:
        raise ConfigError(
            f"topic(s) {', '.join(missing)} do not exist on {settings.bootstrap_servers}: "
            "create them (custos topics apply) or point the CUSTOS_*_TOPIC settings at "
            "existing ones; the worker does not start without its outputs"
        )


def run_worker(settings: Settings, loglevel: str = "warning") -> None:
    """Run the worker in the foreground until interrupted (``custos worker``)."""
    from faust.worker import Worker

    preflight(settings)
    app = create_app(settings)
    Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()
