"""The credential broker: tokens, registry, broker logic and its HTTP API (no Kafka)."""

from __future__ import annotations

import asyncio
import base64
import json
import stat
from pathlib import Path
from typing import Any

import msgspec
import pytest

from pipeline.config import Settings
from pipeline.control.signing import SigningKey
from pipeline.credentials.broker import (
    Blocked,
    CredentialBroker,
    load_api_token,
    load_read_token,
    web_app,
)
from pipeline.credentials.registry import Registry
from pipeline.credentials.tokens import CredentialRejected, TaskClaims, decode, issue, verify
from pipeline.events.schemas import EventDecoder
from pipeline.scores.rules import RuleState, ZeroTrustRules

T0 = 1_790_000_000.0


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def claims(**kw: Any) -> TaskClaims:
    d: dict[str, Any] = {"sub": "agt-1", "task": "task-1", "step": 1, "scope": ("crm.read",),
                         "ceiling": 1, "iat": int(T0), "exp": int(T0) + 300, "jti": "cred-1",
                         "iss": "custos"}  # fmt: skip
    d.update(kw)
    return TaskClaims(**d)


def check(token: str, key: SigningKey, **kw: Any) -> TaskClaims:
    args: dict[str, Any] = {"agent": "agt-1", "task": "task-1", "step": 1,
                            "scope": "crm.read", "now_s": T0 + 10}  # fmt: skip
    args.update(kw)
    return verify(token, key.public_keys(), **args)


def reason(fn: Any) -> str:
    with pytest.raises(CredentialRejected) as info:
        fn()
    return info.value.reason


# --- tokens -----------------------------------------------------------------------------------


def test_token_round_trip_and_every_binding() -> None:
    key = SigningKey.generate("k1")
    token = issue(claims(act="agt-orch"), key)
    assert check(token, key) == claims(act="agt-orch")
    assert reason(lambda: check(token, key, agent="agt-2")) == "wrong_holder"
    assert reason(lambda: check(token, key, task="task-2")) == "wrong_task"
    assert reason(lambda: check(token, key, step=2)) == "wrong_task"
    assert reason(lambda: check(token, key, scope="crm.export")) == "out_of_scope"
    assert reason(lambda: check(token, key, now_s=T0 + 306)) == "expired"
    assert check(token, key, now_s=T0 + 304).jti == "cred-1"  # 5 s leeway
    assert reason(lambda: check(token, key, now_s=T0 - 60)) == "not_yet_valid"


def test_forged_tampered_and_unsigned_tokens_are_refused() -> None:
    key, other = SigningKey.generate("k1"), SigningKey.generate("k1")
    token = issue(claims(), key)
    assert reason(lambda: check(issue(claims(), other), key)) == "bad_signature"
    head, body, sig = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=="))
    payload["sub"] = "agt-evil"
    evil = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    assert reason(lambda: check(f"{head}.{evil}.{sig}", key, agent="agt-evil")) == ("bad_signature")
    none = base64.urlsafe_b64encode(b'{"alg":"none","typ":"custos-task+jwt"}').rstrip(b"=")
    assert reason(lambda: check(f"{none.decode()}.{body}.", key)) in {"malformed", "bad_signature"}
    assert reason(lambda: check("not-a-jwt", key)) == "malformed"


def test_signing_key_is_created_once_private_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "signing-key.jwk"
    first = SigningKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = SigningKey.load_or_create(path)
    assert again.kid == first.kid
    token = issue(claims(), first)
    assert decode(token, again.public_keys()).jti == "cred-1"
    [jwk] = first.jwks()["keys"]
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519" and "d" not in jwk


# --- registry ---------------------------------------------------------------------------------


def test_registry_changes_are_idempotent_and_survive_a_reopen(tmp_path: Path) -> None:
    db = tmp_path / "c.sqlite3"
    reg = Registry(db)
    for i in range(3):
        reg.record(claims(jti=f"c{i}"))
    reg.record(claims(jti="other", sub="agt-2"))
    assert reg.complete("c0", by="t", now_s=T0) and not reg.complete("c0", by="t", now_s=T0)
    assert reg.revoke("c1", reason="r", by="t", now_s=T0)
    assert not reg.revoke("c1", reason="r", by="t", now_s=T0)
    assert not reg.revoke("never-issued", reason="r", by="t", now_s=T0)
    new, revoked = reg.block("agt-1", reason="quarantine", by="t", now_s=T0, command_id="cmd-1")
    assert new and revoked == ["c2"]  # only what was still live
    assert reg.block("agt-1", reason="again", by="t", now_s=T0, command_id="cmd-2") == (False, [])
    reg.close()

    reg = Registry(db)  # a restarted broker
    assert [reg.status(j).state for j in ("c0", "c1", "c2")] == [  # type: ignore[union-attr]
        "completed", "revoked", "revoked",
    ]  # fmt: skip
    block = reg.blocked("agt-1", T0)
    assert block is not None and block.command_id == "cmd-2"
    assert reg.live("agt-2", T0) == ["other"]
    assert not reg.unblock("agt-1", command_id="cmd-1")  # a stale release lifts nothing
    assert reg.unblock("agt-1", command_id="cmd-2") and reg.blocked("agt-1", T0) is None


def test_timed_block_expires() -> None:
    reg = Registry(":memory:")
    reg.block("agt-1", reason="r", by="t", now_s=T0, until=T0 + 60)
    assert reg.blocked("agt-1", T0 + 59) is not None and reg.blocked("agt-1", T0 + 61) is None


# --- broker -----------------------------------------------------------------------------------


def make_broker() -> tuple[CredentialBroker, Clock, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    clock = Clock()
    broker = CredentialBroker(
        Registry(":memory:"), SigningKey.generate("k1"), issuer="custos", ttl_s=120,
        clock=clock, on_reject=lambda key, event: events.append(event),
    )  # fmt: skip
    return broker, clock, events


def test_use_complete_and_rejections_become_detectable_events() -> None:
    broker, clock, events = make_broker()
    got = broker.issue("agt-1", "task-1", 1, ("crm.read",), 1, delegated_by="agt-orch")
    assert got.claims.exp - got.claims.iat == 120
    assert broker.check(got.credential, agent="agt-1", operation="crm.read").jti == got.claims.jti
    # Another agent of the chain replays it: refused, and an event the rules recognise.
    with pytest.raises(CredentialRejected):
        broker.check(got.credential, agent="agt-2", operation="crm.read", service="crm")
    assert broker.complete(got.claims.jti, by="orchestrator")
    with pytest.raises(CredentialRejected) as done:
        broker.check(got.credential, agent="agt-1", operation="crm.read")
    assert done.value.reason == "step_completed"
    assert [e["unmapped"]["rejection"] for e in events] == ["wrong_holder", "step_completed"]

    decoder = EventDecoder()
    rules = ZeroTrustRules()
    misuse = decoder.decode(msgspec.json.encode(events[0]), now_ms=int(clock() * 1000))
    assert misuse.identity_uid == "agt-2" and misuse.status_id == 2
    assert misuse.delegated_by == "agt-orch"
    assert [h.rule for h in rules.check(RuleState(), misuse, None)] == ["credential_misuse"]
    clock.t += 3600  # used again an hour later: expired, and the rules say so
    with pytest.raises(CredentialRejected):
        broker.check(got.credential, agent="agt-1", operation="crm.read")
    late = decoder.decode(msgspec.json.encode(events[-1]), now_ms=int(clock() * 1000))
    assert events[-1]["unmapped"]["rejection"] == "expired"
    assert [h.rule for h in rules.check(RuleState(), late, None)] == ["credential_expired"]


def test_history_tells_issued_used_refused_revoked_and_the_delegation_chain(
    tmp_path: Path,
) -> None:
    events: list[dict[str, Any]] = []
    clock = Clock()
    path = tmp_path / "reg.sqlite3"
    broker = CredentialBroker(Registry(path), SigningKey.generate("k1"), issuer="custos",
                              clock=clock, on_reject=lambda k, e: events.append(e))  # fmt: skip
    broker.issue("agt-top", "plan", 1, ("plan",), 0)
    broker.issue("agt-orch", "plan", 2, ("delegate",), 0, delegated_by="agt-top")
    a = broker.issue("agt-1", "t-1", 1, ("crm.read",), 1, delegated_by="agt-orch")
    b = broker.issue("agt-1", "t-2", 1, ("crm.read",), 1, delegated_by="agt-orch")
    for _ in range(3):
        clock.t += 1
        broker.check(a.credential, agent="agt-1", operation="crm.read")
    with pytest.raises(CredentialRejected):
        broker.check(a.credential, agent="agt-1", operation="mail.send")  # out of scope
    broker.block("agt-1", reason="finding f-1", by="responder", command_id="c-1")
    with pytest.raises(CredentialRejected):
        broker.check(b.credential, agent="agt-1", operation="crm.read")
    with pytest.raises(Blocked):
        broker.issue("agt-1", "t-3", 1, ("crm.read",), 1)

    h = broker.history("agt-1")
    by_jti = {c["jti"]: c for c in h["credentials"]}
    assert [c["jti"] for c in h["credentials"]][:2] == [b.claims.jti, a.claims.jti]  # newest first
    assert by_jti[a.claims.jti]["uses"] == 3 and by_jti[b.claims.jti]["uses"] == 0
    assert by_jti[a.claims.jti]["last_used_at"] == clock()
    assert {c["state"] for c in h["credentials"]} == {"revoked"}
    assert by_jti[a.claims.jti]["changed_by"] == "responder"
    assert [r["reason"] for r in h["refusals"]] == ["holder_blocked", "revoked", "out_of_scope"]
    assert h["delegation_chain"] == ["agt-orch", "agt-top"]
    assert h["blocked"]["reason"] == "finding f-1"
    assert [c["holder"] for c in broker.history("agt-orch")["delegated"]] == ["agt-1", "agt-1"]
    # Uses and refusals are on disk: a new broker on the same file tells the same history.
    again = Registry(path).history("agt-1")
    assert again["credentials"][1]["uses"] == 3 and len(again["refusals"]) == 3


def test_a_flood_of_refused_calls_waits_in_memory_and_is_written_in_one_flush() -> None:
    from pipeline.credentials.broker import PENDING_REFUSALS

    broker, _, events = make_broker()
    for i in range(PENDING_REFUSALS + 500):
        with pytest.raises(CredentialRejected):
            broker.check(f"junk-{i}", agent="agt-1", operation="crm.read")
    assert len(events) == PENDING_REFUSALS + 500  # every refusal is still an event
    assert broker.registry.history("agt-1")["refusals"] == []  # nothing written per call
    assert broker.flush_history() == PENDING_REFUSALS  # the oldest 500 were dropped
    assert len(broker.registry.history("agt-1", limit=1000)["refusals"]) == 200  # kept per id


def test_refusals_kept_per_identity_are_bounded() -> None:
    from pipeline.credentials.registry import REFUSALS_KEPT

    reg = Registry(":memory:")
    for i in range(REFUSALS_KEPT + 25):
        reg.refused("agt-1", at=float(i), reason="scope", detail=f"#{i}")
    reg.refused("agt-2", at=0.0, reason="expired", detail="other")
    kept = reg.history("agt-1", limit=1000)["refusals"]
    assert len(kept) == REFUSALS_KEPT and kept[0]["detail"] == f"#{REFUSALS_KEPT + 24}"
    assert len(reg.history("agt-2")["refusals"]) == 1


def test_delegation_chain_stops_at_a_cycle() -> None:
    broker, _, _ = make_broker()
    broker.issue("a", "t", 1, ("x",), 0, delegated_by="b")
    broker.issue("b", "t", 1, ("x",), 0, delegated_by="a")
    assert broker.history("a")["delegation_chain"] == ["b"]


def test_quarantine_revokes_live_credentials_and_blocks_issuance() -> None:
    broker, _, events = make_broker()
    a = broker.issue("agt-1", "task-1", 1, ("crm.read",), 1)
    b = broker.issue("agt-1", "task-1", 2, ("crm.read",), 1)
    assert broker.introspect(a.credential)["active"] is True
    new, revoked = broker.block("agt-1", reason="finding f-1", by="responder", command_id="c-1")
    assert new and sorted(revoked) == sorted([a.claims.jti, b.claims.jti])
    assert broker.introspect(a.credential) == {"active": False}
    with pytest.raises(Blocked):
        broker.issue("agt-1", "task-2", 1, ("crm.read",), 1)
    with pytest.raises(CredentialRejected) as info:
        broker.check(a.credential, agent="agt-1", operation="crm.read")
    assert info.value.reason == "revoked"
    assert broker.block("agt-1", reason="again", by="responder") == (False, [])  # idempotent
    assert broker.unblock("agt-1")
    c = broker.issue("agt-1", "task-2", 1, ("crm.read",), 1)  # released: issuance works again
    assert broker.introspect(c.credential)["active"] is True
    assert [e["unmapped"]["rejection"] for e in events] == ["holder_blocked", "revoked"]


def test_rfc7009_revocation_is_idempotent_and_quiet_about_junk() -> None:
    broker, _, _ = make_broker()
    got = broker.issue("agt-1", "task-1", 1, ("crm.read",), 1)
    assert broker.revoke_token(got.credential, by="client") is True
    assert broker.revoke_token(got.credential, by="client") is False
    assert broker.revoke_token("junk", by="client") is False
    assert broker.introspect(got.credential) == {"active": False}


# --- HTTP -------------------------------------------------------------------------------------


def test_http_api(tmp_path: Path) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    broker, _, events = make_broker()
    token = load_api_token(Settings.from_env({}, broker_state_dir=str(tmp_path)))
    assert load_api_token(Settings.from_env({}, broker_state_dir=str(tmp_path))) == token
    reader = load_read_token(Settings.from_env({}, broker_state_dir=str(tmp_path)))
    assert reader != token and stat.S_IMODE((tmp_path / "read-token").stat().st_mode) == 0o600
    auth = {"Authorization": f"Bearer {token}"}
    read = {"Authorization": f"Bearer {reader}"}

    async def run() -> None:
        async with TestClient(TestServer(web_app(broker, token, reader))) as http:
            jwks = await (await http.get("/.well-known/jwks.json")).json()
            assert jwks["keys"][0]["alg"] == "EdDSA"  # RFC 8037: what JWT libraries accept
            req = {"agent": "agt-1", "task": "t-1", "step": 1, "scope": ["crm.read"]}
            assert (await http.post("/v1/credentials", json=req)).status == 401
            bad = {"Authorization": "Bearer wrong"}
            assert (await http.post("/v1/credentials", json=req, headers=bad)).status == 401
            invalid = await http.post("/v1/credentials", json={"agent": 1}, headers=auth)
            assert invalid.status == 400
            r = await http.post("/v1/credentials", json=req, headers=auth)
            assert r.status == 201
            cred = (await r.json())["credential"]
            use = {"agent": "agt-1", "task": "t-1", "step": 1, "operation": "crm.read"}
            holder = {"Authorization": f"Bearer {cred}"}
            ok = await http.post("/v1/access", json=use, headers=holder)
            assert ok.status == 200 and (await ok.json())["allowed"] is True
            intro = await http.post("/introspect", data={"token": cred}, headers=auth)
            assert (await intro.json())["sub"] == "agt-1"
            blocked = await http.post(
                "/v1/identities/agt-1/block", json={"reason": "finding f-1", "command_id": "c-9"},
                headers=auth,
            )  # fmt: skip
            assert len((await blocked.json())["revoked"]) == 1
            no = await http.post("/v1/access", json=use, headers=holder)
            assert no.status == 403 and (await no.json())["reason"] == "revoked"
            assert (await http.post("/v1/credentials", json=req, headers=auth)).status == 403
            for junk in (cred, "garbage"):  # RFC 7009: 200 either way
                r = await http.post("/revoke", data={"token": junk}, headers=auth)
                assert r.status == 200
            info = await (await http.get("/v1/identities/agt-1", headers=auth)).json()
            assert info["blocked"] and info["command_id"] == "c-9" and info["live"] == []
            stale = await http.delete("/v1/identities/agt-1/block?command_id=old", headers=auth)
            assert (await stale.json())["unblocked"] is False
            lifted = await http.delete("/v1/identities/agt-1/block?command_id=c-9", headers=auth)
            assert (await lifted.json())["unblocked"] is True
            url = "/v1/identities/agt-1/credentials"
            assert (await http.get(url)).status == 401
            # The read-only token looks and never acts.
            assert (await http.get(url, headers=read)).status == 200
            assert (await http.get("/v1/identities/agt-1", headers=read)).status == 200
            for method, path in (("POST", "/v1/identities/agt-1/block"),
                                 ("POST", "/v1/identities/agt-1/revoke"),
                                 ("DELETE", "/v1/identities/agt-1/block"),
                                 ("POST", "/v1/credentials"), ("POST", "/revoke")):  # fmt: skip
                refused = await http.request(method, path, json={"reason": "x"}, headers=read)
                assert refused.status == 401, (method, path)
            assert (await http.get(url + "?limit=x", headers=auth)).status == 400
            hist = await (await http.get(url, headers=auth)).json()
            assert hist["credentials"][0]["uses"] == 1 and hist["credentials"][0]["state"] == (
                "revoked")
            assert [r["reason"] for r in hist["refusals"]] == ["holder_blocked", "revoked"]

    asyncio.run(run())
    assert [e["unmapped"]["rejection"] for e in events] == ["revoked", "holder_blocked"]
