"""faust's own ceiling: the worker's consumer setup with an agent that only counts.

``custos bench`` runs this beside the real worker on the same topics, so the report separates
what Custos costs from what faust (aiokafka fetch, per-event ``Event`` objects, acks) costs
before any Custos code runs. Not a product feature: a measuring stick.

Run: ``python -m pipeline.stream.ceiling`` with the worker's ``CUSTOS_*`` settings; it serves
``custos_ceiling_consumed_total`` on ``/custos/metrics``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest

from pipeline.config import Settings
from pipeline.stream.app import faust_app


def create_ceiling_app(settings: Settings) -> Any:
    app = faust_app(settings, Path(tempfile.mkdtemp(prefix="custos-ceiling-")))
    registry = CollectorRegistry()
    consumed = Counter("custos_ceiling_consumed", "Events consumed.", registry=registry)
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                           "key_serializer": "raw", "value_serializer": "raw"}  # fmt: skip
    inputs = app.topic(settings.identity_topic, settings.agent_topic, **raw)

    async def count(stream: Any) -> None:
        async for batch in stream.take_events(
            settings.worker_batch, within=settings.worker_batch_within_s
        ):
            consumed.inc(len(batch))

    app.agent(inputs, name="ceiling")(count)

    @app.page("/custos/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.text(generate_latest(registry).decode(), content_type="text/plain")

    return app


if __name__ == "__main__":  # pragma: no cover - run by custos bench
    from faust.worker import Worker

    app = create_ceiling_app(Settings.from_env())
    Worker(app, loglevel="warning", quiet=True).execute_from_commandline()
