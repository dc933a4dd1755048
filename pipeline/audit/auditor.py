"""``custos audit``: the single writer of the audit log, and its verifier on Kafka.

The auditor consumes every decision topic - findings (``custos.alerts``), quarantine commands
(``custos.quarantine``, ``custos.approvals``), responder answers (``custos.quarantine.acks``),
analyst feedback (``custos.feedback``), model promotions (``custos.models``), agent-model
registry changes (``custos.agent-models``), services' own reports (``custos.reports``:
configuration at start, model loaded / refused, feedback applied) - and appends one record
per decision (and, when it starts, one with its own configuration) to
``custos.audit`` (one partition: one order), built by :class:`pipeline.audit.log.AuditLog`.
Every ``audit_checkpoint_records`` records or ``audit_checkpoint_s`` seconds it signs a
checkpoint (Ed25519, C2SP format) and stores it apart from the log: the
``custos.audit.checkpoints`` topic and ``<home>/audit/checkpoints/``.

Each record names its source (topic, partition, offset): a restarted auditor re-reads what it had
not committed and skips sources already in the log, so nothing is recorded twice or lost.

:func:`record_for` is the pure part: one input message → the record's fields (what happened,
to whom, by whom, why, references).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pipeline.audit.checkpoint import verify_checkpoint
from pipeline.audit.log import AuditLog, Report, prove, verify
from pipeline.control.keys import load_or_create, load_public, public_path

__all__ = [
    "audit_keys", "history", "identity_history", "load_public", "newest_proof", "prove_record",
    "public_key_path", "read_log", "record_for", "run_auditor", "verify_log",
]  # fmt: skip

log = logging.getLogger("custos.audit")

_ACTIONS = {1: "created", 2: "updated", 3: "closed"}


def audit_keys(home: Path) -> tuple[Ed25519PrivateKey, Ed25519PublicKey]:
    """The checkpoint signing key (created on first run, mode 0600) and its public half."""
    key = load_or_create(home / "keys" / "audit-checkpoint.pem")
    return key, key.public_key()


def public_key_path(home: Path) -> Path:
    """Where :func:`audit_keys` keeps the public half (what verifiers trust by default)."""
    return public_path(home / "keys" / "audit-checkpoint.pem")


def read_log(
    settings: Any, topic: str | None = None, checkpoints_dir: str | None = None
) -> tuple[list[bytes], list[str]]:
    """The log's records (``topic`` or the audit topic) and its checkpoints (topic or folder)."""
    from pipeline.kafka.clients import read_all

    records = read_all(settings, topic or settings.audit_topic, timeout_s=10)
    entries = [m.value() or b"" for m in records]
    if checkpoints_dir:
        texts = [p.read_text() for p in sorted(Path(checkpoints_dir).glob("*.txt"))]
    else:
        found = read_all(settings, settings.audit_checkpoints_topic, timeout_s=10)
        texts = [(m.value() or b"").decode("utf-8", "replace") for m in found]
    return entries, texts


def verify_log(
    settings: Any,
    topic: str | None = None,
    checkpoints_dir: str | None = None,
    public_key: Path | None = None,
) -> Report:
    """``custos audit verify``: recompute the log's hashes and check its checkpoints.

    ``public_key``: the checkpoint key's PEM; default ours (:func:`public_key_path`).
    """
    entries, texts = read_log(settings, topic, checkpoints_dir)
    pub = load_public(public_key or public_key_path(settings.home_path))
    return verify(entries, texts, settings.audit_origin, pub)


def newest_proof(
    entries: list[bytes], checkpoints: list[str], seq: int, origin: str, pub: Ed25519PublicKey
) -> dict[str, Any] | None:
    """An inclusion proof of record ``seq`` in the largest checkpointed tree, with that
    checkpoint's text; None while no checkpoint covers it. Checkpoints are verified first."""
    sizes = [verify_checkpoint(t, origin, pub).size for t in checkpoints]
    size = max((s for s in sizes if s > seq), default=None)
    if size is None:
        return None
    out = prove(entries, seq, size)
    out["checkpoint"] = next(t for t in checkpoints if f"\n{size}\n" in t)
    return out


def prove_record(settings: Any, seq: int, topic: str | None = None) -> dict[str, Any] | None:
    """``custos audit prove``: :func:`newest_proof` of record ``seq`` of the log on Kafka."""
    entries, texts = read_log(settings, topic, None)
    pub = load_public(public_key_path(settings.home_path))
    return newest_proof(entries, texts, seq, settings.audit_origin, pub)


def history(entries: list[bytes], identity: str) -> list[str]:
    """The records about ``identity``, readably: when, what, by whom, why, what the agent
    said and references (long texts cut at 300 characters); [] when there are none."""
    lines: list[str] = []
    for e in entries:
        r = msgspec.json.decode(e)
        if r.get("subject") != identity:
            continue
        when = dt.datetime.fromtimestamp(r["time"] / 1000, tz=dt.UTC).strftime(
            "%Y-%m-%d %H:%M:%S"
        )
        lines.append(f"#{r['seq']:<6} {when}  {r['kind']:<28} by {r.get('actor')}")
        why = "; ".join(str(x) for x in r.get("why", {}).get("explanation", []) if x)
        if why:
            lines.append(f"        why: {why[:300]}")
        said = r.get("why", {}).get("rationale") or []
        if said:
            lines.append(f"        agent said: {' | '.join(map(str, said))[:300]}")
        refs = {k: v for k, v in r.get("refs", {}).items() if v and k != "source"}
        if refs:
            lines.append(f"        refs: {refs}")
    return lines


def identity_history(settings: Any, identity: str, topic: str | None = None) -> list[str]:
    """``custos audit show``: :func:`history` of ``identity`` in the log on Kafka."""
    entries, _ = read_log(settings, topic, None)
    return history(entries, identity)


def _signed_payload(value: bytes) -> tuple[bytes, bool]:
    """The payload of a compact JWS as written (verifying it is the consumers' job, and they
    report what they refuse), or the bytes themselves when unsigned."""
    import base64

    text = value.decode("ascii", "replace").strip()
    if text.startswith("{"):
        return value, False
    return base64.urlsafe_b64decode(text.split(".")[1] + "=="), True


def record_for(topic_kind: str, value: bytes) -> dict[str, Any] | None:
    """The audit fields of one decision message (``None``: nothing to record)."""
    if topic_kind == "alerts":
        f = msgspec.json.decode(value)
        custos = f.get("unmapped", {}).get("custos", {})
        explanation = [r.get("text") for r in custos.get("rules", []) if isinstance(r, dict)]
        explanation += list(custos.get("contributions", []))
        return {
            "kind": f"alert.{_ACTIONS.get(f.get('activity_id'), 'other')}",
            "subject": f["evidences"][0]["actor"]["user"]["uid"],
            "actor": f.get("metadata", {}).get("product", {}).get("name", "custos"),
            "why": {"explanation": explanation, "rationale": custos.get("rationales", []),
                    "decision": custos.get("reason")},
            "refs": {"finding": f.get("finding_info", {}).get("uid"),
                     "events": [e.get("uid") for e in
                                f.get("finding_info", {}).get("related_events", [])]},
            "detail": {"risk_score": f.get("risk_score"), "severity_id": f.get("severity_id"),
                       "status_id": f.get("status_id"), "quarantine": custos.get("quarantine")},
        }  # fmt: skip
    if topic_kind in ("quarantine", "approvals"):
        import base64

        try:  # the command as signed; the verifying is the responders' job (and audited there)
            payload = value.decode().split(".")[1]
            msg = msgspec.json.decode(base64.urlsafe_b64decode(payload + "=="))
            req = msg["body"]["openc2"]["request"]
        except (ValueError, IndexError, KeyError, TypeError, msgspec.DecodeError):
            return {"kind": "quarantine.unreadable", "subject": None, "actor": "unknown",
                    "why": {}, "refs": {}, "detail": {"bytes": len(value)}}  # fmt: skip
        ext = req.get("args", {}).get("x-custos", {})
        if req.get("action") == "cancel":
            kind, subject = "quarantine.released", ext.get("subject", {}).get("id")
            cmd = req.get("target", {}).get("command")
        else:
            approval = ext.get("approval")
            if topic_kind == "approvals":
                kind = "quarantine.pending_approval"
            elif approval == "approved":
                kind = "quarantine.approved"
            else:
                kind = "quarantine.issued"
            subject = req.get("target", {}).get("x-custos:subject", {}).get("id")
            cmd = req.get("command_id")
        return {
            "kind": kind, "subject": subject,
            "actor": ext.get("approved_by") or ext.get("by") or msg["headers"].get("from"),
            "why": {"explanation": [ext.get("reason")]},
            "refs": {"finding": ext.get("finding_uid"), "command": cmd,
                     "request": msg["headers"].get("request_id"),
                     "credentials": ext.get("credentials", [])},
            "detail": {"dry_run": ext.get("dry_run"), "duration_ms": req.get("args", {}).get(
                "duration"), "approval": ext.get("approval")},
        }  # fmt: skip
    if topic_kind == "acks":
        ack = msgspec.json.decode(value)
        resp = ack["body"]["openc2"]["response"]
        ext = resp.get("results", {}).get("x-custos", {})
        status = int(resp["status"])
        kind = {102: "quarantine.received", 200: "quarantine.done", 400: "quarantine.rejected",
                401: "quarantine.rejected"}.get(status, "quarantine.failed")  # fmt: skip
        return {
            "kind": kind, "subject": ext.get("identity"), "actor": ack["headers"].get("from"),
            "why": {"explanation": [resp.get("status_text")]},
            "refs": {"command": ext.get("command_id"), "finding": ext.get("finding_uid"),
                     "request": ack["headers"].get("request_id")},
            "detail": {"status": status, "adapters": ext.get("adapters"),
                       "rejected": ext.get("rejected"), "expired": ext.get("expired")},
        }  # fmt: skip
    if topic_kind == "models":
        body, signed = _signed_payload(value)
        a = msgspec.json.decode(body)
        return {
            "kind": "model.promoted" if a.get("action") == "promote" else "model.rolled_back",
            "subject": a["name"], "actor": a.get("by"),
            "why": {"explanation": [a.get("reason") or f"{a.get('action')} {a.get('version')}"]},
            "refs": {"model": {"name": a["name"], "version": a.get("version"),
                               "manifest_sha256": a.get("manifest_sha256")}},
            "detail": {"action": a.get("action"), "signed": signed},
        }  # fmt: skip
    if topic_kind == "agent_models":
        body, signed = _signed_payload(value)
        u = msgspec.json.decode(body)
        return {
            "kind": f"agent_model.{u.get('action', 'other')}",
            "subject": u.get("name"),
            "actor": u.get("revoked_by") or u.get("approved_by") or u.get("trained_by")
            or "unknown",
            "why": {"explanation": [u.get("reason") or u.get("action")]},
            "refs": {"model": {"name": u.get("name"), "version": u.get("version"),
                               "digest": u.get("digest")}},
            "detail": {"signed": signed,
                       **{k: v for k, v in u.items() if k not in ("name", "version", "digest")}},
        }  # fmt: skip
    if topic_kind == "feedback":
        body, signed = _signed_payload(value)
        fb = msgspec.json.decode(body)
        return {
            "kind": f"feedback.{fb['action']}", "subject": fb["identity"], "actor": fb["by"],
            "why": {"explanation": [fb.get("reason")]},
            "refs": {"finding": fb.get("finding_uid"), "feedback": fb.get("uid")},
            "detail": {"signed": signed, **{k: fb[k] for k in ("learn_as_normal", "feature",
                                                               "until_ms", "at_ms") if k in fb}},
        }  # fmt: skip
    if topic_kind == "reports":
        r = msgspec.json.decode(value)
        return {
            "kind": r["kind"], "subject": r.get("subject"), "actor": r["service"],
            "why": {"explanation": [r.get("detail")] if r.get("detail") else [],
                    "reason": r.get("reason")},
            "refs": {"model": r.get("model"), "previous": r.get("previous")},
            "detail": {k: r[k] for k in ("requested", "settings") if r.get(k) is not None},
        }  # fmt: skip
    return None


def run_auditor(settings: Any, *, stop_after_s: float | None = None) -> None:
    """Consume the decision topics, append records, sign checkpoints. Until interrupted."""
    from confluent_kafka import KafkaError

    from pipeline.kafka.clients import make_consumer, make_producer, read_all

    key, _ = audit_keys(settings.home_path)
    existing = [m.value() or b"" for m in read_all(settings, settings.audit_topic, timeout_s=10)]
    audit = AuditLog(settings.audit_origin)
    audit.resume(existing)
    seen: set[str] = set()
    for e in existing[-100_000:]:  # sources of recent records: a restart must not repeat them
        src = msgspec.json.decode(e).get("refs", {}).get("source")
        if src:
            seen.add(src)
    kinds = {settings.alerts_topic: "alerts", settings.quarantine_topic: "quarantine",
             settings.approvals_topic: "approvals", settings.acks_topic: "acks",
             settings.models_topic: "models", settings.agent_models_topic: "agent_models",
             settings.reports_topic: "reports", settings.feedback_topic: "feedback"}  # fmt: skip
    producer = make_producer(settings)
    # This consumer has always left librdkafka's log on stderr (the producer's goes to logging).
    consumer = make_consumer(settings, settings.auditor_group, bulk_fetch=False, logger=None)
    consumer.subscribe(list(kinds))
    cp_dir = settings.home_path / "audit" / "checkpoints"
    cp_dir.mkdir(parents=True, exist_ok=True)
    signed_size = -1
    last_cp = time.monotonic()
    started = time.monotonic()
    log.info("audit log %s: resuming after %d records", settings.audit_topic, audit.size)
    # The configuration this auditor runs with (secrets masked), as the first record of its run.
    config = {name: value for name, _, value, _ in settings.describe()}
    producer.produce(settings.audit_topic, value=audit.append(
        kind="config.start", subject=None, actor=settings.auditor_group,
        time_ms=int(time.time() * 1000), why={"explanation": ["auditor started"]},
        detail={"settings": config},
    ))  # fmt: skip

    def checkpoint() -> None:
        nonlocal signed_size, last_cp
        last_cp = time.monotonic()
        if audit.size == signed_size:
            return
        if producer.flush(30):  # the records first: a checkpoint must not outrun its records
            raise RuntimeError("audit records not delivered: no checkpoint over them")
        text = audit.checkpoint(key)
        producer.produce(settings.audit_checkpoints_topic, key=str(audit.size).encode(),
                         value=text.encode())  # fmt: skip
        (cp_dir / f"{audit.size:012d}.txt").write_text(text)
        signed_size = audit.size

    import signal
    import threading

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)  # leave through finally: the last checkpoint covers every record

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
    try:
        while stop_after_s is None or time.monotonic() - started < stop_after_s:
            msgs = consumer.consume(num_messages=500, timeout=0.5)
            wrote = False
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.error("consumer error: %s", err)
                    continue
                source = f"{m.topic()}/{m.partition()}/{m.offset()}"
                if source in seen:
                    continue
                try:
                    fields = record_for(kinds[m.topic()], m.value() or b"")
                except (msgspec.DecodeError, KeyError, IndexError, TypeError, ValueError) as exc:
                    fields = {"kind": "input.unreadable", "subject": None, "actor": "unknown",
                              "why": {"explanation": [repr(exc)[:200]]}, "refs": {},
                              "detail": {}}  # fmt: skip
                if fields is None:
                    continue
                fields["refs"]["source"] = source
                entry = audit.append(time_ms=m.timestamp()[1], **fields)
                producer.produce(settings.audit_topic, key=(fields["subject"] or "").encode(),
                                 value=entry)  # fmt: skip
                seen.add(source)
                wrote = True
            # One checkpoint per consumed batch at most: each one waits for the records it
            # covers to be acknowledged, and a flush per 100 records would cap the auditor
            # at a few hundred records/s under an alert storm.
            due = audit.size - max(signed_size, 0) >= settings.audit_checkpoint_records
            if due or time.monotonic() - last_cp >= settings.audit_checkpoint_s:
                checkpoint()
            if wrote or msgs:
                if producer.flush(30):
                    raise RuntimeError("audit records not delivered: not committing the inputs")
                if msgs:
                    consumer.commit(asynchronous=False)
    finally:
        checkpoint()
        producer.flush(30)
        consumer.close()
