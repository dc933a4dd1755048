"""Responders: adapters' exact requests, and the responder against a real credential broker.

The Custos broker adapter is exercised end to end: the real broker HTTP API runs on 127.0.0.1
in a thread and the adapter's requests go through the real sender. The webhook adapter is
checked by a local HTTP server that verifies the signature.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec
import pytest

from pipeline.control.signing import SigningKey
from pipeline.credentials.broker import CredentialBroker, web_app
from pipeline.credentials.registry import Registry
from pipeline.credentials.tokens import CredentialRejected
from pipeline.ops.localhost import free_port
from pipeline.quarantine.commands import cancel, command_id_for, contain, sign
from pipeline.responders.base import Command, HttpRequest, HttpResponse, send_http
from pipeline.responders.custos_broker import CustosBrokerAdapter
from pipeline.responders.responder import Responder, ResponseStore, status_of
from pipeline.responders.webhook import WebhookAdapter, verify_signature

TOKEN = "broker-api-token"


@pytest.fixture
def live_broker() -> Iterator[tuple[CredentialBroker, str]]:
    """The real broker HTTP API on 127.0.0.1, served from a thread."""
    from aiohttp import web

    broker = CredentialBroker(Registry(":memory:"), SigningKey.generate("b1"), issuer="custos")
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(web_app(broker, TOKEN))
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield broker, f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


class Recorder:
    def __init__(self) -> None:
        self.out: list[dict[str, Any]] = []

    def __call__(self, r: dict[str, Any]) -> None:
        self.out.append(r)

    def statuses(self) -> list[int]:
        return [status_of(r) for r in self.out]


def _signed(key: SigningKey, identity: str = "agt-1", **kw: Any) -> bytes:
    args: dict[str, Any] = {"finding_uid": "f-1", "reason": "credential misuse",
                            "duration_ms": 3_600_000, "now_ms": int(time.time() * 1000),
                            "sender": "custos-worker"}  # fmt: skip
    args.update(kw)
    return sign(contain(identity, **args), key)


def _responder(url: str, key: SigningKey, **kw: Any) -> Responder:
    args: dict[str, Any] = {"sleep": lambda s: None}
    args.update(kw)
    return Responder([CustosBrokerAdapter(url, TOKEN)], key.public_keys(),
                     ResponseStore(":memory:"), **args)  # fmt: skip


# --- adapters: exact requests -------------------------------------------------------------------


def test_custos_broker_adapter_requests() -> None:
    a = CustosBrokerAdapter("http://127.0.0.1:8787/", "tok")
    base = Command("contain", "r-1", "c-1", "agt/1", "f-1", "misuse", ("cred-1",), 1_000,
                   3_601_000, False)  # fmt: skip
    [req] = a.build(base)
    assert (req.method, req.url) == ("POST", "http://127.0.0.1:8787/v1/identities/agt%2F1/block")
    body = json.loads(req.body)
    assert body["command_id"] == "c-1" and body["until"] == 3601.0 and body["revoke"] is True
    assert "f-1" in body["reason"] and req.headers["Authorization"] == "Bearer tok"
    [dry] = a.build(Command(**{**_fields(base), "dry_run": True}))
    assert (dry.method, dry.url) == ("GET", "http://127.0.0.1:8787/v1/identities/agt%2F1")
    [rel] = a.build(Command(**{**_fields(base), "action": "cancel"}))
    assert (rel.method, rel.url) == (
        "DELETE", "http://127.0.0.1:8787/v1/identities/agt%2F1/block?command_id=c-1",
    )  # fmt: skip
    # Interpretation: named credentials the broker no longer holds live are not_found (success).
    ok = a.interpret(base, req, HttpResponse(200, b'{"revoked": [], "newly_blocked": false}'))
    assert ok.status == "ok" and ok.not_found == ["cred-1"]
    assert a.interpret(base, req, HttpResponse(503)).status == "retry"
    assert a.interpret(base, req, HttpResponse(0, error="refused")).status == "retry"
    assert a.interpret(base, req, HttpResponse(401)).status == "failed"


def _fields(c: Command) -> dict[str, Any]:
    return {f: getattr(c, f) for f in Command.__slots__}  # type: ignore[attr-defined]


def test_webhook_adapter_signs_what_a_receiver_verifies() -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            ok = verify_signature(b"s3cret", self.headers["X-Custos-Timestamp"], body,
                                  self.headers["X-Custos-Signature"])  # fmt: skip
            self.send_response(202 if ok else 401)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        cmd = Command("contain", "r-9", "c-9", "agt-1", "f-1", "misuse", ("cred-1",), 0, None,
                      False)  # fmt: skip
        good, forged = WebhookAdapter(url, b"s3cret"), WebhookAdapter(url, b"guess")
        [req] = good.build(cmd)
        assert good.interpret(cmd, req, send_http(req)).status == "ok"
        [bad] = forged.build(cmd)
        assert forged.interpret(cmd, bad, send_http(bad)).status == "failed"  # 401
    finally:
        server.shutdown()
    headers, body = received[0]
    assert headers["Idempotency-Key"] == "r-9"
    assert json.loads(body)["identity"] == "agt-1" and json.loads(body)["credentials"] == ["cred-1"]


# --- the responder, against the real broker ----------------------------------------------------


def test_contain_revokes_every_live_credential_and_the_next_use_is_refused(
    live_broker: tuple[CredentialBroker, str],
) -> None:
    broker, url = live_broker
    a = broker.issue("agt-1", "task-1", 1, ("crm.read",), 1)
    b = broker.issue("agt-1", "task-1", 2, ("crm.read",), 1)
    other = broker.issue("agt-2", "task-2", 1, ("crm.read",), 1)
    key = SigningKey.generate("w1")
    data = _signed(key, credentials=(a.claims.jti, "cred-gone"))
    acks = Recorder()
    final, cmd = _responder(url, key).handle(data, acks)
    assert acks.statuses() == [102, 200] and cmd is not None
    result = final["body"]["openc2"]["response"]["results"]["x-custos"]["adapters"]
    got = result["custos-broker"]
    assert sorted(got["revoked"]) == sorted([a.claims.jti, b.claims.jti])
    assert got["not_found"] == ["cred-gone"] and got["failed"] == []
    for cred in (a, b):
        with pytest.raises(CredentialRejected):
            broker.check(cred.credential, agent="agt-1", operation="crm.read")
    assert broker.registry.blocked("agt-1", time.time()) is not None
    assert broker.check(other.credential, agent="agt-2", operation="crm.read")  # untouched


def test_duplicates_get_the_stored_answer_and_forgeries_are_refused(
    live_broker: tuple[CredentialBroker, str],
) -> None:
    broker, url = live_broker
    key, intruder = SigningKey.generate("w1"), SigningKey.generate("w1")
    responder = _responder(url, key)
    data = _signed(key)
    first, again = Recorder(), Recorder()
    responder.handle(data, first)
    broker.unblock("agt-1")  # if the duplicate acted again, the block would come back
    responder.handle(data, again)
    assert again.out == [first.out[-1]]  # no second 102, the same final answer
    assert broker.registry.blocked("agt-1", time.time()) is None

    def refused(value: bytes) -> tuple[int, str]:
        rec = Recorder()
        final, _ = responder.handle(value, rec)
        assert rec.out == [final]
        return status_of(final), final["body"]["openc2"]["response"]["results"]["x-custos"][
            "rejected"
        ]

    plain = msgspec.json.encode(contain("agt-1", finding_uid="f", reason="r", duration_ms=1,
                                        now_ms=int(time.time() * 1000), sender="x"))  # fmt: skip
    assert refused(plain) == (401, "unsigned")
    assert refused(_signed(intruder, identity="usr-ceo")) == (401, "bad_signature")
    stale = _signed(key, now_ms=int(time.time() * 1000) - 7_200_000)  # a 1 h quarantine, 2 h ago
    assert refused(stale) == (400, "expired")
    # The same request id on different content: a replay, refused.
    msg = contain("agt-1", finding_uid="f-2", reason="other", duration_ms=1,
                  now_ms=int(time.time() * 1000), sender="x")  # fmt: skip
    msg["headers"]["request_id"] = first.out[-1]["headers"]["request_id"]
    assert refused(sign(msg, key)) == (400, "replayed")
    assert broker.registry.blocked("usr-ceo", time.time()) is None


def test_contain_waiting_for_an_analyst_is_never_executed(
    live_broker: tuple[CredentialBroker, str],
) -> None:
    """Issue 12.4: the worker's ``approval: required`` form, copied onto the quarantine topic."""
    from pipeline.quarantine.decisions import approve

    broker, url = live_broker
    live = broker.issue("agt-1", "task-1", 1, ("crm.read",), 1)
    key = SigningKey.generate("w1")
    responder = _responder(url, key)
    now = int(time.time() * 1000)
    pending = contain("agt-1", finding_uid="f-9", reason="r", duration_ms=3_600_000, now_ms=now,
                      sender="custos-worker", approval="required")  # fmt: skip
    no_approver = approve(pending, by="analyst:alice", now_ms=now)
    no_approver["body"]["openc2"]["request"]["args"]["x-custos"]["approved_by"] = " "
    odd = approve(pending, by="analyst:alice", now_ms=now)
    odd["body"]["openc2"]["request"]["args"]["x-custos"]["approval"] = "Automatic"
    for message in (pending, no_approver, odd):
        rec = Recorder()
        final, cmd = responder.handle(sign(message, key), rec)
        results = final["body"]["openc2"]["response"]["results"]["x-custos"]
        assert (status_of(final), results["rejected"], cmd) == (403, "unapproved", None)
        assert rec.out == [final]  # no 102: nothing was started
    assert broker.registry.blocked("agt-1", time.time()) is None
    assert broker.check(live.credential, agent="agt-1", operation="crm.read")
    approved = approve(pending, by="analyst:alice", now_ms=now)

    def code(message: dict[str, Any], signer: SigningKey, r: Responder = responder) -> Any:
        final, _ = r.handle(sign(message, signer), Recorder())
        results = final["body"]["openc2"]["response"]["results"].get("x-custos", {})
        return status_of(final), results.get("rejected")

    # "approved" in the worker's own hand is not an approval: an analyst must have signed.
    assert code(approved, key) == (403, "unapproved")
    alice = SigningKey.generate("analyst-alice")
    with_alice = _responder(url, key, analysts=alice.public_keys)
    assert code(approved, key, with_alice) == (403, "unapproved")
    assert broker.registry.blocked("agt-1", time.time()) is None
    # The analyst's approval of the same command is carried out.
    assert code(approved, alice, with_alice) == (200, None)
    assert broker.registry.blocked("agt-1", time.time()) is not None


def test_an_analysts_signed_confirmation_approves_the_workers_command(
    live_broker: tuple[CredentialBroker, str],
) -> None:
    """``custos feedback confirm``: the worker signs the command and carries the proof."""
    from pipeline.control.feedback import Feedback
    from pipeline.control.signing import sign_feedback
    from pipeline.quarantine.decisions import approve

    broker, url = live_broker
    worker, alice = SigningKey.generate("w1"), SigningKey.generate("analyst-alice")
    responder = _responder(url, worker, analysts=alice.public_keys)
    now = int(time.time() * 1000)

    def proof(identity: str, signer: SigningKey, action: str = "confirm") -> str:
        fb = Feedback(uid=f"fb-{identity}-{action}", action=action, identity=identity,  # type: ignore[arg-type]
                      by="analyst:alice", reason="owner never did this", at_ms=now)  # fmt: skip
        return sign_feedback(fb, signer).decode()

    def attempt(identity: str, token: str) -> tuple[int, Any]:
        pending = contain(identity, finding_uid=f"f-{identity}", reason="r", duration_ms=60_000,
                          now_ms=now, sender="custos-worker", approval="required")  # fmt: skip
        message = approve(pending, by="analyst:alice", now_ms=now, proof=token)
        final, _ = responder.handle(sign(message, worker), Recorder())
        return status_of(final), final["body"]["openc2"]["response"]["results"].get(
            "x-custos", {}).get("rejected")  # fmt: skip

    assert attempt("agt-1", proof("agt-1", alice)) == (200, None)
    assert attempt("agt-2", proof("agt-2", worker)) == (403, "unapproved")  # not an analyst's
    assert attempt("agt-3", proof("agt-other", alice)) == (403, "unapproved")  # someone else
    assert attempt("agt-4", proof("agt-4", alice, "release")) == (403, "unapproved")
    assert attempt("agt-5", "not-a-jws") == (403, "unapproved")
    blocked = {a for a in ("agt-1", "agt-2", "agt-3", "agt-4", "agt-5")
               if broker.registry.blocked(a, time.time())}  # fmt: skip
    assert blocked == {"agt-1"}


def test_release_lifts_only_its_own_block(live_broker: tuple[CredentialBroker, str]) -> None:
    broker, url = live_broker
    key = SigningKey.generate("w1")
    responder = _responder(url, key)
    responder.handle(_signed(key, finding_uid="f-new"), Recorder())  # the current quarantine
    now = int(time.time() * 1000)
    stale = cancel("agt-1", command_id=command_id_for("f-old"), reason="old release",
                   now_ms=now, sender="analyst", by="analyst:bob")  # fmt: skip
    rec = Recorder()
    final, _ = responder.handle(sign(stale, key), rec)
    assert status_of(final) == 200 and broker.registry.blocked("agt-1", time.time()) is not None
    release = cancel("agt-1", command_id=command_id_for("f-new"), reason="false positive",
                     now_ms=now, sender="analyst", by="analyst:alice")  # fmt: skip
    final, _ = responder.handle(sign(release, key), Recorder())
    assert status_of(final) == 200 and broker.registry.blocked("agt-1", time.time()) is None
    assert broker.issue("agt-1", "task-3", 1, ("crm.read",), 1)  # issuance works again


def test_dry_run_reports_and_changes_nothing(live_broker: tuple[CredentialBroker, str]) -> None:
    broker, url = live_broker
    live = broker.issue("agt-1", "task-1", 1, ("crm.read",), 1)
    key = SigningKey.generate("w1")
    final, _ = _responder(url, key).handle(_signed(key, dry_run=True), Recorder())
    got = final["body"]["openc2"]["response"]["results"]["x-custos"]["adapters"]
    assert status_of(final) == 200 and got["custos-broker"]["would_revoke"] == [live.claims.jti]
    assert broker.check(live.credential, agent="agt-1", operation="crm.read")


def test_unreachable_back_end_is_retried_with_backoff_then_fails_loudly() -> None:
    key = SigningKey.generate("w1")
    sleeps: list[float] = []
    calls: list[HttpRequest] = []

    def down(req: HttpRequest) -> HttpResponse:
        calls.append(req)
        return HttpResponse(0, error="connection refused")

    responder = _responder("http://127.0.0.1:9", key, send=down, sleep=sleeps.append,
                           attempts=4, backoff_s=0.2)  # fmt: skip
    final, cmd = responder.handle(_signed(key), Recorder())
    assert status_of(final) == 503 and cmd is not None
    assert len(calls) == 4 and sleeps == pytest.approx([0.2, 0.4, 0.8])
    refused = _responder("http://x", key, send=lambda r: HttpResponse(401, b"bad token"))
    final, _ = refused.handle(_signed(key), Recorder())
    assert status_of(final) == 500  # a 4xx is not retried: it will not fix itself


def test_a_responder_killed_before_acking_converges_on_restart(
    live_broker: tuple[CredentialBroker, str],
) -> None:
    broker, url = live_broker
    a = broker.issue("agt-1", "task-1", 1, ("crm.read",), 1)
    key = SigningKey.generate("w1")
    data = _signed(key, credentials=(a.claims.jti,))
    adapters = [CustosBrokerAdapter(url, TOKEN)]

    class Killed(Exception):
        pass

    class DiesWhileStoring(ResponseStore):
        def put(self, *args: Any) -> None:
            raise Killed  # revoked, but neither stored nor acknowledged

    with pytest.raises(Killed):
        Responder(adapters, key.public_keys(), DiesWhileStoring(":memory:")).handle(
            data, Recorder()
        )
    assert broker.registry.status(a.claims.jti).state == "revoked"  # type: ignore[union-attr]
    # The offset was not committed: the restarted responder reads the same command again and
    # runs the adapters again; they are idempotent, so it converges and acknowledges.
    store = ResponseStore(":memory:")
    rec = Recorder()
    final, _ = Responder(adapters, key.public_keys(), store).handle(data, rec)
    assert rec.statuses() == [102, 200]
    got = final["body"]["openc2"]["response"]["results"]["x-custos"]["adapters"]["custos-broker"]
    # Issue 12.7: the first attempt's revocation is reported as this command's, not as
    # "not found" (the answer an auditor reads must say the credential was revoked).
    assert got["revoked"] == [a.claims.jti] and got["not_found"] == []
    assert "earlier attempt" in got["detail"]

    # Killed after storing, before the final ack left: the stored answer is sent again.
    def dies_on_the_final_ack(r: dict[str, Any]) -> None:
        if status_of(r) != 102:
            raise Killed

    data2 = _signed(key, finding_uid="f-2")
    with pytest.raises(Killed):
        Responder(adapters, key.public_keys(), store).handle(data2, dies_on_the_final_ack)
    rec = Recorder()
    Responder(adapters, key.public_keys(), store).handle(data2, rec)
    assert rec.statuses() == [200]


# --- adapters without a real server here: a local HTTP server checks the exact requests ---------


class Recording:
    """A local HTTP server: records every request, answers with ``reply(method, path, headers,
    body) -> (status, body)``."""

    def __init__(self, reply: Any) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                req = (self.command, self.path, dict(self.headers), body)
                outer.requests.append(req)
                status, answer = reply(*req)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_POST = do_PUT = do_GET = do_DELETE = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()


def _cmd(*refs: str, identity: str = "svc-etl") -> Command:
    return Command("contain", "r-7", "c-7", identity, "f-7", "exfiltration", refs, 1_000, None,
                   False)  # fmt: skip


def test_oauth_rfc7009_adapter_against_a_local_endpoint() -> None:
    from pipeline.responders.oauth import OAuthRevocationAdapter

    def endpoint(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        if headers.get("Authorization") != "Basic Y3VzdG9zOnB3":  # custos:pw
            return 401, b'{"error": "invalid_client"}'
        form = urllib.parse.parse_qs(body.decode())
        assert form["token_type_hint"] == ["access_token"]
        return (503, b"") if form["token"] == ["tok-busy"] else (200, b"")  # 200 even if unknown

    server = Recording(endpoint)
    try:
        adapter = OAuthRevocationAdapter(f"{server.url}/revoke", "custos", "pw")
        sleeps: list[float] = []
        responder = Responder(
            [adapter], SigningKey.generate("k").public_keys(), ResponseStore(":memory:"),
            sleep=sleeps.append, attempts=3,
        )  # fmt: skip
        ok = responder.run_adapter(adapter, _cmd("oauth:tok-abcdefgh", "cred-1"))
        assert ok.status == "ok" and ok.revoked == ["oauth:tok-ab…"]  # never the whole token
        assert [json.dumps(r[1]) for r in server.requests] == ['"/revoke"']
        busy = responder.run_adapter(adapter, _cmd("oauth:tok-busy"))
        assert busy.status == "retry" and len(sleeps) == 2  # 3 attempts, then give up
        wrong = OAuthRevocationAdapter(f"{server.url}/revoke", "custos", "nope")
        assert responder.run_adapter(wrong, _cmd("oauth:tok-1")).status == "failed"
    finally:
        server.close()


def test_ssf_transmitter_pushes_signed_caep_sets_a_receiver_accepts() -> None:
    """The receiver is PyJWT, not joserfc: what mainstream SSF receivers run. It refused
    RFC 9864's ``Ed25519`` name ("Algorithm not supported"); CAEP values are checked too."""
    import jwt as pyjwt

    from pipeline.responders.ssf import CAEP, SsfTransmitter

    # CAEP 1.0 §3.3.1, as a receiver knows them (tests/unit/responders/test_caep.py: all rules)
    caep_credential_types = {"password", "pin", "x509", "fido2-platform", "fido2-roaming",
                             "fido-u2f", "verifiable-credential", "phone-voice", "phone-sms",
                             "app"}  # fmt: skip

    key = SigningKey.generate("ssf-1")
    jwks = pyjwt.PyJWKSet.from_dict(key.jwks())  # the JWKS a receiver fetches
    seen_jti: set[str] = set()

    def decode(body: bytes) -> dict[str, Any]:
        kid = pyjwt.get_unverified_header(body.decode())["kid"]
        return pyjwt.decode(body.decode(), jwks[kid].key, algorithms=["EdDSA"],
                            audience="https://idp.example")  # fmt: skip

    def receiver(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        if headers.get("Content-Type") != "application/secevent+jwt":
            return 400, b'{"err": "invalid_request", "description": "content type"}'
        try:
            claims = decode(body)
        except pyjwt.InvalidAudienceError as exc:
            return 400, msgspec.json.encode({"err": "invalid_audience", "description": str(exc)})
        except pyjwt.PyJWTError as exc:
            return 400, msgspec.json.encode({"err": "invalid_key", "description": str(exc)})
        if pyjwt.get_unverified_header(body.decode()).get("typ") != "secevent+jwt" or (
            "sub" in claims or "exp" in claims
        ):
            return 400, b'{"err": "invalid_request", "description": "not a SET"}'
        if len(claims["events"]) != 1:
            return 400, b'{"err": "invalid_request", "description": "one event"}'
        (uri, event), = claims["events"].items()
        if uri == CAEP + "credential-change" and (
            event["credential_type"] not in caep_credential_types
        ):
            return 400, b'{"err": "invalid_request", "description": "credential_type"}'
        if claims["jti"] in seen_jti:
            return 202, b""  # receivers deduplicate by jti
        seen_jti.add(claims["jti"])
        return 202, b""

    server = Recording(receiver)
    try:
        adapter = SsfTransmitter(f"{server.url}/events", key, issuer="https://custos.example",
                                 audience="https://idp.example")  # fmt: skip
        responder = Responder([adapter], SigningKey.generate("k").public_keys(),
                              ResponseStore(":memory:"), sleep=lambda s: None)  # fmt: skip
        out = responder.run_adapter(adapter, _cmd(identity="usr-1"))
        assert out.status == "ok" and out.revoked == [
            "ssf:session-revoked",
            "ssf:credential-change",
        ]
        sets = [decode(b) for _, _, _, b in server.requests]
        assert {s["txn"] for s in sets} == {"f-7"} and sets[0]["sub_id"]["id"] == "usr-1"
        change = sets[1]["events"][CAEP + "credential-change"]
        assert change["change_type"] == "revoke" and change["initiating_entity"] == "policy"
        responder.run_adapter(adapter, _cmd(identity="usr-1"))  # a retry: same jti, deduplicated
        assert len(seen_jti) == 2
        wrong = SsfTransmitter(f"{server.url}/events", key, issuer="x", audience="other")
        bad = responder.run_adapter(wrong, _cmd())
        assert bad.status == "failed" and "invalid_audience" in bad.failed[0][1]
    finally:
        server.close()


def test_a_quarantine_ends_when_its_duration_is_over(
    live_broker: tuple[CredentialBroker, str],
) -> None:
    broker, url = live_broker
    key = SigningKey.generate("w1")
    now = time.time()
    clock = [now]
    responder = _responder(url, key, clock=lambda: clock[0])
    responder.handle(_signed(key, duration_ms=60_000, now_ms=int(now * 1000)), Recorder())
    responder.handle(_signed(key, identity="agt-2", finding_uid="f-2", duration_ms=60_000,
                             now_ms=int(now * 1000)), Recorder())  # fmt: skip
    # agt-2 is released by an analyst first: its TTL must not run a second release.
    release = cancel("agt-2", command_id=command_id_for("f-2"), reason="fp", now_ms=int(now * 1000),
                     sender="analyst", by="analyst:alice")  # fmt: skip
    responder.handle(sign(release, key), Recorder())
    assert responder.expire(Recorder()) == []  # not yet
    clock[0] = now + 61
    rec = Recorder()
    [final] = responder.expire(rec)
    assert rec.out == [final] and status_of(final) == 200
    assert final["body"]["openc2"]["response"]["results"]["x-custos"]["identity"] == "agt-1"
    assert broker.registry.blocked("agt-1", time.time()) is None
    assert responder.expire(Recorder()) == []  # done once


def test_an_unauthenticated_access_check_blames_nobody_it_names(
    live_broker: tuple[CredentialBroker, str],
) -> None:
    """Issue 12.5: ``agent`` in the body is a claim unless a resource server vouches for it."""
    from pipeline.events.schemas import EventDecoder
    from pipeline.ops.localhost import call_json
    from pipeline.scores.rules import RuleState, ZeroTrustRules

    broker, url = live_broker
    events: list[tuple[str, dict[str, Any]]] = []
    broker.on_reject = lambda key, event: events.append((key, event))
    mine = broker.issue("agt-A", "task-1", 1, ("crm.read",), 1)
    broker.complete(mine.claims.jti, by="test")
    victim = broker.issue("agt-victim", "task-7", 1, ("crm.read",), 1)
    use = {"agent": "agt-victim", "task": "task-1", "step": 1, "operation": "crm.read"}

    def misuse_on(event: dict[str, Any]) -> list[str]:
        decoded = EventDecoder().decode(msgspec.json.encode(event))
        return [h.rule for h in ZeroTrustRules().check(RuleState(), decoded, None)]

    code, answer = call_json("POST", f"{url}/v1/access", mine.credential, use)
    assert (code, answer["reason"]) == (403, "wrong_holder")
    [(key, event)] = events
    assert key == event["actor"]["user"]["uid"] == "agt-A"  # the holder the signature proves
    assert event["unmapped"]["presenter"] == {"uid": "agt-victim", "verified": False}
    assert misuse_on(event) == []  # nothing Critical, no automatic contain of anybody
    assert broker.registry.blocked("agt-victim", time.time()) is None
    assert broker.check(victim.credential, agent="agt-victim", operation="crm.read")
    # Garbage with a named victim: recorded on the caller's address, not on the victim.
    events.clear()
    code, _ = call_json("POST", f"{url}/v1/access", "not-a-jws", use)
    assert code == 403 and events[0][0].startswith("unverified@")
    # A resource server that authenticates vouches for the presenter: misuse on it, as before.
    events.clear()
    code, _ = call_json("POST", f"{url}/v1/access", mine.credential, use,
                        headers={"X-Custos-Resource-Token": TOKEN})  # fmt: skip
    [(key, event)] = events
    assert code == 403 and key == "agt-victim" and "presenter" not in event["unmapped"]
    assert misuse_on(event) == ["credential_misuse"]
    events.clear()
    code, _ = call_json("POST", f"{url}/v1/access", mine.credential, use,
                        headers={"X-Custos-Resource-Token": "guess"})  # fmt: skip
    assert code == 403 and events[0][0] == "agt-A"  # a wrong token vouches for nothing


def test_hostile_requests_to_the_broker_get_a_4xx_with_a_reason_never_a_500(
    live_broker: tuple[CredentialBroker, str],
) -> None:
    """Issue 12.6: lone surrogates, empty names, 2^70, NaN, non-UTF-8 headers and bodies."""
    import http.client

    broker, url = live_broker
    events: list[dict[str, Any]] = []
    broker.on_reject = lambda key, event: events.append(event)
    port = int(url.rsplit(":", 1)[1])
    auth = {"Authorization": f"Bearer {TOKEN}"}
    ok = {"agent": "agt-1", "task": "t-1", "step": 1, "scope": ["crm.read"], "ceiling": 1}
    issued = broker.issue("agt-1", "t-1", 1, ("crm.read",), 1)

    def raw(method: str, path: str, body: bytes, headers: dict[str, Any]) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.putrequest(method, path)
            for k, v in {"Content-Length": str(len(body)), **headers}.items():
                conn.putheader(k, v)
            conn.endheaders(body)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def post(path: str, doc: Any, headers: dict[str, Any] | None = None) -> tuple[int, bytes]:
        data = doc if isinstance(doc, bytes) else json.dumps(doc).encode("utf-8", "surrogatepass")
        return raw("POST", path, data,
                   {"Content-Type": "application/json", **(auth if headers is None else headers)})

    cases: list[tuple[str, Any, dict[str, Any] | None]] = [
        ("/v1/credentials", {**ok, "agent": "agt-\ud800"}, None),  # lone surrogate
        ("/v1/credentials", {**ok, "agent": ""}, None),
        ("/v1/credentials", {**ok, "agent": " "}, None),
        ("/v1/credentials", {**ok, "agent": "agt\x00-1"}, None),
        ("/v1/credentials", {**ok, "agent": "agt\u202e-1"}, None),
        ("/v1/credentials", {**ok, "agent": "a" * 5000}, None),
        ("/v1/credentials", {**ok, "task": ""}, None),
        ("/v1/credentials", {**ok, "step": -1}, None),
        ("/v1/credentials", {**ok, "step": 2**70}, None),
        ("/v1/credentials", {**ok, "ceiling": 2**70}, None),
        ("/v1/credentials", {**ok, "ttl_s": 0}, None),
        ("/v1/credentials", {**ok, "scope": ["x"] * 1000}, None),
        ("/v1/credentials", b'{"agent": "a", "agent": "b", "task": "t", "step": 1}', None),
        ("/v1/credentials", b'{"agent": "a", "task": "t", "step": NaN}', None),
        ("/v1/credentials", b"\xff\xfe not utf-8", None),
        ("/v1/credentials", ok, {"Authorization": b"Bearer \xff\xfe".decode("latin-1")}),
        ("/v1/access", {"agent": "agt-\ud800", "operation": "crm.read"},
         {"Authorization": f"Bearer {issued.credential}"}),
        ("/v1/access", {"agent": "agt-1", "operation": "crm.read"},
         {"Authorization": "Bearer " + "x" * 20_000}),
        ("/v1/identities/agt-1/block", {"reason": "r", "until": float("nan")}, None),
        ("/v1/identities/agt-1/block", b'{"reason": "r", "until": Infinity}', None),
        ("/v1/identities/agt-1/block", {"reason": "r", "until": 1e300}, None),
        ("/v1/identities/agt-1/block", {"reason": ""}, None),
        ("/v1/identities/agt%00x/block", {"reason": "r"}, None),
        ("/v1/identities/agt-1/revoke", {"reason": "r\x00"}, None),
    ]  # fmt: skip
    for path, doc, headers in cases:
        code, answer = post(path, doc, headers)
        assert 400 <= code < 500, (path, doc, code, answer[:200])
        assert answer.strip(), (path, doc)  # a reason (aiohttp's own for an over-long header)
    for path in ("/introspect", "/revoke"):
        code, _ = raw("POST", path, b"token=\xff\xfe%ff",
                      {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8", **auth})
        assert 400 <= code < 500, (path, code)
    code, _ = raw("GET", "/v1/identities/agt-1", b"", {"Authorization": "Bearer \xff\xfe"})
    assert code == 401
    # Nothing was issued, blocked or blamed by any of it (malformed requests name nobody).
    assert broker.registry.live("agt-1", time.time()) == [issued.claims.jti]
    assert broker.registry.blocked("agt-1", time.time()) is None
    assert events == []
