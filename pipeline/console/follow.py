"""Where the console's records come from: the worker's and responders' topics followed live
(findings, commands waiting for approval, commands acting or cancelled, responders' answers),
or a replay's output.

Commands count only when their signature verifies: a pending contain against the worker's
command keys (an approver must never be shown a forged one to approve), an acting or
cancelling one against the command and analysts' keys. Anything else is skipped, logged.

The follower is a consumer of its own group (``<app_id>-console-<store>``, one per store file:
two consoles on two stores must each read every partition, not share them) that starts each
partition where the console's store ends (the offsets it committed with the records), not
where the group last committed: the store is the truth about what the console holds, so a
store file copied, restored from a backup or deleted is followed correctly from there.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from pipeline.config import Settings
from pipeline.console.store import ConsoleStore
from pipeline.errors import ConfigError

__all__ = ["Follower", "load_replay"]

log = logging.getLogger("custos.console")


def load_replay(store: ConsoleStore, directory: Path) -> int:
    """Load a ``custos replay`` output directory's ``alerts.jsonl`` (one finding per line);
    returns how many findings changed. Read as one source: offsets are line numbers."""
    path = Path(directory) / "alerts.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not a custos replay output directory")
    done = store.offsets(str(path)).get(0, 0)
    with open(path, "rb") as fh:
        lines = [(str(path), 0, i, line) for i, line in enumerate(fh) if i >= done]
    return store.ingest(lines)


class Follower:
    """Reads the alerts topic into the store on a thread until :meth:`stop`."""

    def __init__(self, settings: Settings, store: ConsoleStore) -> None:
        self.settings = settings
        self.store = store
        self.kinds = {settings.alerts_topic: "finding", settings.approvals_topic: "pending",
                      settings.quarantine_topic: "command", settings.acks_topic: "response"}
        self.ingested = 0
        self.skipped = 0  # records that did not verify or parse
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console-follow", daemon=True)

    def start(self) -> Follower:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        from confluent_kafka import OFFSET_BEGINNING

        for tp in partitions:
            tp.offset = self.store.offsets(tp.topic).get(tp.partition, OFFSET_BEGINNING)
        consumer.assign(partitions)

    def parse(self, kind: str, value: bytes | None, now_ms: int) -> dict[str, Any] | None:
        """The message a record carries, verified where it is signed; None to skip it."""
        import json

        from pipeline.control.signing import analyst_keys, trusted_keys, with_analysts
        from pipeline.quarantine.commands import CommandRejected, verify

        if not value:
            return None
        if kind in ("finding", "response"):
            try:
                doc = json.loads(value)
            except ValueError:
                return None
            return doc if isinstance(doc, dict) else None
        try:
            keys = trusted_keys(self.settings)
            if kind == "command":
                keys = with_analysts(keys, analyst_keys(self.settings))
            return verify(value, keys, now_ms=now_ms, max_age_ms=10**12, executable=False)
        except (CommandRejected, ConfigError) as exc:
            log.warning("console: a %s record skipped: %s", kind, exc)
            return None

    def _run(self) -> None:
        import hashlib

        from pipeline.kafka.clients import make_consumer

        where = self.store.path
        if where != ":memory:":
            where = str(Path(where).resolve())
        digest = hashlib.sha256(where.encode()).hexdigest()[:8]
        consumer = make_consumer(self.settings, f"{self.settings.app_id}-console-{digest}")
        try:
            consumer.subscribe(list(self.kinds), on_assign=self._on_assign)
            while not self._stop.is_set():
                msgs = consumer.consume(500, 0.5)
                now_ms = int(time.time() * 1000)
                batch: list[tuple[str, int, int, str, dict[str, Any] | None]] = []
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        if err.fatal():
                            self.error = str(err)
                            log.error("console follower stopped: %s", err)
                            return
                        continue
                    topic = m.topic() or ""
                    kind = "command" if self.kinds[topic] == "pending" else self.kinds[topic]
                    doc = self.parse(self.kinds[topic], m.value(), now_ms)
                    self.skipped += doc is None
                    batch.append((topic, m.partition() or 0, m.offset() or 0, kind, doc))
                if batch:
                    self.ingested += self.store.ingest_parsed(batch)
                    # The store holds them with their offsets; the group's commit is for
                    # operators' lag tools only.
                    consumer.commit(asynchronous=True)
        except Exception as exc:  # a thread's death must be seen, not silent
            self.error = repr(exc)
            log.exception("console follower stopped")
        finally:
            consumer.close()
