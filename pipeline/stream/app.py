"""The worker: faust as the application shell, a confluent-kafka loop on the per-event path.

Input topics → decode (bad input → dead-letter topic) → micro-batches → the engine
(:mod:`pipeline.engine`) with per-identity state in memory, written in periodic snapshots
(or through, per unit of work) to a compacted changelog topic that lets a restarted or
rebalanced worker resume → OCSF findings on ``custos.alerts``. The records are consumed by
:class:`~pipeline.stream.hot.HotLoop`; what each unit of work does is
:mod:`pipeline.stream.units`; this module builds the faust app (web and metrics page, timer,
control topics, sensors), the output topics and the loop, and holds no detection logic.

Partitioning: state changelog records go to the partition the identity's events arrive on,
keyed by the identity (producers use murmur2, like the Java clients). Events whose Kafka key
is not their identity uid (producers that did not key) are re-keyed through
``<app_id>-rekeyed`` before scoring, so one identity's state is only ever touched by the
worker that owns its partition. For the same reason, evidence one identity's event reveals
about *another* (the delegator of an unauthorised delegation) travels through
``<app_id>-signals``, keyed by the identity it is about. Inputs, re-keyed, signals, feedback
and the changelog share one partition count (:func:`preflight` checks it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import msgspec
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
from pipeline.stream.hot import HotLoop, Restore
from pipeline.stream.offsets import SharedCheckpoint
from pipeline.stream.store import PartitionStore
from pipeline.stream.units import Topics, Units, WorkerStats

__all__ = [
    "HotClients", "changelog_topic", "create_app", "datadir", "faust_app", "follow",
    "hot_clients", "internal_topics", "output_topics", "preflight", "run_worker",
]  # fmt: skip

_KINDS = frozenset({"human", "service", "agent"})
log = logging.getLogger("custos.worker")


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


def faust_app(settings: Settings, data: Path) -> faust.App:
    """The faust app with Custos's settings (consumer, producer, web), no agents.

    Its id is ``<app_id>-shell``: the per-event consumer owns the group ``app_id``, and a
    faust consumer in it (another assignment protocol) would be refused by the coordinator.
    """
    return faust.App(
        f"{settings.app_id}-shell",
        **faust_auth(settings),
        broker=f"kafka://{settings.bootstrap_servers}",
        store="memory://",  # no faust tables: identity state is the hot loop's
        datadir=str(data),
        web_host=settings.worker_web_bind,
        web_bind=settings.worker_web_bind,
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


@dataclass(frozen=True)
class HotClients:
    """The per-event path's Kafka clients: consumer, state producer, changelog reader."""

    consumer: Any
    producer: Any
    restore: Restore


def hot_clients(settings: Settings) -> HotClients:
    from pipeline.kafka.clients import make_hot_consumer, make_producer, read_partition

    changelog = changelog_topic(settings)

    def restore(p: int) -> Iterator[tuple[bytes | None, bytes | None]]:
        return ((m.key(), m.value()) for m in read_partition(settings, changelog, p))

    # Its own state writes are flushed per unit of work: no point lingering for a batch.
    # Only a refused write needs its callback (HotLoop._delivered): one Python call per state
    # write otherwise, for nothing.
    producer = make_producer(settings, **{"linger.ms": 2, "delivery.report.only.error": True})
    return HotClients(make_hot_consumer(settings, settings.app_id), producer, restore)


def changelog_topic(settings: Settings) -> str:
    return f"{settings.app_id}-identity-state-changelog"


def internal_topics(settings: Settings) -> dict[str, dict[str, str]]:
    """The worker's own topics (name → config), created by :func:`preflight`."""
    return {
        f"{settings.app_id}-rekeyed": {"cleanup.policy": "delete",
                                       "max.message.bytes": "2097152"},
        f"{settings.app_id}-signals": {"cleanup.policy": "delete"},
        # Compacted: the latest state of every identity, what a new owner restores.
        changelog_topic(settings): {"cleanup.policy": "compact",
                                    "max.message.bytes": "2097152"},
    }  # fmt: skip


def create_app(
    settings: Settings,
    detection: Detection | None = None,
    *,
    die: Callable[[str], None] = die_uncommitted,
    clients: HotClients | None = None,
) -> faust.App:
    """Build the faust app, its timer, control task and hot loop (nothing runs until started).

    ``die``: how the worker stops when an output is refused (tests pass a recorder);
    ``clients``: the hot loop's Kafka clients (tests pass their own).
    """
    detection = detection or Detection.from_settings(settings)
    # Snapshot mode: the core keeps changed states in memory, encoded at each snapshot (the
    # hot loop flushes them) instead of after every unit of work.
    detection.defer_writes = settings.snapshot_interval_s > 0
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

    app = faust_app(settings, data)
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                           "key_serializer": "raw", "value_serializer": "raw"}  # fmt: skip
    rekeyed_name, signals_name, _ = internal_topics(settings)
    topics = Topics(
        rekeyed=app.topic(rekeyed_name, **raw), signals=app.topic(signals_name, **raw),
        feedback=app.topic(settings.feedback_topic, **raw),
        deadletter=app.topic(settings.deadletter_topic, **raw),
        alerts=app.topic(settings.alerts_topic, **raw),
        scores=app.topic(settings.scores_topic, **raw),
        quarantine=app.topic(settings.quarantine_topic, **raw),
        approvals=app.topic(settings.approvals_topic, **raw),
        reports=app.topic(settings.reports_topic, **raw),
        index={settings.identity_topic: 1, settings.agent_topic: 2,
               rekeyed_name: 3, signals_name: 5},
    )  # fmt: skip
    outbox_topics = frozenset(t.get_topic_name() for t in (
        topics.rekeyed, topics.signals, topics.feedback, topics.deadletter, topics.alerts,
        topics.scores, topics.quarantine, topics.approvals, topics.reports))  # fmt: skip
    app.sensors.add(_SendErrors(die, outbox_topics, settings.worker_send_timeout_s + 1.0))
    clients = clients or hot_clients(settings)
    store = PartitionStore(settings.worker_partitions, lambda p, k, v: None)

    async def state_written() -> None:  # the loop below, built once the units exist
        await hot.state_written()

    units = Units(
        settings, Engine(detection), store, topics, checkpoint,
        quarantine=QuarantinePolicy.from_settings(settings),
        command_signer=command_key(settings.command_key_path, settings.command_jwks_path),
        runtime=runtime, service=service, die=die, spill_path=spill_path,
        state_written=state_written,
    )  # fmt: skip
    hot = HotLoop(
        units, store, checkpoint, consumer=clients.consumer, producer=clients.producer,
        changelog=changelog_topic(settings), restore=clients.restore,
        kinds={settings.identity_topic: "events", settings.agent_topic: "events",
               rekeyed_name: "events", signals_name: "signals",
               settings.feedback_topic: "feedback"},
        batch=settings.worker_batch, within_s=settings.worker_batch_within_s,
        commit_s=settings.worker_commit_s, send_timeout_s=settings.worker_send_timeout_s,
        die=die, snapshot_s=settings.snapshot_interval_s,
    )  # fmt: skip

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def _final_checkpoint(app: Any, *args: Any, **kwargs: Any) -> None:
        # A clean stop: the loop commits what ended once it leaves consume (snapshot mode: it
        # writes a snapshot first; the checkpoint is saved with it, never ahead of it).
        hot.stopping = True
        if not hot.deferred:
            async with units.lock:
                checkpoint.save()

    # Error policy: bad *input* is dead-lettered inside a unit; anything else (a dead-letter
    # or alert write that fails, a bug) crashes the whole worker, its offsets uncommitted, so
    # the restarted worker re-reads the batch. Nothing is skipped silently.
    @app.task  # type: ignore[untyped-decorator]
    async def detect() -> None:
        try:
            await hot.run()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.exception("the per-event loop failed")
            die(f"the per-event loop failed: {exc!r}")
            raise

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
        # Close quiet incidents and checkpoint the shared models (under the units' lock: the
        # hot loop's commit saves from a thread, and two saves must not share the temp file).
        await units.tick()
        if not hot.deferred:  # snapshot mode: saved with each snapshot only
            async with units.lock:
                checkpoint.save()

    @app.page("/custos/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        from pipeline.kafka.metrics import render

        body = render(units.stats, lambda: _worker_metrics(units.stats, detection, hot))
        return web.text(body, content_type="text/plain")

    @app.page("/custos/identity/{uid}")
    async def identity_page(web: Any, request: Any, uid: str) -> Any:
        """Read-only: what this worker's state says about one identity it holds (the analyst
        console's identity page); 404 when another worker holds it (or nobody yet)."""
        from urllib.parse import unquote

        key = unquote(uid)
        # Held: stored, or only in the core's memory so far (snapshot mode, not yet written).
        if not key.isprintable() or (key not in hot.store and key not in hot.store.pending):
            return web.json({"error": f"{key!r} is not held by this worker"}, status=404)
        kind = request.query.get("kind")
        return web.json(detection.describe(key, hot.store, kind if kind in _KINDS else None))

    app.custos_stats = units.stats  # type: ignore[attr-defined]
    app.custos_detection = detection  # type: ignore[attr-defined]
    app.custos_units = units  # type: ignore[attr-defined]
    app.custos_hot = hot  # type: ignore[attr-defined]
    return app


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


def _worker_metrics(stats: WorkerStats, detection: Detection, hot: HotLoop) -> Iterator[Metric]:
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
    # Prometheus conventions: base units (seconds), cumulative time as a counter (its rate over
    # custos_scored_total's is the cost per event), recent quantiles as a labelled gauge, and
    # every latency in a histogram (a period's quantiles from two scrapes, or across workers).
    yield CounterMetricFamily(
        "custos_scoring_seconds", "Time spent scoring (divide by custos_scored_total).",
        stats.score_seconds,
    )  # fmt: skip
    stages = CounterMetricFamily(
        "custos_stage_seconds",
        "Time spent per stage of the per-event path (divide by custos_scored_total).",
        labels=["stage"],
    )
    for name, secs in sorted(stats.stage_seconds.items()):
        stages.add_metric([name], secs)
    yield stages
    p50, p99 = stats.latency_quantiles()
    latency = GaugeMetricFamily(
        "custos_event_to_score_seconds",
        "Kafka timestamp of an event to its batch scored (recent events).",
        labels=["quantile"],
    )
    latency.add_metric(["0.5"], p50 / 1000)
    latency.add_metric(["0.99"], p99 / 1000)
    yield latency
    yield stats.latency.family(
        "custos_event_to_score_latency_seconds",
        "Kafka timestamp of an event to its batch scored (every event since the start).",
    )
    yield CounterMetricFamily(
        "custos_state_resets", "Unreadable identity states started afresh.", detection.state_resets
    )
    yield CounterMetricFamily(
        "custos_state_names_shed",
        "Names of identities' most used values forgotten to keep their states within 1 KB.",
        detection.names_shed,
    )
    yield CounterMetricFamily(
        "custos_state_over_budget",
        "Identity state writes over 1 KB with no name left to forget.",
        detection.states_over_budget,
    )
    yield GaugeMetricFamily(
        "custos_open_incidents", "Identities with an open incident.", len(detection.open_incidents)
    )
    yield GaugeMetricFamily("custos_identities_held", "Identity states held.",
                              hot.store.identities())
    yield GaugeMetricFamily("custos_partitions_owned", "Input partitions owned.", len(hot.owned))
    yield CounterMetricFamily(
        "custos_state_restored", "State records read back from the changelog.", hot.restored
    )
    yield CounterMetricFamily(
        "custos_state_snapshots", "Snapshots of identity state written.", hot.snapshots
    )
    yield CounterMetricFamily(
        "custos_replayed", "Events re-applied quietly after a restart (snapshot mode).",
        stats.replayed,
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
    """Refuse to start without the topics the worker writes to; create its own topics.

    A missing output topic does not fail a send: the producer waits for metadata that never
    comes and retries, logging without end, while input piles up unscored. Stop at once with
    what is missing instead. The topics partitioned by identity (inputs, feedback, re-keyed,
    signals, the state changelog) must all have ``worker_partitions`` partitions: identity
    X's records of each must reach the one worker that holds X's state.
    """
    from pipeline.kafka.clients import make_admin
    from pipeline.kafka.topics import TopicSpec, apply_topics, missing_topics

    missing = missing_topics(settings, output_topics(settings))
    if missing:
        raise ConfigError(
            f"topic(s) {', '.join(missing)} do not exist on {settings.bootstrap_servers}: "
            "create them (custos topics apply) or point the CUSTOS_*_TOPIC settings at "
            "existing ones; the worker does not start without its outputs"
        )
    parts = settings.worker_partitions
    apply_topics(settings, [TopicSpec(name, parts, 1, config)
                            for name, config in internal_topics(settings).items()])  # fmt: skip
    keyed = [settings.identity_topic, settings.agent_topic, settings.feedback_topic,
             *internal_topics(settings)]  # fmt: skip
    md = make_admin(settings).list_topics(timeout=30).topics
    wrong = {n: len(md[n].partitions) for n in keyed if len(md[n].partitions) != parts}
    if wrong:
        raise ConfigError(
            "the topics partitioned by identity must have worker_partitions="
            f"{parts} partitions each; these do not: "
            + ", ".join(f"{n} ({k})" for n, k in wrong.items())
            + " (set CUSTOS_WORKER_PARTITIONS to match, or grow the topics)"
        )


def run_worker(settings: Settings, loglevel: str = "warning") -> None:
    """Run the worker in the foreground until interrupted (``custos worker``)."""
    from faust.worker import Worker

    preflight(settings)
    app = create_app(settings)
    Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()
