"""Outputs delivered before input is committed: the outbox of a unit of work, how the worker
stops when the broker refuses one, and where a refused dead letter is kept."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.events.deadletter import DeadLetter

__all__ = ["Outbox", "OutputRefused", "die_uncommitted", "spill"]

log = logging.getLogger("custos.worker")


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


def die_uncommitted(reason: str) -> None:
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
