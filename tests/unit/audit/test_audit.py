"""The audit log: every kind of tampering is caught and named; proofs check out."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pipeline.audit.auditor import history, newest_proof
from pipeline.audit.checkpoint import CheckpointError, sign_checkpoint, verify_checkpoint
from pipeline.audit.log import AuditLog, Report, canonical, prove, verify
from pipeline.audit.merkle import leaf_hash, verify_inclusion

ORIGIN = "custos.test/audit"
KEY = Ed25519PrivateKey.generate()


def build(n: int = 20, every: int = 8) -> tuple[list[bytes], list[str]]:
    log = AuditLog(ORIGIN)
    entries, checkpoints = [], []
    for i in range(n):
        entries.append(log.append(
            kind="quarantine.issued" if i % 3 == 0 else "alert.created",
            subject=f"agt-{i % 4}", actor="custos-worker", time_ms=1_000 + i,
            why={"explanation": [f"reason {i}"], "rationale": ["the agent said so"]},
            refs={"finding": f"f-{i}", "events": [f"e-{i}"]},
        ))  # fmt: skip
        if (i + 1) % every == 0:
            checkpoints.append(log.checkpoint(KEY))
    checkpoints.append(log.checkpoint(KEY))
    return entries, checkpoints


def check(entries: list[bytes], checkpoints: list[str]) -> Report:
    return verify(entries, checkpoints, ORIGIN, KEY.public_key())


def edit(entry: bytes, **change: object) -> bytes:
    record = json.loads(entry)
    record.update(change)
    return canonical(record)


def test_an_untouched_log_verifies() -> None:
    entries, checkpoints = build()
    report = check(entries, checkpoints)
    assert report.ok and report.records == 20 and report.checkpoints == 3
    assert report.unsigned_tail == 0


def test_a_modified_record_is_named() -> None:
    entries, checkpoints = build()
    entries[5] = edit(entries[5], actor="analyst:mallory")
    problems = check(entries, checkpoints).problems
    assert problems[0].startswith("record 5 was modified")
    assert any("checkpoint of size 8: root differs" in p for p in problems)


def test_a_sloppy_edit_is_not_canonical() -> None:
    entries, checkpoints = build()
    entries[3] = entries[3].replace(b'"actor":', b'"actor": ')
    assert check(entries, checkpoints).problems[0] == (
        "position 3: not canonical JSON (modified outside the writer)"
    )


def test_a_rewritten_tail_is_caught_by_the_signed_checkpoint() -> None:
    entries, checkpoints = build()
    # The attacker edits record 12 and re-chains everything after it: self-consistent, but the
    # checkpoint signed at size 16 (and 20) no longer matches.
    log = AuditLog(ORIGIN)
    log.resume(entries[:12])
    forged = list(entries[:12])
    for e in entries[12:]:
        r = json.loads(e)
        forged.append(log.append(kind=r["kind"], subject=r["subject"], actor="analyst:mallory",
                                 time_ms=r["time"], why=r["why"], refs=r["refs"]))  # fmt: skip
    problems = check(forged, checkpoints).problems
    assert [p.split(":")[0] for p in problems] == ["checkpoint of size 16", "checkpoint of size 20"]


def test_deleted_inserted_and_reordered_records_are_named() -> None:
    entries, checkpoints = build()
    deleted = [*entries[:6], *entries[7:]]
    assert check(deleted, checkpoints).problems[0] == (
        "record 7 at position 6: records 6..6 deleted"
    )
    inserted = [*entries[:6], entries[5], *entries[6:]]
    problems = check(inserted, checkpoints).problems
    assert problems[0].startswith("record 5 at position 6: inserted")
    swapped = entries[:]
    swapped[9], swapped[10] = swapped[10], swapped[9]
    problems = check(swapped, checkpoints).problems
    assert problems[0].startswith("record 10 at position 9: inserted or reordered")
    # Deleted and renumbered to hide the gap: the chain breaks exactly there.
    log = AuditLog(ORIGIN)
    log.resume(entries[:6])
    renumbered = [*entries[:6], *(edit(e, seq=json.loads(e)["seq"] - 1) for e in entries[7:])]
    assert check(renumbered, checkpoints).problems[0].startswith("record 5 was modified")


def test_a_truncated_log_is_caught() -> None:
    entries, checkpoints = build()
    problems = check(entries[:18], checkpoints).problems
    assert problems == [
        "checkpoint of size 20: the log has only 18 records (records removed from its end)"
    ]


def test_bad_forged_or_foreign_checkpoints_are_refused() -> None:
    entries, checkpoints = build()
    lines = checkpoints[0].split("\n")
    lines[1] = "9"  # claims a bigger tree under the same signature
    problems = check(entries, ["\n".join(lines), *checkpoints[1:]]).problems
    assert problems == ["checkpoint 0: bad signature on the checkpoint of size 9"]
    other = Ed25519PrivateKey.generate()
    foreign = sign_checkpoint(ORIGIN, 20, b"\x00" * 32, other)
    assert "no signature by the trusted key" in check(entries, [foreign]).problems[0]
    with pytest.raises(CheckpointError):
        verify_checkpoint(sign_checkpoint("other/log", 1, b"\x00" * 32, KEY), ORIGIN,
                          KEY.public_key())  # fmt: skip
    assert check(entries, []).problems == [
        "no valid checkpoint: nothing proves the log was not rewritten"
    ]


def test_a_fork_signed_with_the_real_key_does_not_match_the_records() -> None:
    entries, checkpoints = build()
    fork = sign_checkpoint(ORIGIN, 16, leaf_hash(b"another history"), KEY)
    problems = check(entries, [*checkpoints, fork]).problems
    assert problems == [
        "checkpoint of size 16: root differs from the records 0..15 (a record in that range "
        "was modified, inserted or deleted)"
    ]


def test_inclusion_proofs_verify_against_the_checkpoint_root() -> None:
    import base64

    entries, checkpoints = build()
    c = verify_checkpoint(checkpoints[1], ORIGIN, KEY.public_key())
    for seq in (0, 7, 15):
        p = prove(entries, seq, c.size)
        assert base64.b64decode(p["root"]) == c.root
        proof = [bytes.fromhex(h) for h in p["proof"]]
        assert verify_inclusion(leaf_hash(entries[seq]), seq, c.size, proof, c.root)
        assert not verify_inclusion(leaf_hash(entries[seq + 1]), seq, c.size, proof, c.root)


def test_signed_control_messages_are_recorded_with_who_and_why() -> None:
    """Announcements, registry updates and feedback are JWS on their topics: the auditor
    records what they say (and that they were signed); the consumers verify them."""
    from pipeline.audit.auditor import record_for
    from pipeline.control.feedback import Feedback
    from pipeline.control.signing import SigningKey, sign_agent_model_update, sign_feedback
    from pipeline.models.runtime import Announcement, encode_announcement
    from pipeline.scores.agent_models import AgentModelUpdate

    key = SigningKey.generate()
    upd = AgentModelUpdate(action="revoke", name="m", version="1", digest="sha256:" + "0" * 64,
                           reason="weights leaked", revoked_by="secops:bob")  # fmt: skip
    rec = record_for("agent_models", sign_agent_model_update(upd, key))
    assert rec is not None
    assert (rec["kind"], rec["actor"], rec["detail"]["signed"]) == (
        "agent_model.revoke", "secops:bob", True)  # fmt: skip
    fb = Feedback(uid="u", action="release", identity="agt-1", by="analyst:alice",
                  reason="owner confirmed", at_ms=1)  # fmt: skip
    rec = record_for("feedback", sign_feedback(fb, key))
    assert rec is not None
    assert (rec["kind"], rec["subject"], rec["actor"]) == ("feedback.release", "agt-1",
                                                           "analyst:alice")  # fmt: skip
    assert rec["why"]["explanation"] == ["owner confirmed"] and rec["detail"]["signed"]
    a = Announcement("rollback", "detector", "1", "ab" * 32, "analyst:carol", 1, "FP spike")
    rec = record_for("models", encode_announcement(a, key))
    assert rec is not None
    assert (rec["kind"], rec["actor"]) == ("model.rolled_back", "analyst:carol")


def test_the_newest_covering_checkpoint_proves_a_record() -> None:
    entries, checkpoints = build(n=20, every=8)  # trees of 8, 16 and 20 records
    proof = newest_proof(entries, checkpoints, 9, ORIGIN, KEY.public_key())
    assert proof is not None and proof["checkpoint"] == checkpoints[-1]
    assert proof == {**prove(entries, 9, 20), "checkpoint": checkpoints[-1]}
    assert newest_proof(entries, checkpoints[:1], 9, ORIGIN, KEY.public_key()) is None
    with pytest.raises(CheckpointError):  # checkpoints are verified, not trusted
        newest_proof(entries, checkpoints, 9, ORIGIN, Ed25519PrivateKey.generate().public_key())


def test_an_identitys_history_reads_what_why_and_refs() -> None:
    entries, _ = build(n=8)
    lines = history(entries, "agt-1")  # records 1 and 5
    assert lines[0].startswith("#1      1970-01-01 00:00:01  alert.created")
    assert lines[0].endswith(" by custos-worker")
    assert lines[1:4] == ["        why: reason 1", "        agent said: the agent said so",
                          "        refs: {'events': ['e-1'], 'finding': 'f-1'}"]  # fmt: skip
    assert sum(line.startswith("#") for line in lines) == 2
    assert history(entries, "nobody") == []
