"""Where the console's findings come from: ``custos.alerts`` followed live, or a replay's output.

The follower is a consumer of its own group (``<app_id>-console``) that starts each partition
where the console's store ends (the offsets it committed with the findings), not where the
group last committed: the store is the truth about what the console holds, so a store file
copied, restored from a backup or deleted is followed correctly from there.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from pipeline.config import Settings
from pipeline.console.store import ConsoleStore

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
        self.topic = settings.alerts_topic
        self.ingested = 0
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

        held = self.store.offsets(self.topic)
        for tp in partitions:
            tp.offset = held.get(tp.partition, OFFSET_BEGINNING)
        consumer.assign(partitions)

    def _run(self) -> None:
        from pipeline.kafka.clients import make_consumer

        consumer = make_consumer(self.settings, f"{self.settings.app_id}-console")
        try:
            consumer.subscribe([self.topic], on_assign=self._on_assign)
            while not self._stop.is_set():
                msgs = consumer.consume(500, 0.5)
                batch: list[tuple[str, int, int, bytes | None]] = []
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        if err.fatal():
                            self.error = str(err)
                            log.error("console follower stopped: %s", err)
                            return
                        continue
                    batch.append((self.topic, m.partition() or 0, m.offset() or 0, m.value()))
                if batch:
                    self.ingested += self.store.ingest(batch)
                    # The store holds them with their offsets; the group's commit is for
                    # operators' lag tools only.
                    consumer.commit(asynchronous=True)
        except Exception as exc:  # a thread's death must be seen, not silent
            self.error = repr(exc)
            log.exception("console follower stopped")
        finally:
            consumer.close()
