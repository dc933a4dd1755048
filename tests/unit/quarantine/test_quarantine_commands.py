"""Quarantine commands: OpenC2 shape, one command per incident, signatures that refuse forgeries."""

from __future__ import annotations

import base64
import json

import msgspec
import pytest

from pipeline.control.signing import SigningKey
from pipeline.credentials.tokens import TaskClaims, issue
from pipeline.quarantine.commands import (
    CommandRejected,
    cancel,
    command_id_for,
    contain,
    request_of,
    sign,
    subject_of,
    verify,
)

NOW = 1_790_000_000_000


def _contain(**kw: object) -> dict[str, object]:
    args: dict[str, object] = {"finding_uid": "f-1", "reason": "credential misuse",
                               "duration_ms": 3_600_000, "now_ms": NOW, "sender": "custos-worker",
                               "credentials": ("cred-1", "cred-2")}  # fmt: skip
    args.update(kw)
    return contain("agt-7", **args)  # type: ignore[arg-type]


def reason_of(data: bytes, key: SigningKey, now_ms: int = NOW + 1000) -> str:
    with pytest.raises(CommandRejected) as info:
        verify(data, key.public_keys(), now_ms=now_ms)
    return info.value.reason


def test_contain_is_an_openc2_request_with_the_subject_and_custos_arguments() -> None:
    msg = _contain(dry_run=True, approval="required", severity_id=5, risk_score=92)
    headers = msg["headers"]
    assert isinstance(headers, dict) and set(headers) == {"request_id", "created", "from", "to"}
    req = request_of(msg)
    assert req["action"] == "contain"
    assert req["target"] == {"x-custos:subject": {"format": "opaque", "id": "agt-7"}}
    assert req["args"]["duration"] == 3_600_000 and req["args"]["response_requested"] == "complete"
    ext = req["args"]["x-custos"]
    assert ext["finding_uid"] == "f-1" and ext["credentials"] == ["cred-1", "cred-2"]
    assert ext["dry_run"] is True and ext["approval"] == "required" and ext["severity_id"] == 5
    assert subject_of(msg) == "agt-7"
    with pytest.raises(ValueError):
        _contain(approval="maybe")


def test_one_command_per_incident_new_request_per_message() -> None:
    a, b = _contain(), _contain(reason="more evidence")
    assert request_of(a)["command_id"] == request_of(b)["command_id"] == command_id_for("f-1")
    assert a["headers"]["request_id"] != b["headers"]["request_id"]  # type: ignore[index]
    assert command_id_for("f-2") != command_id_for("f-1")


def test_cancel_targets_the_contain_command() -> None:
    msg = cancel("agt-7", command_id=command_id_for("f-1"), reason="false positive",
                 now_ms=NOW, sender="custos-feedback", by="analyst:alice")  # fmt: skip
    req = request_of(msg)
    assert req["action"] == "cancel" and req["target"] == {"command": command_id_for("f-1")}
    assert subject_of(msg) == "agt-7" and req["args"]["x-custos"]["by"] == "analyst:alice"


def test_signed_commands_verify_and_forgeries_do_not() -> None:
    key, other = SigningKey.generate("k1"), SigningKey.generate("k1")
    msg = _contain()
    data = sign(msg, key)
    assert verify(data, key.public_keys(), now_ms=NOW + 1000) == msg
    assert reason_of(msgspec.json.encode(msg), key) == "unsigned"
    assert reason_of(sign(msg, other), key) == "bad_signature"  # same kid, other key
    head, body, sig = data.decode().split(".")
    doc = json.loads(base64.urlsafe_b64decode(body + "=="))
    doc["body"]["openc2"]["request"]["target"]["x-custos:subject"]["id"] = "usr-ceo"
    forged = base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()
    assert reason_of(f"{head}.{forged}.{sig}".encode(), key) == "bad_signature"
    # A contain stays actionable for its duration (1 h here), then expires; a cancel after 5 min.
    assert verify(data, key.public_keys(), now_ms=NOW + 1_800_000) == msg
    assert reason_of(data, key, now_ms=NOW + 3_601_000) == "expired"
    release = cancel("agt-7", command_id="c", reason="r", now_ms=NOW, sender="a", by="a")
    assert reason_of(sign(release, key), key, now_ms=NOW + 301_000) == "expired"
    assert reason_of(b"garbage", key) == "malformed"
    # A task credential is signed by the same kind of key but is not a command.
    token = issue(TaskClaims(sub="a", task="t", step=1, scope=(), ceiling=0, iat=0, exp=1,
                             jti="c", iss="custos"), key)  # fmt: skip
    assert reason_of(token.encode(), key) == "malformed"


def test_approve_keeps_the_command_and_records_who_approved() -> None:
    from pipeline.quarantine.decisions import approve, release

    pending = _contain(approval="required")
    approved = approve(pending, by="analyst:alice", now_ms=NOW + 60_000)
    req = request_of(approved)
    assert req["command_id"] == request_of(pending)["command_id"]
    assert approved["headers"]["request_id"] != pending["headers"]["request_id"]  # type: ignore[index]
    assert req["args"]["start_time"] == NOW + 60_000
    assert req["args"]["x-custos"]["approved_by"] == "analyst:alice"
    assert request_of(pending)["args"]["x-custos"]["approval"] == "required"  # not mutated
    with pytest.raises(CommandRejected):
        approve(_contain(), by="analyst:alice", now_ms=NOW)  # automatic: nothing to approve
    with pytest.raises(CommandRejected):
        approve(approved, by="analyst:bob", now_ms=NOW)  # already approved
    rel = release("agt-7", command_id=req["command_id"], reason="fp", by="analyst:alice",
                  now_ms=NOW)  # fmt: skip
    assert request_of(rel)["target"] == {"command": req["command_id"]}


def test_commands_dated_ahead_or_asking_too_much_are_refused() -> None:
    """Issue 12.9: a contain created ten years ahead never expired; durations are bounded."""
    from pipeline.quarantine.commands import MAX_DURATION_MS, MAX_SKEW_MS

    key = SigningKey.generate("k1")
    ten_years = 10 * 365 * 86_400_000
    ahead = contain("agt-7", finding_uid="f", reason="r", duration_ms=3_600_000,
                    now_ms=NOW + ten_years, sender="w")  # fmt: skip
    assert reason_of(sign(ahead, key), key) == "malformed"
    slightly = contain("agt-7", finding_uid="f", reason="r", duration_ms=3_600_000,
                       now_ms=NOW + MAX_SKEW_MS - 1000, sender="w")  # fmt: skip
    assert verify(sign(slightly, key), key.public_keys(), now_ms=NOW)  # clock skew is fine
    forever = _contain()
    forever["body"]["openc2"]["request"]["args"]["duration"] = MAX_DURATION_MS + 1
    assert reason_of(sign(forever, key), key) == "malformed"
    late_start = _contain()
    late_start["body"]["openc2"]["request"]["args"]["start_time"] = NOW + ten_years
    assert reason_of(sign(late_start, key), key) == "malformed"
    for odd in (0, -5, 1.5, "3600000", None):
        bad = _contain()
        bad["body"]["openc2"]["request"]["args"]["duration"] = odd
        assert reason_of(sign(bad, key), key) == "malformed", odd
    release = cancel("agt-7", command_id="c", reason="r", now_ms=NOW + ten_years, sender="a",
                     by="a")  # fmt: skip
    assert reason_of(sign(release, key), key) == "malformed"


def test_empty_and_junk_are_malformed_not_forged() -> None:
    key = SigningKey.generate("k1")
    for junk in (b"", b"   ", b"garbage", b"a.b.c", b"\xff\xfe", b"<xml/>"):
        assert reason_of(junk, key) == "malformed", junk


def test_pending_keeps_the_newest_verified_command_of_each(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import pipeline.control.signing
    import pipeline.kafka.clients
    from pipeline.config import Settings
    from pipeline.quarantine.commands import contain, request_of, sign
    from pipeline.quarantine.decisions import pending

    key, stranger = SigningKey.generate(), SigningKey.generate()
    now = int(time.time() * 1000)  # pending commands are checked as not yet expired

    def waiting(identity: str, finding: str, reason: str) -> dict[str, object]:
        return contain(identity, finding_uid=finding, reason=reason, duration_ms=60_000,
                       now_ms=now, sender="custos-worker", approval="required")  # fmt: skip

    class Msg:
        def __init__(self, offset: int, key: bytes, value: bytes) -> None:
            self._o, self._k, self._v = offset, key, value

        def offset(self) -> int:
            return self._o

        def key(self) -> bytes:
            return self._k

        def value(self) -> bytes:
            return self._v

    records = [
        Msg(0, b"agt-1", sign(waiting("agt-1", "f-1", "first"), key)),
        Msg(1, b"agt-2", sign(waiting("agt-2", "f-2", "other"), key)),
        Msg(2, b"agt-1", sign(waiting("agt-1", "f-1", "again"), key)),  # same command, newer
        Msg(3, b"agt-3", sign(waiting("agt-3", "f-3", "forged"), stranger)),
    ]
    monkeypatch.setattr(pipeline.kafka.clients, "read_all", lambda *a, **kw: records)
    monkeypatch.setattr(pipeline.control.signing, "trusted_keys", lambda s: key.public_keys())
    skipped: list[int | None] = []
    got = pending(Settings(), on_invalid=lambda offset, exc: skipped.append(offset))
    assert skipped == [3]
    assert [k for k, _ in got.values()] == [b"agt-1", b"agt-2"]
    first = next(iter(got.values()))[1]
    assert request_of(first)["args"]["x-custos"]["reason"] == "again"
    assert list(got) == [str(request_of(m)["command_id"]) for _, m in got.values()]
