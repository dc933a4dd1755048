"""Analyst feedback reaches the worker that owns the identity and takes effect, audited."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import msgspec
from joserfc.jwk import KeySet

from pipeline.config import Settings
from pipeline.control.feedback import Feedback, encode
from pipeline.control.signing import analyst_key, analyst_keys, sign_feedback, with_analysts
from pipeline.kafka.clients import make_producer, read_all
from pipeline.quarantine.commands import verify
from tests.integration.test_model_swap import _finding, _reports
from tests.integration.test_worker import AGENT, STRANGER, _agent_call, _env, _produce, _start


def _send(settings: Settings, fb: Feedback) -> None:
    """Signed with the analyst's own key, which the worker trusts (shared home)."""
    key = analyst_key(settings)
    producer = make_producer(settings)
    producer.produce(settings.feedback_topic, key=fb.identity.encode(),
                     value=sign_feedback(fb, key))  # fmt: skip
    assert producer.flush(30) == 0


def _commands(settings: Settings, pred: Any, timeout: float = 60) -> dict[str, Any]:
    jwks = KeySet.import_key_set(
        json.loads((Path(settings.home) / "keys" / "commands.jwks.json").read_text())
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in read_all(settings, settings.quarantine_topic, timeout_s=3):
            # As a responder would: an approved contain needs the analyst's signed proof.
            c = verify(m.value(), with_analysts(jwks, analyst_keys(settings)),
                       now_ms=int(time.time() * 1000), max_age_ms=10**9,
                       approvers=analyst_keys(settings))  # fmt: skip
            if pred(c["body"]["openc2"]["request"]):
                return c  # type: ignore[no-any-return]
        time.sleep(0.5)
    reports = [(d["kind"], d.get("detail")) for d in (msgspec.json.decode(m.value()) for m in
               read_all(settings, settings.reports_topic, timeout_s=3))]  # fmt: skip
    dead = [m.value() for m in read_all(settings, settings.deadletter_topic, timeout_s=3)]
    raise AssertionError(f"no such command; reports {reports}; dead letters {dead}")


def test_confirm_quarantines_with_the_analysts_approval_false_positive_lifts_it(
    isolated: Settings, tmp_path: Path
) -> None:
    now = int(time.time() * 1000)
    start = now - 3_600_000
    normal = [_agent_call(f"n-{i}", start + i * 10_000) for i in range(300)]
    # A High rule (not Critical): an alert that waits for a human before any quarantine.
    lateral = _agent_call("lateral-1", start + 3_100_000, delegated_by=STRANGER)
    _produce(isolated, [*normal, lateral])
    worker = _start(_env(isolated, tmp_path / "data", f"itest-fb-{os.getpid()}-{int(time.time())}"),
                    tmp_path / "worker.log")  # fmt: skip
    try:
        finding = _finding(isolated, "lateral-1", about=AGENT)
        assert not finding["unmapped"]["custos"]["quarantine"]
        fid = finding["finding_info"]["uid"]
        base = dict(identity=AGENT, by="analyst:alice", at_ms=now, finding_uid=fid)
        _send(isolated, Feedback(uid="fb-1", action="confirm", reason="owner never did this",
                                 **base))  # type: ignore[arg-type]  # fmt: skip
        contain = _commands(isolated, lambda r: r["action"] == "contain")
        ext = contain["body"]["openc2"]["request"]["args"]["x-custos"]
        assert ext["approval"] == "approved" and ext["approved_by"] == "analyst:alice"
        assert ext["finding_uid"] == fid
        _reports(isolated, lambda d: d["kind"] == "feedback.applied" and d["reason"] == "confirm")

        _send(isolated, Feedback(uid="fb-2", action="false_positive", reason="a test after all",
                                 learn_as_normal=True, **base))  # type: ignore[arg-type]  # fmt: skip
        cancel = _commands(isolated, lambda r: r["action"] == "cancel")
        assert cancel["body"]["openc2"]["request"]["args"]["x-custos"]["by"] == "analyst:alice"
        _send(isolated, Feedback(uid="fb-2", action="false_positive", reason="a test after all",
                                 learn_as_normal=True, **base))  # type: ignore[arg-type]  # fmt: skip
        dup = _reports(isolated, lambda d: d["kind"] == "feedback.duplicate")
        assert dup["subject"] == AGENT
        # Unsigned (anyone able to write the topic): dead-lettered, nothing released.
        forged = Feedback(uid="fb-3", action="release", reason="let me out", **base)  # type: ignore[arg-type]
        _send_raw(isolated, encode(forged))
        dead = read_all(isolated, isolated.deadletter_topic, expect=1, timeout_s=30)
        assert dict(dead[0].headers() or [])["custos.reason"] == b"unsigned"
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    closed = [msgspec.json.decode(m.value()) for m in read_all(isolated, isolated.alerts_topic)]
    assert any(f["finding_info"]["uid"] == fid and f["activity_id"] == 3 for f in closed)


def _send_raw(settings: Settings, value: bytes) -> None:
    producer = make_producer(settings)
    producer.produce(settings.feedback_topic, key=AGENT.encode(), value=value)
    assert producer.flush(30) == 0
