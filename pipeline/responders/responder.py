"""The responder: verify a quarantine command, acknowledge it, revoke, report per credential.

:class:`Responder` holds the logic with its I/O injected (adapters' HTTP sender, clock, sleep,
where responses go), so it is tested without Kafka; :func:`run_responder` is the Kafka loop of
``custos respond`` (a consumer group on ``custos.quarantine``).

For each command:

1. verify the signature, freshness and approval (:func:`pipeline.quarantine.commands.verify`);
   a refused command gets a 401 (unsigned, forged), 403 (a contain still waiting for an
   analyst's approval) or 400 (expired, malformed) response - the audit trail;
2. a ``request_id`` already answered gets its stored final response again (redelivery); the same
   ``request_id`` on *different* content is refused as ``replayed``;
3. ``status 102`` at once, then every adapter, with retries and exponential backoff for 5xx and
   timeouts (bounded);
4. the final response: 200 (all adapters done; ``not_found`` counts as done), 500 (an adapter
   refused for good) or 503 (still failing after the retries), with per-adapter, per-credential
   results; stored (SQLite) before it is published, so a restarted responder answers duplicates
   the same way. A command that does not end in 200 is dead-lettered and raises a Critical alert.

A ``contain`` carries a duration: when it is over, :meth:`Responder.expire` (swept every few
seconds by the loop) runs the release itself, the cancel the TTL stands for, unless an analyst
released it first.

Crash safety: the Kafka offset is committed only after the final response is published. A
responder killed between revoking and acknowledging re-reads the command and runs the adapters
again; they are idempotent (blocking a blocked identity, revoking a revoked credential succeed
and change nothing), so the end state converges and the final response is published once more.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
from joserfc.jwk import KeySet

from pipeline.alerts.findings import build_failure_finding
from pipeline.control.signing import with_analysts
from pipeline.quarantine.commands import CommandRejected, verify
from pipeline.responders.base import Adapter, Command, HttpRequest, HttpResponse, Outcome, send_http
from pipeline.storage import open_durable

__all__ = ["Responder", "ResponseStore", "failure_finding", "response", "run_responder"]

log = logging.getLogger("custos.responder")

Emit = Callable[[dict[str, Any]], None]


def response(
    request_id: str,
    status: int,
    status_text: str,
    *,
    sender: str,
    to: str,
    now_ms: int,
    results: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An OpenC2 response message echoing ``request_id``.

    ``results`` is left out when empty: the OASIS schema (``oc2ls-v1.0.json``) requires a
    non-empty map where the key is present, so a bare "102 received" carries none.
    """
    body: dict[str, Any] = {"status": status, "status_text": status_text}
    if results:
        body["results"] = results
    return {
        "headers": {"request_id": request_id, "created": now_ms, "from": sender, "to": [to]},
        "body": {"openc2": {"response": body}},
    }


def status_of(message: dict[str, Any]) -> int:
    return int(message["body"]["openc2"]["response"]["status"])


_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (request_id TEXT PRIMARY KEY, digest TEXT NOT NULL,
    command_id TEXT NOT NULL, status INTEGER NOT NULL, final BLOB NOT NULL, at REAL NOT NULL);
-- Quarantines in force, so their TTL can end them (a cancel the responder runs itself).
CREATE TABLE IF NOT EXISTS active (command_id TEXT PRIMARY KEY, identity TEXT NOT NULL,
    until_ms INTEGER, released INTEGER NOT NULL DEFAULT 0);
"""


class ResponseStore:
    """Final responses by request id (and a digest of the command they answered)."""

    def __init__(self, path: Path | str) -> None:
        self._db = open_durable(path, _SCHEMA)
        self._lock = threading.Lock()

    def activate(self, command_id: str, identity: str, until_ms: int | None) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO active VALUES (?, ?, ?, 0) ON CONFLICT (command_id) DO UPDATE SET"
                " until_ms = excluded.until_ms, released = 0",
                (command_id, identity, until_ms),
            )

    def release(self, command_id: str) -> None:
        with self._lock:
            self._db.execute("UPDATE active SET released = 1 WHERE command_id = ?", (command_id,))

    def expired(self, now_ms: int) -> list[tuple[str, str]]:
        """(command id, identity) of quarantines past their end and not yet released."""
        with self._lock:
            rows = self._db.execute(
                "SELECT command_id, identity FROM active WHERE released = 0 AND until_ms IS NOT"
                " NULL AND until_ms <= ?",
                (now_ms,),
            ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def get(self, request_id: str) -> tuple[str, dict[str, Any]] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT digest, final FROM responses WHERE request_id = ?", (request_id,)
            ).fetchone()
        return (row[0], msgspec.json.decode(row[1])) if row else None

    def put(self, request_id: str, digest: str, command_id: str, final: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?)",
                (request_id, digest, command_id, status_of(final), msgspec.json.encode(final),
                 time.time()),
            )  # fmt: skip

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Responder:
    def __init__(
        self,
        adapters: Sequence[Adapter],
        keys: KeySet,
        store: ResponseStore,
        *,
        sender: str = "custos-responder",
        send: Callable[[HttpRequest], HttpResponse] = send_http,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        attempts: int = 4,
        backoff_s: float = 0.2,
        max_age_ms: int = 300_000,
        analysts: Callable[[], KeySet | None] = lambda: None,
    ) -> None:
        if not adapters:
            raise ValueError("a responder needs at least one adapter")
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        self.adapters = list(adapters)
        self.keys = keys
        self.store = store
        self.sender = sender
        self.send = send
        # Adapters may bring their own thin sender (Vault: hvac); an injected one overrides all.
        self._send_overridden = send is not send_http
        self.clock = clock
        self.sleep = sleep
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.max_age_ms = max_age_ms
        # Analysts' keys, looked up per command (a new analyst needs no responder restart):
        # only their signature makes an "approved" contain executable.
        self.analysts = analysts

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def handle(self, value: bytes, emit: Emit) -> tuple[dict[str, Any], Command | None]:
        """Process one command; responses go to ``emit`` (102 first, then the final one)."""
        now = self._now_ms()
        digest = hashlib.sha256(value).hexdigest()
        try:
            analysts = self.analysts()
            message = verify(value, with_analysts(self.keys, analysts), now_ms=now,
                             max_age_ms=self.max_age_ms,
                             approvers=analysts)  # fmt: skip
            cmd = Command.from_message(message)
        except CommandRejected as exc:
            return self._refuse(value, exc.reason, exc.detail, emit), None
        except (KeyError, TypeError, ValueError) as exc:
            return self._refuse(value, "malformed", repr(exc), emit), None
        to = str(message["headers"].get("from", "custos"))
        seen = self.store.get(cmd.request_id)
        if seen is not None:
            if seen[0] != digest:
                return self._refuse(value, "replayed", f"request_id {cmd.request_id} reused"
                                    " for another command", emit), cmd  # fmt: skip
            emit(seen[1])  # a redelivery: the same final answer, no second side effect
            return seen[1], cmd
        emit(response(cmd.request_id, 102, "received", sender=self.sender, to=to, now_ms=now))

        outcomes: dict[str, Outcome] = {a.name: self.run_adapter(a, cmd) for a in self.adapters}
        statuses = {o.status for o in outcomes.values()}
        if statuses == {"ok"}:
            code, text = 200, ("dry run: nothing changed" if cmd.dry_run else
                               f"{cmd.action} done for {cmd.identity}")  # fmt: skip
        elif "failed" in statuses:
            code, text = 500, "an adapter refused: " + _failures(outcomes)
        else:
            code, text = 503, "still failing after retries: " + _failures(outcomes)
        final = response(
            cmd.request_id, code, text, sender=self.sender, to=to, now_ms=self._now_ms(),
            results={"x-custos": {
                "action": cmd.action, "command_id": cmd.command_id, "identity": cmd.identity,
                "finding_uid": cmd.finding_uid, "dry_run": cmd.dry_run,
                "adapters": {name: o.to_dict() for name, o in outcomes.items()},
            }},
        )  # fmt: skip
        self.store.put(cmd.request_id, digest, cmd.command_id, final)
        if code == 200 and not cmd.dry_run:
            if cmd.action == "contain":
                self.store.activate(cmd.command_id, cmd.identity, cmd.until_ms)
            else:
                self.store.release(cmd.command_id)
        emit(final)
        return final, cmd

    def expire(self, emit: Emit) -> list[dict[str, Any]]:
        """End quarantines whose duration is over: the cancel their TTL stands for.

        Runs the adapters' release for each (the broker lifts the block tagged with that command,
        and only that one), then publishes the answer like for an analyst's cancel. A failed
        release stays due and is tried again on the next call.
        """
        out = []
        now = self._now_ms()
        for command_id, identity in self.store.expired(now):
            cmd = Command(
                action="cancel", request_id=f"ttl-{command_id}", command_id=command_id,
                identity=identity, finding_uid=None, reason="quarantine duration over (TTL)",
                credentials=(), start_ms=now, until_ms=None, dry_run=False,
            )  # fmt: skip
            outcomes = {a.name: self.run_adapter(a, cmd) for a in self.adapters}
            done = all(o.status == "ok" for o in outcomes.values())
            final = response(
                cmd.request_id, 200 if done else 503,
                f"quarantine of {identity} expired: released" if done
                else "expiry release failed: " + _failures(outcomes),
                sender=self.sender, to="custos", now_ms=now,
                results={"x-custos": {
                    "action": "cancel", "command_id": command_id, "identity": identity,
                    "expired": True,
                    "adapters": {name: o.to_dict() for name, o in outcomes.items()},
                }},
            )  # fmt: skip
            if done:
                self.store.release(command_id)
            emit(final)
            out.append(final)
        return out

    def _refuse(self, value: bytes, reason: str, detail: str, emit: Emit) -> dict[str, Any]:
        code = {"unsigned": 401, "bad_signature": 401, "unapproved": 403}.get(reason, 400)
        log.warning("refused command (%s): %s", reason, detail)
        final = response(
            _peek_request_id(value), code, f"rejected: {reason}: {detail}"[:500],
            sender=self.sender, to="custos", now_ms=self._now_ms(),
            results={"x-custos": {"rejected": reason,
                                  "sha256": hashlib.sha256(value).hexdigest()}},
        )  # fmt: skip
        emit(final)
        return final

    def run_adapter(self, adapter: Adapter, cmd: Command) -> Outcome:
        """One adapter on one command: its requests, each retried with backoff."""
        outcome = Outcome()
        send = self.send if self._send_overridden else getattr(adapter, "send", self.send)
        for req in adapter.build(cmd):
            part = Outcome("retry", detail="not attempted")
            for attempt in range(self.attempts):
                part = adapter.interpret(cmd, req, send(req))
                if part.status != "retry":
                    break
                if attempt + 1 < self.attempts:
                    self.sleep(self.backoff_s * 2**attempt)
            outcome = outcome.worse(part)
        return outcome


def _failures(outcomes: dict[str, Outcome]) -> str:
    return "; ".join(
        f"{n}: {o.detail or o.status}" for n, o in outcomes.items() if o.status != "ok"
    )


def _peek_request_id(value: bytes) -> str:
    """The request id of a command we refused (unverified: for correlation only)."""
    import base64

    try:
        text = value.decode("ascii").strip()
        payload = text.split(".")[1] if not text.startswith("{") else None
        raw = base64.urlsafe_b64decode(payload + "==") if payload is not None else value
        rid = msgspec.json.decode(raw)["headers"]["request_id"]
        return str(rid)[:100]
    except Exception:
        return "unknown"


def failure_finding(
    cmd: Command, final: dict[str, Any], now_ms: int, version: str
) -> dict[str, Any]:
    """A Critical OCSF Detection Finding: a quarantine did not complete (never silently)."""
    status = status_of(final)
    text = final["body"]["openc2"]["response"]["status_text"]
    return build_failure_finding(
        # One finding per failed request: a redelivered command's failure is the same one.
        finding_uid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"custos-failed/{cmd.request_id}")),
        identity_uid=cmd.identity,
        title=f"Quarantine of {cmd.identity} failed",
        message=f"quarantine of {cmd.identity} failed ({status}): {text}",
        desc=text,
        types=["Quarantine failure"],
        related_events=[cmd.finding_uid] if cmd.finding_uid else [],
        time_ms=now_ms,
        event_uid=str(uuid.uuid4()),
        product_version=version,
        unmapped={"command_id": cmd.command_id, "request_id": cmd.request_id,
                  "response": final["body"]["openc2"]["response"]},
    )  # fmt: skip


def run_responder(settings: Any, *, stop_after: int | None = None) -> None:
    """``custos respond``: the consumer-group loop on the quarantine topic."""
    from confluent_kafka import KafkaError

    from pipeline import __version__
    from pipeline.control.reports import config_report
    from pipeline.control.reports import encode as encode_report
    from pipeline.control.signing import analyst_keys, trusted_keys
    from pipeline.events.deadletter import dead_letter_headers
    from pipeline.kafka.clients import make_consumer, make_producer
    from pipeline.responders.setup import adapters_from_settings

    store = ResponseStore(settings.responder_state_path / "responses.sqlite3")
    responder = Responder(
        adapters_from_settings(settings), trusted_keys(settings), store,
        sender=settings.responder_id, attempts=settings.responder_attempts,
        backoff_s=settings.responder_backoff_s, analysts=lambda: analyst_keys(settings),
    )  # fmt: skip
    producer = make_producer(settings)
    # The configuration this responder runs with (secrets masked), for the audit log.
    me = f"responder:{settings.responder_id}"
    producer.produce(settings.reports_topic, value=encode_report(config_report(settings, me)))
    # This consumer has always left librdkafka's log on stderr (the producer's goes to logging).
    consumer = make_consumer(settings, settings.responder_group, bulk_fetch=False, logger=None)
    consumer.subscribe([settings.quarantine_topic])
    handled = 0
    next_sweep = 0.0
    try:
        while stop_after is None or handled < stop_after:
            if time.monotonic() >= next_sweep:  # quarantines whose duration is over
                for final in responder.expire(
                    lambda r: producer.produce(settings.acks_topic, value=msgspec.json.encode(r))
                ):
                    log.info("%s", final["body"]["openc2"]["response"]["status_text"])
                producer.flush(30)
                next_sweep = time.monotonic() + 5.0
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.error("consumer error: %s", err)
                continue
            key = msg.key() or b""

            def emit(r: dict[str, Any], key: bytes = key) -> None:
                producer.produce(settings.acks_topic, key=key, value=msgspec.json.encode(r))
                producer.poll(0)

            final, cmd = responder.handle(msg.value() or b"", emit)
            code = status_of(final)
            reason: str | None = None
            if code in (400, 401, 403):  # refused: keep the original bytes beside the response
                reason = final["body"]["openc2"]["response"]["results"]["x-custos"]["rejected"]
            elif code >= 500 and cmd is not None:
                reason = "quarantine_failed"
            if reason is not None:
                # A consumed record always has both (None is for one not produced yet).
                headers = dead_letter_headers(reason, partition=msg.partition() or 0,
                                              offset=msg.offset() or 0)  # fmt: skip
                producer.produce(settings.quarantine_deadletter_topic, key=key, value=msg.value(),
                                 headers=headers)  # fmt: skip
            if code >= 500 and cmd is not None:
                finding = failure_finding(cmd, final, int(time.time() * 1000), __version__)
                producer.produce(settings.alerts_topic, key=key, value=msgspec.json.encode(finding))
                log.critical("quarantine %s of %s failed: dead-lettered, alert raised",
                             cmd.command_id, cmd.identity)  # fmt: skip
            if producer.flush(30) != 0:
                raise RuntimeError("acks not delivered within 30 s: not committing")
            consumer.commit(message=msg, asynchronous=False)
            handled += 1
    finally:
        consumer.close()
        store.close()
