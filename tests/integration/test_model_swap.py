"""A running worker refuses a tampered model, keeps scoring, and hot-swaps a signed one."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sklearn.ensemble import IsolationForest

from pipeline.baselines.layout import DEVIATIONS
from pipeline.config import REPO_ROOT, Settings, env_var
from pipeline.control.keys import pem
from pipeline.control.signing import command_key
from pipeline.kafka.clients import make_producer, read_all
from pipeline.models.artifacts import encode_sklearn
from pipeline.models.registry import ModelRegistry
from pipeline.models.runtime import Announcement, encode_announcement
from tests.integration.test_worker import AGENT, _agent_call, _env, _produce, _start
from tests.unit.models.test_models import _flip, _loda_artifact, _manifest


def _reports(settings: Settings, pred: Any, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in read_all(settings, settings.reports_topic, timeout_s=3):
            doc = msgspec.json.decode(m.value())
            if pred(doc):
                return doc  # type: ignore[no-any-return]
        time.sleep(0.5)
    raise AssertionError(f"no such report on {settings.reports_topic} within {timeout} s")


def _scored(settings: Settings, uid: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in read_all(settings, settings.scores_topic, timeout_s=3):
            if msgspec.json.decode(m.value())["event_uid"] == uid:
                return
        time.sleep(0.5)
    raise AssertionError(f"{uid} was not scored within {timeout} s")


def test_tampered_model_refused_signed_one_swapped_in_live(
    isolated: Settings, tmp_path: Path
) -> None:
    key = Ed25519PrivateKey.generate()
    reg = ModelRegistry(tmp_path / "models")
    (reg.root / "keys").mkdir(parents=True)
    (reg.root / "keys" / "itest.pub.pem").write_bytes(pem(key.public_key()))
    for version, seed in (("1", 1), ("2", 2)):
        art = _loda_artifact(seed)
        reg.publish(_manifest(version, art), art, key)
    # Version 3 is what 02_retrain.ipynb publishes: a scikit-learn IsolationForest (skops).
    rows = np.random.default_rng(3).uniform(0, 0.1, (500, len(DEVIATIONS)))
    forest = IsolationForest(n_estimators=10, random_state=0).fit(rows)
    art = encode_sklearn(forest, calibration=np.linspace(0, 20, 500), scale=1.0)
    reg.publish(_manifest("3", art, kind="sklearn", artifact="detector.skops"), art, key)
    reg.promote("detector", "1", by="itest")

    def announce(version: str) -> None:
        digest = hashlib.sha256(reg.manifest_bytes("detector", version)).hexdigest()
        a = Announcement("promote", "detector", version, digest, "analyst:itest", 1, "itest")
        # Signed with the command key the worker trusts (its own JWKS, in the shared home).
        key = command_key(isolated.command_key_path, isolated.command_jwks_path)
        producer = make_producer(isolated)
        producer.produce(isolated.models_topic, key=b"detector",
                         value=encode_announcement(a, key))  # fmt: skip
        assert producer.flush(30) == 0

    env = _env(isolated, tmp_path / "data", f"itest-models-{os.getpid()}-{int(time.time())}")
    env[env_var("models_dir")] = str(reg.root)
    env[env_var("model_warmup_events")] = "0"
    env[env_var("model_trust_local_key")] = "false"
    suppressions = tmp_path / "suppressions.yaml"
    suppressions.write_text("- {identity: svc-backup, feature: bytes_out, until: 2030-01-01, "
                            "reason: nightly export}\n")  # fmt: skip
    env[env_var("suppressions_file")] = str(suppressions)
    now = int(time.time() * 1000)
    worker = _start(env, tmp_path / "worker.log")
    try:
        started = _reports(isolated, lambda d: d["kind"] == "model.loaded")
        assert started["model"]["version"] == "1", started
        config = _reports(isolated, lambda d: d["kind"] == "config.start")
        assert config["settings"]["models_dir"] == str(reg.root)
        silenced = _reports(isolated, lambda d: d["kind"] == "suppressions.loaded")
        [rule] = silenced["requested"]["suppressions"]
        assert rule["identity"] == "svc-backup" and rule["reason"] == "nightly export"

        # Version 2 is tampered with after signing: refused, version 1 keeps scoring.
        _flip(reg.root / "detector" / "2" / "detector.msgpack")
        announce("2")
        refused = _reports(isolated, lambda d: d["kind"] == "model.refused")
        assert refused["reason"] == "artifact_hash" and refused["model"]["version"] == "1"
        _produce(isolated, [_agent_call("after-refusal", now)])
        _scored(isolated, "after-refusal")

        # Version 3 (an IsolationForest) is properly signed: swapped in without a restart.
        announce("3")
        swapped = _reports(
            isolated, lambda d: d["kind"] == "model.loaded" and d["model"]["version"] == "3"
        )
        assert swapped["previous"]["version"] == "1"
        _produce(isolated, [_agent_call("after-swap", now + 1000)])
        _scored(isolated, "after-swap")
        assert worker.poll() is None  # never restarted
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    assert AGENT  # the events above are the worker tests' agent


def test_a_revoked_agent_model_trips_the_rule_in_a_running_worker(
    isolated: Settings, tmp_path: Path
) -> None:
    from pipeline.control.signing import sign_agent_model_update
    from pipeline.scores.agent_models import (
        AgentModelUpdate,
        encode_update,
        load_agent_model_registry,
    )

    # A deployment with a registry (none is loaded by default): the simulator's example one.
    registry = REPO_ROOT / "models" / "examples" / "agent-models.yaml"
    build = next(iter(load_agent_model_registry(registry)))
    model = {"name": build.name, "version": build.version, "digest": build.digest}

    def call(uid: str, t: int) -> dict[str, Any]:
        event = _agent_call(uid, t)
        event["unmapped"]["model"] = model
        return event

    env = _env(isolated, tmp_path / "data", f"itest-agentm-{os.getpid()}-{int(time.time())}")
    env[env_var("model_allowlist_file")] = str(registry)
    now = int(time.time() * 1000)
    worker = _start(env, tmp_path / "worker.log")
    try:
        _produce(isolated, [call(f"before-{i}", now - 60_000 + i * 1000) for i in range(5)])
        _scored(isolated, "before-4")
        revoke = AgentModelUpdate(action="revoke", name=build.name, version=build.version,
                                  digest=build.digest, revoked_by="secops:itest",
                                  reason="weights leaked")  # fmt: skip
        producer = make_producer(isolated)
        # Unsigned first: refused, the model stays approved.
        producer.produce(isolated.agent_models_topic, key=revoke.key(), value=encode_update(revoke))
        assert producer.flush(30) == 0
        unsigned = _reports(isolated, lambda d: d["kind"] == "agent_model.refused")
        assert unsigned["reason"] == "unsigned"
        key = command_key(isolated.command_key_path, isolated.command_jwks_path)
        producer.produce(isolated.agent_models_topic, key=revoke.key(),
                         value=sign_agent_model_update(revoke, key))  # fmt: skip
        assert producer.flush(30) == 0
        applied = _reports(isolated, lambda d: d["kind"] == "agent_model.applied")
        assert applied["model"]["status"] == "revoked"
        _produce(isolated, [call("after-revoke", now)])
        finding = _finding(isolated, "after-revoke")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    rules = finding["unmapped"]["custos"]["rules"]
    hit = next(r for r in rules if r["rule"] == "model_provenance")
    assert hit["evidence"]["reason"] == "revoked", hit
    befores = [
        msgspec.json.decode(m.value())
        for m in read_all(isolated, isolated.scores_topic, timeout_s=5)
    ]
    assert not any(r["rule"] == "model_provenance" for s in befores
                   if s["event_uid"].startswith("before-") for r in s["rules"])  # fmt: skip


def _finding(
    settings: Settings, event_uid: str, timeout: float = 60, about: str | None = None
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in read_all(settings, settings.alerts_topic, timeout_s=3):
            doc = msgspec.json.decode(m.value())
            if about and doc["evidences"][0]["actor"]["user"]["uid"] != about:
                continue
            if any(e["uid"] == event_uid for e in doc["finding_info"]["related_events"]):
                return doc  # type: ignore[no-any-return]
        time.sleep(0.5)
    raise AssertionError(f"no finding with {event_uid} within {timeout} s")
