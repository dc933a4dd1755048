"""The auditor on the real broker: decisions in, a verifiable log out; a tampered copy fails."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from pipeline.alerts.findings import build_finding, encode_finding
from pipeline.alerts.policy import RiskPolicy
from pipeline.alerts.state import RiskState
from pipeline.audit.auditor import run_auditor
from pipeline.audit.log import canonical
from pipeline.config import Settings, env_var
from pipeline.control.reports import Report
from pipeline.control.reports import encode as encode_report
from pipeline.control.signing import command_key
from pipeline.kafka.clients import make_producer, read_all
from pipeline.kafka.topics import TopicSpec, apply_topics
from pipeline.models.runtime import Announcement, encode_announcement
from pipeline.quarantine.commands import contain, sign
from pipeline.scores.explanations import RuleHit, Score


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    for name in ("bootstrap", "home", "audit_topic", "audit_checkpoints_topic", "models_topic",
                 "reports_topic", "agent_models_topic"):
        value = settings.bootstrap_servers if name == "bootstrap" else getattr(settings, name)
        env[env_var(name)] = str(value)
    return subprocess.run([sys.executable, "-m", "pipeline", "audit", *args], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_auditor_records_decisions_and_verify_catches_a_tampered_copy(
    isolated: Settings, tmp_path: Path
) -> None:
    settings = dataclasses.replace(isolated, home=str(tmp_path / "home"),
                                   auditor_group=f"audit-{os.getpid()}-{time.time_ns()}",
                                   audit_checkpoint_records=3)  # fmt: skip
    # Decisions as the worker and responders publish them.
    hit = RuleHit("credential_misuse", 5, "agt-1 used credential c-1 issued to agt-2")
    d = RiskPolicy().decide(RiskState(), Score("e-1", "agt-1", "agent", int(time.time() * 1000),
                                               0.1, 0.0, rules=(hit,),
                                               rationale="I was told to"))  # fmt: skip
    assert d is not None
    key = command_key(settings.command_key_path, settings.command_jwks_path)
    command = sign(contain("agt-1", finding_uid=d.finding_uid, reason=hit.text,
                           duration_ms=60_000, now_ms=int(time.time() * 1000),
                           sender="custos-worker"), key)  # fmt: skip
    results = {"x-custos": {"identity": "agt-1", "command_id": "c-1"}}
    ack = {"headers": {"request_id": "r-1", "created": 1, "from": "custos-responder", "to": []},
           "body": {"openc2": {"response": {"status": 200, "status_text": "contain done",
                                            "results": results}}}}  # fmt: skip
    producer = make_producer(settings)
    producer.produce(
        settings.alerts_topic,
        key=b"agt-1",
        value=encode_finding(build_finding(d, product_version="t")),
    )
    producer.produce(settings.quarantine_topic, key=b"agt-1", value=command)
    producer.produce(settings.acks_topic, key=b"agt-1", value=msgspec.json.encode(ack))
    # A model promotion, and the worker refusing the promoted version.
    producer.produce(settings.models_topic, value=encode_announcement(Announcement(
        "promote", "detector", "7", "ab" * 32, "analyst:alice", 1, "better PR-AUC"
    ), key))  # fmt: skip
    producer.produce(settings.reports_topic, value=encode_report(Report(
        "model.refused", "worker:custos", 2, subject="detector", reason="artifact_hash",
        detail="artifact SHA-256 is 00…", requested={"version": "7"}
    )))  # fmt: skip
    assert producer.flush(30) == 0

    run_auditor(settings, stop_after_s=8)
    entries = [m.value() for m in read_all(settings, settings.audit_topic, timeout_s=5)]
    kinds = [json.loads(e)["kind"] for e in entries]
    assert kinds[0] == "config.start"  # what the auditor ran with, secrets masked
    assert sorted(kinds[1:]) == ["alert.created", "model.promoted", "model.refused",
                                 "quarantine.done", "quarantine.issued"]  # fmt: skip
    promoted = next(json.loads(e) for e in entries if json.loads(e)["kind"] == "model.promoted")
    assert promoted["detail"]["signed"] is True
    assert promoted["actor"] == "analyst:alice" and promoted["why"]["explanation"] == [
        "better PR-AUC"
    ]
    refused = next(json.loads(e) for e in entries if json.loads(e)["kind"] == "model.refused")
    assert refused["actor"] == "worker:custos" and refused["why"]["reason"] == "artifact_hash"
    assert json.loads(entries[0])["detail"]["settings"]["audit_topic"] == settings.audit_topic
    alert = next(json.loads(e) for e in entries if json.loads(e)["kind"] == "alert.created")
    assert alert["why"]["rationale"] == ["I was told to"] and alert["refs"]["events"] == ["e-1"]
    assert hit.text in alert["why"]["explanation"]

    # A restarted auditor records its start again, and no decision twice.
    run_auditor(settings, stop_after_s=5)
    entries = [m.value() for m in read_all(settings, settings.audit_topic, timeout_s=5)]
    assert [json.loads(e)["kind"] for e in entries][6:] == ["config.start"]

    ok = _cli(settings, "verify")
    assert ok.returncode == 0 and ok.stdout.startswith("OK: 7 records"), ok.stdout + ok.stderr
    shown = _cli(settings, "show", "--identity", "agt-1").stdout
    assert "quarantine.issued" in shown and "agent said: I was told to" in shown
    proof = json.loads(_cli(settings, "prove", "1").stdout)
    assert proof["tree_size"] == 7 and proof["seq"] == 1

    # Someone rewrites record 1 in a copy of the log: verify names it.
    copy = f"{settings.audit_topic}.copy"
    apply_topics(settings, [TopicSpec(copy, 1, 1, {})])
    doc = json.loads(entries[1])
    doc["actor"] = "analyst:mallory"
    for i, e in enumerate(entries):
        producer.produce(copy, value=canonical(doc) if i == 1 else e)
    assert producer.flush(30) == 0
    bad = _cli(settings, "verify", "--topic", copy)
    assert bad.returncode == 1
    assert "TAMPERED: record 1 was modified" in bad.stdout, bad.stdout + bad.stderr
