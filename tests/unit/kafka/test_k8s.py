"""The generated Kubernetes manifests (infra/k8s/) match the sources they come from."""

from __future__ import annotations

import dataclasses
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from click.testing import CliRunner

from pipeline.cli.main import main
from pipeline.config import REPO_ROOT, Settings, env_var
from pipeline.kafka import k8s
from pipeline.kafka.security import Operation, acl_plan
from pipeline.kafka.topics import load_topics
from pipeline.stream.app import changelog_topic, internal_topics

K8S = REPO_ROOT / "infra" / "k8s"
FILES = ("kafka.yaml", "topics.yaml", "users.yaml", "worker.yaml", "keda.yaml")
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings.from_env({})


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d is not None]


def _kind(kind: str) -> list[dict[str, Any]]:
    return [d for name in FILES for d in _docs(name) if d["kind"] == kind]


def test_the_committed_manifests_are_what_the_sources_generate(settings: Settings) -> None:
    want = k8s.render_all(settings, internal_topics(settings))
    assert sorted(want) == sorted(FILES)
    for name, text in want.items():
        assert (K8S / name).read_text() == text, (
            f"infra/k8s/{name} is stale: regenerate it with `custos kafka k8s`"
        )


def test_every_file_starts_with_the_generated_header_and_has_no_yaml_aliases() -> None:
    for name in FILES:
        text = (K8S / name).read_text()
        assert text.startswith(k8s.HEADER)
        assert not re.search(r"[&*]id\d+", text), name  # aliases: hard to read, easy to break


def test_every_declared_topic_appears_once_with_its_partitions_and_config(
    settings: Settings,
) -> None:
    topics = _kind("KafkaTopic")
    by_name = {t["spec"]["topicName"]: t for t in topics}
    specs = load_topics(settings.topics_file)
    internal = internal_topics(settings)
    counts = Counter(t["spec"]["topicName"] for t in topics)
    assert max(counts.values()) == 1, counts
    assert set(by_name) == {s.name for s in specs} | set(internal)
    for s in specs:
        spec = by_name[s.name]["spec"]
        assert spec["partitions"] == s.partitions, s.name
        assert spec["config"] == s.config, s.name
        assert spec["replicas"] == max(3, s.replication_factor), s.name
    for name, config in internal.items():
        spec = by_name[name]["spec"]
        assert spec["partitions"] == settings.worker_partitions, name
        assert spec["config"] == config, name  # the worker cannot alter configs: exactly these
    assert by_name[changelog_topic(settings)]["spec"]["config"]["cleanup.policy"] == "compact"
    assert all(t["metadata"]["labels"] == {"strimzi.io/cluster": "custos"} for t in topics)


def test_the_users_grant_exactly_the_acl_plan(settings: Settings) -> None:
    back = {k8s.strimzi_operation(op): op for op in get_args(Operation)}
    granted = []
    for user in _kind("KafkaUser"):
        spec = user["spec"]
        assert spec["authentication"] == {"type": "scram-sha-512"}
        assert spec["authorization"]["type"] == "simple"
        resources = []
        for rule in spec["authorization"]["acls"]:
            r = rule["resource"]
            assert rule["host"] == "*" and rule.get("type", "allow") == "allow"
            assert r["type"] in {"topic", "group"} and r["patternType"] in {"literal", "prefix"}
            resources.append((r["type"], r["name"], r["patternType"]))
            who, prefixed = f"User:{user['metadata']['name']}", r["patternType"] == "prefix"
            granted += [(who, r["type"], r["name"], prefixed, back[op])
                        for op in rule["operations"]]  # fmt: skip
        assert len(resources) == len(set(resources)), "one rule per resource"
    planned = [(a.principal, "topic" if a.topic else "group", a.topic or a.group, a.prefixed,
                a.operation) for a in acl_plan(settings)]  # fmt: skip
    assert Counter(granted) == Counter(planned)


def test_metadata_names_are_dns_1123_and_unique_per_kind() -> None:
    seen: Counter[tuple[str, str]] = Counter()
    for name in FILES:
        for doc in _docs(name):
            meta = doc["metadata"]["name"]
            assert DNS_1123.match(meta) and len(meta) <= 253, (name, meta)
            seen[(doc["kind"], meta)] += 1
    assert [key for key, n in seen.items() if n > 1] == []
    assert len(_kind("KafkaTopic")) > 10 and len(_kind("KafkaUser")) > 5


@pytest.mark.parametrize("name", ["custos.quarantine.acks", "Custos_Worker-x", "a..b", "x-"])
def test_dns_name_is_dns_1123(name: str) -> None:
    assert DNS_1123.match(k8s.dns_name(name))


def test_the_scaler_follows_the_worker_partitions_and_group(settings: Settings) -> None:
    (scaled,) = _kind("ScaledObject")
    (auth,) = _kind("TriggerAuthentication")
    (statefulset,) = _kind("StatefulSet")
    spec = scaled["spec"]
    assert spec["maxReplicaCount"] == settings.worker_partitions
    assert spec["minReplicaCount"] == 1
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet",
                                      "name": statefulset["metadata"]["name"]}  # fmt: skip
    assert {t["metadata"]["topic"] for t in spec["triggers"]} == {
        settings.agent_topic, settings.identity_topic}  # fmt: skip
    for t in spec["triggers"]:
        assert t["type"] == "kafka"
        assert t["metadata"]["consumerGroup"] == settings.app_id
        assert t["metadata"]["lagThreshold"] == "50000"
        assert t["authenticationRef"]["name"] == auth["metadata"]["name"]
    # Other settings, other numbers: nothing is hard-coded.
    other = Settings.from_env({}, worker_partitions=12, app_id="custos-eu")
    (_, scaled2) = k8s.keda_scaledobject(other)
    assert scaled2["spec"]["maxReplicaCount"] == 12
    assert {t["metadata"]["consumerGroup"] for t in scaled2["spec"]["triggers"]} == {"custos-eu"}


def test_the_worker_uses_real_settings_and_the_strimzi_secrets(settings: Settings) -> None:
    (statefulset,) = _kind("StatefulSet")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    known = {env_var(f.name) for f in dataclasses.fields(Settings)}
    assert set(env) <= known, set(env) - known  # a renamed setting must not go unnoticed
    assert env[env_var("bootstrap")]["value"] == "custos-kafka-bootstrap:9093"
    assert env[env_var("kafka_principal")]["value"] == "worker"
    assert env[env_var("sasl_password")]["valueFrom"] == {
        "secretKeyRef": {"name": "worker", "key": "password"}}  # fmt: skip
    assert env[env_var("app_id")]["value"] == settings.app_id
    assert "worker" in {u["metadata"]["name"] for u in _kind("KafkaUser")}
    # The worker data dir lives on the claim template's volume.
    claims = {c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    datadir = env[env_var("worker_datadir")]["value"]
    assert any(datadir.startswith(mounts[c]) for c in claims)
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"},
                                      "limits": {"memory": "3Gi"}}  # fmt: skip
    # The kubelet dials the pod's address: the metrics page must listen there.
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/custos/metrics", "port": settings.worker_web_port}  # fmt: skip
    assert env[env_var("worker_web_bind")]["value"] == "0.0.0.0"


def test_the_cluster_is_kraft_with_scram_on_tls() -> None:
    (kafka,) = _kind("Kafka")
    (pool,) = _kind("KafkaNodePool")
    assert kafka["metadata"]["annotations"] == {"strimzi.io/kraft": "enabled",
                                                "strimzi.io/node-pools": "enabled"}  # fmt: skip
    assert kafka["spec"]["kafka"]["version"].startswith("4.")
    (listener,) = kafka["spec"]["kafka"]["listeners"]
    assert (listener["port"], listener["tls"]) == (9093, True)
    assert listener["authentication"] == {"type": "scram-sha-512"}
    assert kafka["spec"]["kafka"]["authorization"] == {"type": "simple"}
    assert set(kafka["spec"]["entityOperator"]) == {"topicOperator", "userOperator"}
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    assert (pool["spec"]["replicas"], set(pool["spec"]["roles"])) == (3, {"broker", "controller"})
    assert pool["spec"]["storage"]["volumes"][0]["type"] == "persistent-claim"


def test_the_cli_writes_the_manifests_without_a_broker(tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    # The defaults, whatever CUSTOS_* this shell has (None: unset for the run).
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CUSTOS_")}
    result = CliRunner().invoke(main, ["kafka", "k8s", "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    for name in FILES:
        assert f"wrote {out / name}" in result.output
        assert (out / name).read_text() == (K8S / name).read_text(), name
