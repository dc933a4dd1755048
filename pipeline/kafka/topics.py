"""Declarative topics (``infra/topics.yaml``) applied idempotently with the AdminClient."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Exported at runtime; the package's stubs just do not re-declare them.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from pipeline.config import Settings
from pipeline.errors import ConfigError, KafkaError
from pipeline.kafka.clients import make_admin

_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_NEVER_COMPACT = ("custos.audit",)  # a compacted audit log could silently lose records


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)


def load_topics(path: str | Path) -> list[TopicSpec]:
    """Parse and validate the topics file; raise ConfigError naming the bad entry."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read topics file {path}: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("topics"), list):
        raise ConfigError(f"{path}: expected a mapping with a 'topics' list")
    defaults = doc.get("defaults") or {}
    specs: list[TopicSpec] = []
    seen: set[str] = set()
    for i, entry in enumerate(doc["topics"]):
        where = f"{path}: topics[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConfigError(f"{where}: each topic needs a string 'name'")
        name = entry["name"]
        if not _NAME.match(name) or name in {".", ".."}:
            raise ConfigError(f"{where}: invalid topic name {name!r}")
        if name in seen:
            raise ConfigError(f"{where}: topic {name!r} is declared twice")
        seen.add(name)
        partitions = entry.get("partitions", defaults.get("partitions", 1))
        replication = entry.get("replication_factor", defaults.get("replication_factor", 1))
        for key, value in (("partitions", partitions), ("replication_factor", replication)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{where} ({name}): {key} must be a positive integer")
        config = {str(k): str(v) for k, v in (entry.get("config") or {}).items()}
        if "compact" in config.get("cleanup.policy", "") and name in _NEVER_COMPACT:
            raise ConfigError(f"{where}: {name} must never be compacted")
        specs.append(TopicSpec(name, partitions, replication, config))
    return specs


@dataclass
class ApplyReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"created   {n}" for n in self.created]
        out += [f"updated   {n}" for n in self.updated]
        out += [f"unchanged {n}" for n in self.unchanged]
        out += [f"warning   {w}" for w in self.warnings]
        return out


def apply_topics(settings: Settings, specs: list[TopicSpec], timeout: float = 30.0) -> ApplyReport:
    """Create missing topics, grow partitions, align configs. Safe to run any number of times."""
    admin = make_admin(settings)
    report = ApplyReport()
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except Exception as exc:
        raise KafkaError(f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}") from exc

    missing = [s for s in specs if s.name not in existing]
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(s.name, s.partitions, s.replication_factor, config=s.config)
                for s in missing
            ],
            operation_timeout=timeout,
        )
        for name, fut in futures.items():
            _wait(fut, f"creating topic {name}", timeout)
            report.created.append(name)
        _wait_for_leaders(admin, report.created, timeout)

    for spec in specs:
        if spec.name not in existing:
            continue
        changed = False
        have = len(existing[spec.name].partitions)
        if spec.partitions > have:
            fut = admin.create_partitions([NewPartitions(spec.name, spec.partitions)])[spec.name]
            _wait(fut, f"growing {spec.name} to {spec.partitions} partitions", timeout)
            changed = True
        elif spec.partitions < have:
            report.warnings.append(
                f"{spec.name} has {have} partitions, {spec.partitions} declared: "
                "Kafka cannot shrink a topic; left as is"
            )
        if spec.config and _align_config(admin, spec, timeout):
            changed = True
        (report.updated if changed else report.unchanged).append(spec.name)
    return report


def missing_topics(settings: Settings, names: list[str], timeout: float = 30.0) -> list[str]:
    """Which of ``names`` the cluster does not have (in the given order)."""
    try:
        existing = make_admin(settings).list_topics(timeout=timeout).topics
    except Exception as exc:
        raise KafkaError(f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}") from exc
    return [n for n in dict.fromkeys(names) if n not in existing]


def _wait_for_leaders(admin: Any, names: list[str], timeout: float) -> None:
    """Return once every partition of ``names`` has a leader: created means usable."""
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending and time.monotonic() < deadline:
        md = admin.list_topics(timeout=timeout).topics
        pending = {
            n for n in pending
            if n not in md or any(p.leader < 0 for p in md[n].partitions.values())
        }  # fmt: skip
        if pending:
            time.sleep(0.1)
    if pending:
        raise KafkaError(f"topics without a leader after {timeout:.0f} s: {sorted(pending)}")


def _align_config(admin: Any, spec: TopicSpec, timeout: float) -> bool:
    resource = ConfigResource(ConfigResource.Type.TOPIC, spec.name)
    current = _wait(
        admin.describe_configs([resource])[resource], f"describing {spec.name}", timeout
    )
    diff = {k: v for k, v in spec.config.items() if k not in current or current[k].value != v}
    if not diff:
        return False
    entries = [
        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in diff.items()
    ]
    futures = admin.incremental_alter_configs(
        [ConfigResource(ConfigResource.Type.TOPIC, spec.name, incremental_configs=entries)]
    )
    for fut in futures.values():
        _wait(fut, f"altering config of {spec.name}", timeout)
    return True


def _wait(fut: Any, what: str, timeout: float) -> Any:
    try:
        return fut.result(timeout=timeout)
    except Exception as exc:
        raise KafkaError(f"{what} failed: {exc}") from exc
