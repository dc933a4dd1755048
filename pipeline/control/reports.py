"""What Custos's own services report about themselves, for the audit log (``custos.reports``).

A service's configuration when it starts, a model loaded, refused or left unchanged: decisions
no detection topic carries, so each service publishes them here and the auditor records them.

>>> r = Report(kind="model.refused", service="worker:custos", at_ms=1, reason="artifact_hash")
>>> decode(encode(r)) == r
True
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

__all__ = ["Report", "config_report", "decode", "encode"]


class Report(msgspec.Struct, frozen=True, omit_defaults=True):
    kind: str  # config.start | model.loaded | model.refused | model.unchanged
    service: str  # who reports: "worker:<app id>", "responder:<id>", "broker"
    at_ms: int
    subject: str | None = None  # what it is about (a model name), when not the service itself
    reason: str | None = None  # stable code (a refusal's reason)
    detail: str | None = None  # for humans
    model: dict[str, str] | None = None  # the model now running (name, version, hashes)
    previous: dict[str, str] | None = None  # the one it replaced
    requested: dict[str, Any] | None = None  # the announcement / version that was asked for
    settings: dict[str, str] | None = None  # config.start: effective settings, secrets masked


def config_report(settings: Any, service: str) -> Report:
    """A ``config.start`` report of ``settings`` (secrets masked by Settings.describe)."""
    values = {name: value for name, _, value, _ in settings.describe()}
    return Report("config.start", service, int(time.time() * 1000), settings=values)


def encode(report: Report) -> bytes:
    return msgspec.json.encode(report)


def decode(data: bytes) -> Report:
    return msgspec.json.decode(data, type=Report)
