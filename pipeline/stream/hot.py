"""The per-event path outside faust: one confluent-kafka consumer feeding the units of work.

faust stays the worker's shell (lifecycle, web and metrics page, timers, control topics), but
on the per-event path it cost more than the whole budget: a generator frame per message, a
changelog record and a RocksDB put per table write (issue 14). Here a consumer in the
worker's group reads the input, re-keyed, signal and feedback topics in batches
(``consume``) and hands them to :class:`~pipeline.stream.units.Units`; identity state lives in
memory (:class:`~pipeline.stream.store.PartitionStore`), written to a compacted changelog by
a confluent producer; input offsets are committed here. Written through (``snapshot_s`` 0):

* a unit's state writes are acknowledged (:meth:`HotLoop.state_written`) before the next unit
  starts: a kill -9 re-applies at most the unit in flight, and events re-read after it are
  recognised by the offsets each identity's state records (:mod:`~pipeline.stream.offsets`);
* offsets are committed every ``worker_commit_s``, after the shared models' checkpoint is
  saved (it includes at least what is committed);
* on a rebalance, revoked partitions are flushed and committed before another worker can
  take them; newly assigned ones are restored from the changelog before any of their
  records is handed to a unit (range assignment keeps the co-partitioned topics together).

Snapshot mode (``snapshot_s`` > 0, the store ``deferred``): units write state to memory only
(the core keeps the states it changed decoded, ``Detection.defer_writes``, their offsets in the
store's ``pending``, and encodes them at the snapshot); every ``snapshot_s`` (and on revoke and
a clean stop) :meth:`HotLoop.snapshot` writes every changed value, waits for the
acknowledgements, saves the shared checkpoint, then writes one marker per partition
(:data:`~pipeline.stream.store.MARKER`) with the input positions S its states now include.
Offsets are committed (asynchronously) after every batch: C, what was delivered. A new owner
restores the states, starts each input at S (feedback: at C - its units write their state
through) and replays the records below C *quietly*: state and shared models only, no output (it
was delivered before). Per-identity offsets still skip what a state already includes (a state
written after S: a tick, a flush cut short). The order flush, checkpoint, marker keeps the
shared models never ahead of an identity's state for any record a restore replays.

Only this loop and the units (one at a time, under ``units.lock``) touch identity state; the
rebalance callbacks run inside ``consume``, which is called holding that lock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from pipeline.baselines import kernel
from pipeline.stream.delivery import OutputRefused
from pipeline.stream.offsets import SharedCheckpoint
from pipeline.stream.store import MARKER, PartitionStore
from pipeline.stream.units import Units

__all__ = ["HotLoop", "Record", "to_record"]

log = logging.getLogger("custos.worker")

#: Restores one partition: (key, value) of its changelog records in order (value None: deleted).
Restore = Callable[[int], Iterable[tuple[bytes | None, bytes | None]]]


class Record(msgspec.Struct, gc=False):
    """A consumed record in the shape the units read (faust's: key, value, ``message.*``).

    A struct, not a dataclass: one is built per consumed message (0.95 -> 0.47 µs each), and
    it holds no reference cycles for the collector to track.
    """

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp: float  # seconds (the record's Kafka timestamp)
    headers: list[tuple[str, bytes]] | None = None

    @property
    def message(self) -> Record:
        return self


def to_record(msg: Any) -> Record:
    """A confluent-kafka message as a :class:`Record`."""
    kind, ts = msg.timestamp()
    return Record(msg.key(), msg.value(), msg.topic(), msg.partition(), msg.offset(),
                  ts / 1000.0 if kind else time.time(), msg.headers())  # fmt: skip


class HotLoop:
    """Consume → units of work → state written → offsets committed, until stopped.

    ``kinds`` maps each subscribed topic to its unit: ``events`` (inputs and re-keyed),
    ``signals`` or ``feedback``. ``consumer`` and ``producer`` are confluent-kafka clients
    (the producer writes the state changelog only); ``restore(p)`` reads partition ``p`` of
    the changelog back.
    """

    def __init__(
        self,
        units: Units,
        store: PartitionStore,
        checkpoint: SharedCheckpoint,
        *,
        consumer: Any,
        producer: Any,
        changelog: str,
        kinds: dict[str, str],
        restore: Restore,
        batch: int,
        within_s: float,
        commit_s: float,
        send_timeout_s: float,
        die: Callable[[str], None],
        snapshot_s: float = 0.0,
    ) -> None:
        self.units = units
        self.store = store
        self.checkpoint = checkpoint
        self.consumer = consumer
        self.producer = producer
        self.changelog = changelog
        self.kinds = kinds
        self.restore = restore
        self.batch = batch
        self.within_s = within_s
        self.commit_s = commit_s
        self.send_timeout_s = send_timeout_s
        self.die = die
        self.positions: dict[tuple[str, int], int] = {}  # next offset to read, per partition
        self.owned: set[int] = set()  # partition numbers whose state this worker holds
        self.assigned: set[tuple[str, int]] = set()  # (topic, partition) this consumer reads
        self.restored = 0  # changelog records read back
        self.failed: str | None = None  # first refused state write
        self.stopping = False
        self.generation = 0  # revocations so far: records read before one are not applied
        self._committed_at = time.monotonic()
        self._inflight: asyncio.Future[list[Any]] | None = None
        store.emit = self.emit
        # Snapshot mode (see the module docstring).
        self.snapshot_s = snapshot_s
        self.deferred = store.deferred = snapshot_s > 0
        self.snapshots = 0  # snapshots written
        self._snapshot_at = time.monotonic()
        # (topic, partition) → the group's committed offset at assignment (C): below it a
        # replayed record is quiet; commits never go below it.
        self.quiet: dict[tuple[str, int], int] = {}
        self.floor: dict[tuple[str, int], int] = {}

    # --- state writes ---------------------------------------------------------------------

    def emit(self, partition: int, key: bytes, value: bytes | None) -> None:
        while True:
            try:
                self.producer.produce(self.changelog, value=value, key=key,
                                      partition=partition, on_delivery=self._delivered)  # fmt: skip
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                self.producer.poll(0.05)

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None and self.failed is None:
            self.failed = f"state write to {self.changelog}[{msg.partition()}] refused: {err}"

    def _unwritten(self) -> str | None:
        remaining = self.producer.flush(self.send_timeout_s)
        if self.failed:
            return self.failed
        if remaining:
            return f"{remaining} state write(s) not acknowledged in {self.send_timeout_s} s"
        return None

    async def state_written(self) -> None:
        """Wait for the broker to acknowledge every state write; stop the worker if not."""
        reason = await asyncio.to_thread(self._unwritten)
        if reason is not None:
            self.die(reason)
            raise OutputRefused(reason)

    # --- offsets --------------------------------------------------------------------------

    def commit(self, only: set[tuple[str, int]] | None = None, asynchronous: bool = False) -> int:
        """Save the shared checkpoint (snapshot mode: only :meth:`snapshot` does), then commit
        what ended (``only``: these partitions)."""
        from confluent_kafka import KafkaException, TopicPartition

        if not self.deferred:
            self.checkpoint.save()
        floor = self.floor
        offsets = [TopicPartition(t, p, max(o, floor.get((t, p), -1)))
                   for (t, p), o in self.positions.items()
                   if only is None or (t, p) in only]  # fmt: skip
        self._committed_at = time.monotonic()
        if not offsets:
            return 0
        try:
            self.consumer.commit(offsets=offsets, asynchronous=asynchronous)
        except KafkaException as exc:  # a rebalance under way: the next owner re-reads, marked
            log.warning("offset commit failed (%s); the records are re-read, not re-applied",
                        exc.args[0])  # fmt: skip
            return 0
        return len(offsets)

    # --- snapshots (snapshot mode; holding units.lock) -------------------------------------

    def snapshot(self) -> str | None:
        """Every changed state out, acknowledged; the shared checkpoint saved; then each owned
        partition's marker, acknowledged. Returns why not, if a write was refused."""
        t0 = time.monotonic()
        # The core's deferred states into the store first, then everything changed out.
        self.units.detection.flush_states(self.store)
        n = self.store.flush()
        reason = self._unwritten()
        if reason is not None:
            return reason
        # The shared models include exactly what the states now written include (the units
        # hold the lock): a replay from any marker finds no record they learned that its
        # identity's state does not include.
        self.checkpoint.save()
        for p in sorted(self.owned):
            self.emit(p, MARKER, self._marker(p))
        reason = self._unwritten()
        self._snapshot_at = time.monotonic()
        self.snapshots += 1
        log.info("snapshot %d: %d state records, %d markers, in %.2f s", self.snapshots, n,
                 len(self.owned), self._snapshot_at - t0)  # fmt: skip
        return reason

    def _marker(self, p: int) -> bytes:
        """Partition ``p``'s positions (next offset per input topic, feedback excepted)."""
        return msgspec.msgpack.encode({t: o for (t, q), o in sorted(self.positions.items())
                                       if q == p and self.kinds.get(t) != "feedback"})  # fmt: skip

    # --- rebalances (inside consume, holding units.lock) ----------------------------------

    def on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        self.generation += 1
        self.assigned -= {(tp.topic, tp.partition) for tp in partitions}
        # The next owner must find every state this worker wrote (snapshot mode: all of them,
        # a marker beside them, so it replays nothing).
        reason = self.snapshot() if self.deferred else self._unwritten()
        if reason is not None:
            self.die(reason)
            return
        self.commit({(tp.topic, tp.partition) for tp in partitions})

    def on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        now = {tp.partition for tp in partitions}
        self._drop(self.owned - now)
        markers: dict[int, dict[str, int]] = {}
        for p in sorted(now - self.owned):
            t0, n = time.monotonic(), 0
            keys: set[bytes] = set()
            for key, value in self.restore(p):
                if key == MARKER:
                    if value is not None:
                        markers[p] = msgspec.msgpack.decode(value, type=dict[str, int])
                    n += 1
                elif key is not None:
                    self.store.load(p, key, value)
                    keys.add(key)
                    n += 1
            rolled = self.store.settle(keys)
            if rolled:
                log.warning("partition %d: %d side part(s) written by a unit that never finished "
                            "rolled back (its events are re-read)", p, rolled)  # fmt: skip
            opened = 0
            for key in keys:  # each identity's latest state (a key may repeat before compaction)
                uid = key.decode("utf-8", "replace")
                if uid in self.store:
                    opened += self.units.detection.adopt(uid, self.store[uid])
            self.restored += n
            log.info("restored partition %d: %d state records, %d open incidents, in %.1f s",
                     p, n, opened, time.monotonic() - t0)  # fmt: skip
        new = now - self.owned
        self.owned = now
        assigned = {(tp.topic, tp.partition) for tp in partitions}
        self.assigned = assigned
        self.positions = {k: v for k, v in self.positions.items() if k in assigned}
        if self.deferred or markers:
            # Write-through mode honours a marker too: a worker that kept snapshots before
            # may have died with records past it only in memory.
            self._start(consumer, partitions, new, markers)

    def _start(self, consumer: Any, partitions: list[Any], new: set[int],
               markers: dict[int, dict[str, int]]) -> None:  # fmt: skip
        """Snapshot mode: start each newly owned partition's inputs at its marker's positions
        (S), replaying quietly up to the group's committed offsets (C); feedback at C. Without
        a marker (never snapshotted: written through before) at C, and a marker is written at
        once - from then on records past C may be applied to memory only."""
        from confluent_kafka import KafkaException

        fresh = [tp for tp in partitions if tp.partition in new]
        committed: dict[tuple[str, int], int] = {}
        for attempt in range(10):
            try:
                committed = {(tp.topic, tp.partition): tp.offset
                             for tp in consumer.committed(fresh, timeout=10)
                             if tp.offset >= 0}  # fmt: skip
                break
            except KafkaException as exc:  # the coordinator moving: retried
                if attempt == 9:
                    self.die(f"cannot read the committed offsets: {exc.args[0]}")
                    return
                time.sleep(0.5)
        for tp in fresh:
            key = (tp.topic, tp.partition)
            c = committed.get(key)
            self.floor[key] = c if c is not None else -1
            if self.kinds.get(tp.topic) == "feedback":
                continue  # from C: tp.offset is left to the committed offset
            marker = markers.get(tp.partition)
            s = marker.get(tp.topic) if marker is not None else None
            start = s if s is not None else (c if c is not None else 0)  # 0: the earliest
            tp.offset = start
            self.positions[key] = start
            if c is not None and c > start:
                self.quiet[key] = c
        consumer.assign(partitions)
        if self.quiet:
            log.info("replaying quietly up to the committed offsets: %s",
                     {f"{t}[{p}]": f"{self.positions[(t, p)]}..{c}"
                      for (t, p), c in sorted(self.quiet.items())})  # fmt: skip
        unmarked = sorted(new - set(markers)) if self.deferred else []
        for p in unmarked:
            self.emit(p, MARKER, self._marker(p))
        reason = self._unwritten() if unmarked else None
        if reason is not None:
            self.die(reason)

    def on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        self.generation += 1
        lost = {tp.partition for tp in partitions}
        self._drop(lost & self.owned)
        self.owned -= lost
        self.assigned -= {(tp.topic, tp.partition) for tp in partitions}
        self.positions = {k: v for k, v in self.positions.items() if k[1] not in lost}
        self.quiet = {k: v for k, v in self.quiet.items() if k[1] not in lost}
        self.floor = {k: v for k, v in self.floor.items() if k[1] not in lost}

    def _drop(self, partitions: set[int]) -> None:
        if not partitions:
            return
        gone = self.store.drop(partitions)
        self.units.detection.forget_states(gone)  # unwritten ones too: the new owner replays
        # Another worker owns them now: no tick may write their state from here.
        self.units.detection.open_incidents.difference_update(gone)
        log.info("handed over partitions %s (%d identities)", sorted(partitions), len(gone))

    # --- the loop -------------------------------------------------------------------------

    def subscribe(self) -> None:
        self.consumer.subscribe(list(self.kinds), on_assign=self.on_assign,
                                on_revoke=self.on_revoke, on_lost=self.on_lost)  # fmt: skip

    async def take(self) -> list[Any]:
        """Up to ``batch`` messages: the first that comes, then whatever follows within
        ``within_s`` of it (nothing, after ``within_s`` of silence). As faust's ``take``: the
        wait starts at the first record, not at the call, which may first join the group.

        ``consume`` runs in slices of at most 50 ms, each holding ``units.lock`` (rebalance
        callbacks run inside it and touch identity state): a tick or a control unit waiting
        for the lock gets it between two slices, however long the batch takes to fill.
        """
        msgs: list[Any] = []
        start = time.monotonic()
        first: float | None = None
        while len(msgs) < self.batch:
            now = time.monotonic()
            left = self.within_s - (now - (start if first is None else first))
            if left <= 0:
                break
            generation = self.generation
            t0 = time.perf_counter()
            async with self.units.lock:
                self._inflight = asyncio.ensure_future(asyncio.to_thread(
                    self.consumer.consume, self.batch - len(msgs), min(left, 0.05)))  # fmt: skip
                got = await asyncio.shield(self._inflight)  # see run(): not cut short
            if got:  # waiting for input that is not there yet is not a cost of the events
                stage = self.units.stats.stage_seconds
                stage["consume"] = stage.get("consume", 0.0) + time.perf_counter() - t0
            if self.generation != generation:
                # Partitions were revoked meanwhile: what was read before is not ours to apply
                # any more (a new owner re-reads it from the offsets committed on revoke).
                log.info("rebalance during a batch: %d records left to their owners",
                         len(msgs) + len(got))  # fmt: skip
                self._reread(msgs + got)
                msgs, got, first = [], [], None
                start = time.monotonic()
            if got and first is None:
                first = time.monotonic()
            msgs.extend(got)
        return msgs

    def _reread(self, dropped: list[Any]) -> None:
        """Read again, from the first dropped record on, every partition still (or newly)
        assigned: the consume call that ran the rebalance callbacks may already hold records of
        the new assignment, and the consumer's position has moved past them. Without this they
        were skipped for good once a later offset of the partition was committed."""
        from confluent_kafka import KafkaException, TopicPartition

        first: dict[tuple[str, int], int] = {}
        for m in dropped:
            if m.error() is not None:
                continue
            k = (m.topic(), m.partition())
            if k in self.assigned and m.offset() < first.get(k, m.offset() + 1):
                first[k] = m.offset()
        for (topic, partition), offset in sorted(first.items()):
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # never skip input: a restart re-reads it
                self.die(f"cannot read {topic}[{partition}] again from offset {offset} after a "
                         f"rebalance: {exc.args[0]}")
                return

    async def poll(self) -> list[Record]:
        """One batch of records (rebalance callbacks may run meanwhile)."""
        msgs = await self.take()
        out = []
        for msg in msgs:
            err = msg.error()
            if err is None:
                out.append(to_record(msg))
            elif err.fatal():
                self.die(f"consumer failed: {err}")
            else:
                log.warning("consumer: %s", err)
        return out

    async def dispatch(self, records: list[Record]) -> None:
        """Hand a batch to the units by kind (order kept within a kind), then count it ended."""
        events: list[Record] = []
        signals: list[Record] = []
        feedback: list[Record] = []
        lists = {"events": events, "signals": signals, "feedback": feedback}
        for r in records:
            lists[self.kinds[r.topic]].append(r)
        quiet = self.quiet
        if quiet:  # replayed records whose outputs were delivered before: state only
            events, replay = _split(events, quiet)
            for i in range(0, len(replay), self.batch):
                await self.units.events(replay[i : i + self.batch], quiet=True)
            signals, replay = _split(signals, quiet)
            if replay:
                await self.units.signals(replay, quiet=True)
        for i in range(0, len(events), self.batch):
            await self.units.events(events[i : i + self.batch])
        if signals:
            await self.units.signals(signals)
        if feedback:
            await self.units.feedback_batch(feedback)
        # A partition's records come in offset order within a batch (a seek back starts a new
        # batch: take), so its last record is its furthest; were it not, less would be
        # committed and more re-read (marked as applied), never more skipped.
        last = {(r.topic, r.partition): r.offset for r in records}
        positions = self.positions
        for key, offset in last.items():
            if offset + 1 > positions.get(key, -1):
                positions[key] = offset + 1
            if quiet and offset + 1 >= quiet.get(key, 0):
                quiet.pop(key, None)  # replayed up to C

    async def run(self) -> None:
        """Until cancelled or :attr:`stopping`; a clean stop commits what ended."""
        await asyncio.to_thread(kernel.warm_up)  # compiled before the group sees this worker
        self.subscribe()
        try:
            while not self.stopping:
                records = await self.poll()
                if records:
                    await self.dispatch(records)
                if self.deferred:
                    await self._deferred(bool(records))
                elif time.monotonic() - self._committed_at >= self.commit_s:
                    async with self.units.lock:  # no unit between checkpoint and commit
                        await asyncio.to_thread(self.commit)
        finally:
            # Cancelled while a consume runs in its thread: let it return first (the client
            # is not to be closed under a call in flight); what it read is not committed.
            if self._inflight is not None and not self._inflight.done():
                await asyncio.wait([self._inflight], timeout=5.0)
            if self.deferred:
                if self.failed is None and self.snapshot() is None:
                    self.commit()
            elif self.failed is None and self._unwritten() is None:
                self.commit()
            self.consumer.close()

    async def _deferred(self, dispatched: bool) -> None:
        """Snapshot mode, between two batches: a snapshot when due, and the offsets of what
        was delivered committed after every batch (asynchronously: C bounds what a restart
        sends again, the replay below it is quiet)."""
        if time.monotonic() - self._snapshot_at >= self.snapshot_s:
            async with self.units.lock:
                t0 = time.perf_counter()
                reason = await asyncio.to_thread(self.snapshot)
                # A stage of the per-event path like the others (custos bench splits by them):
                # the units wait for it.
                stage = self.units.stats.stage_seconds
                stage["snapshot"] = stage.get("snapshot", 0.0) + time.perf_counter() - t0
            if reason is not None:
                self.die(reason)
                raise OutputRefused(reason)
        if dispatched or time.monotonic() - self._committed_at >= self.commit_s:
            async with self.units.lock:
                self.commit(asynchronous=True)


def _split(records: list[Record],
           quiet: dict[tuple[str, int], int]) -> tuple[list[Record], list[Record]]:  # fmt: skip
    """(records at or past their partition's committed offset, records below it)."""
    loud: list[Record] = []
    replay: list[Record] = []
    for r in records:
        (replay if r.offset < quiet.get((r.topic, r.partition), -1) else loud).append(r)
    return loud, replay
