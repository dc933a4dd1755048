"""Decisions leaving the console: signed by the deciding analyst's own key, checked here with
the same verifiers responders and workers run; refused by role, by state, by the two-person
rule; forged pending commands never shown; nothing recorded that the broker did not take."""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from pipeline.config import Settings
from pipeline.console.accounts import Accounts
from pipeline.console.decisions import DecisionNotSent, Outgoing
from pipeline.console.follow import Follower
from pipeline.console.store import ConsoleStore
from pipeline.console.web import COOKIE, create_console
from pipeline.control.signing import (
    COMMAND_TYP,
    SigningKey,
    analyst_keys,
    command_key,
    trusted_keys,
    verify_compact,
    verify_feedback,
    with_analysts,
)
from pipeline.quarantine.commands import command_id_for, contain, request_of, sign, verify
from tests.unit.console.test_web import ORIGIN, PASSWORD, finding


class Sent(list[Outgoing]):
    refuse = False

    def __call__(self, out: Outgoing) -> None:
        if self.refuse:
            raise DecisionNotSent(f"{out.what} was not delivered to {out.topic}: broker down")
        self.append(out)


@pytest.fixture
def world(tmp_path: Path) -> tuple[Settings, ConsoleStore, Sent, SigningKey]:
    settings = Settings.from_env({}, home=str(tmp_path / "home"))
    worker = command_key(settings.command_key_path, settings.command_jwks_path)
    store = ConsoleStore(":memory:")
    accounts = Accounts(store)
    accounts.add("alice", PASSWORD, "analyst")
    accounts.add("bob", PASSWORD, "approver")
    accounts.add("carol", PASSWORD, "approver")
    store.ingest_finding(finding("f-1"))
    return settings, store, Sent(), worker


def _pending(settings: Settings, store: ConsoleStore, signer: SigningKey, uid: str = "f-1") -> str:
    now = int(time.time() * 1000)
    msg = contain("agt-7", finding_uid=uid, reason="credential reuse", duration_ms=3_600_000,
                  now_ms=now, sender="custos-worker", approval="required",
                  severity_id=4)  # fmt: skip
    follower = Follower(settings, store)
    doc = follower.parse("pending", sign(msg, signer), now)
    store.ingest_parsed([(settings.approvals_topic, 0, 0, "command", doc)])
    return command_id_for(uid)


def _client(world: Any, user: str, **kw: Any) -> tuple[TestClient, str]:
    settings, store, sent, _ = world
    client = TestClient(create_console(store, settings=settings, send=sent, **kw))
    page = client.get("/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    client.post("/login", data={"user": user, "password": PASSWORD, "nonce": nonce},
                headers=ORIGIN)  # fmt: skip
    assert COOKIE in client.cookies
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/").text).group(1)  # type: ignore[union-attr]
    return client, csrf


def test_an_approval_is_signed_by_the_approver_and_a_responder_would_execute_it(world: Any) -> None:
    settings, store, sent, worker = world
    cid = _pending(settings, store, worker)
    assert "credential reuse" in _client(world, "bob")[0].get("/containment").text
    alice, csrf = _client(world, "alice")
    r = alice.post(f"/containment/{cid}/approve", data={"csrf": csrf}, headers=ORIGIN)
    assert r.status_code == 403 and not sent  # an analyst is not an approver
    bob, csrf = _client(world, "bob")
    r = bob.post(f"/containment/{cid}/approve", data={"csrf": csrf}, headers=ORIGIN,
                 follow_redirects=False)  # fmt: skip
    assert r.status_code == 303 and len(sent) == 1
    out = sent[0]
    assert out.topic == settings.quarantine_topic and out.key == b"agt-7"
    # What the responder runs: executable, approved, signed by an analyst's key - bob's own.
    analysts = analyst_keys(settings)
    message = verify(out.value, with_analysts(trusted_keys(settings), analysts),
                     now_ms=int(time.time() * 1000), approvers=analysts)  # fmt: skip
    ext = request_of(message)["args"]["x-custos"]
    assert (ext["approval"], ext["approved_by"]) == ("approved", "analyst:bob")
    header = json.loads(base64.urlsafe_b64decode(out.value.split(b".")[0] + b"=="))
    assert header["kid"].startswith("analyst-bob-")
    assert store.command(cid)["state"] == "approved"  # type: ignore[index]
    assert store.actions(cid)[-1]["user"] == "bob"
    again = bob.post(f"/containment/{cid}/approve", data={"csrf": csrf}, headers=ORIGIN)
    assert again.status_code == 409 and len(sent) == 1  # decided once


def test_a_forged_pending_command_is_never_shown(world: Any) -> None:
    settings, store, _, _ = world
    cid = _pending(settings, store, SigningKey.generate())  # not the worker's key
    assert store.command(cid) is None
    assert "Nothing waits for an approver" in _client(world, "bob")[0].get("/containment").text


def test_confirm_and_false_positive_reach_the_worker_signed_by_the_analyst(world: Any) -> None:
    settings, store, sent, _ = world
    alice, csrf = _client(world, "alice")
    assert alice.post("/findings/f-1/confirm", data={"csrf": csrf},
                      headers=ORIGIN).status_code == 400  # no reason, no decision  # fmt: skip
    alice.post("/findings/f-1/confirm", data={"csrf": csrf, "reason": "owner says not them"},
               headers=ORIGIN)  # fmt: skip
    alice.post("/findings/f-1/false_positive",
               data={"csrf": csrf, "reason": "planned rerun", "learn": "1"}, headers=ORIGIN)
    keys = with_analysts(trusted_keys(settings), analyst_keys(settings))
    fbs = [verify_feedback(o.value, keys, now_ms=int(time.time() * 1000)) for o in sent]
    assert [(f.action, f.by, f.identity, f.finding_uid) for f in fbs] == [
        ("confirm", "analyst:alice", "agt-7", "f-1"),
        ("false_positive", "analyst:alice", "agt-7", "f-1"),
    ]
    assert fbs[1].learn_as_normal and all(o.topic == settings.feedback_topic for o in sent)
    assert [a["action"] for a in store.actions("f-1")] == ["confirm", "false_positive"]


def test_two_person_rule_an_approver_does_not_approve_what_they_confirmed(world: Any) -> None:
    settings, store, sent, worker = world
    carol, csrf = _client(world, "carol", two_person=True)
    carol.post("/findings/f-1/confirm", data={"csrf": csrf, "reason": "seen it"}, headers=ORIGIN)
    cid = _pending(settings, store, worker)
    r = carol.post(f"/containment/{cid}/approve", data={"csrf": csrf}, headers=ORIGIN)
    assert r.status_code == 403 and "two-person" in r.text and len(sent) == 1
    bob, csrf = _client(world, "bob", two_person=True)
    assert bob.post(f"/containment/{cid}/approve", data={"csrf": csrf}, headers=ORIGIN,
                    follow_redirects=False).status_code == 303  # fmt: skip


def test_reject_and_release_say_why_and_go_signed(world: Any) -> None:
    settings, store, sent, worker = world
    cid = _pending(settings, store, worker)
    bob, csrf = _client(world, "bob")
    assert bob.post(f"/containment/{cid}/reject", data={"csrf": csrf},
                    headers=ORIGIN).status_code == 400  # fmt: skip
    bob.post(f"/containment/{cid}/reject", data={"csrf": csrf, "reason": "known batch job"},
             headers=ORIGIN)  # fmt: skip
    assert store.command(cid)["state"] == "rejected"  # type: ignore[index]
    fb = verify_feedback(sent[-1].value, analyst_keys(settings),  # type: ignore[arg-type]
                         now_ms=int(time.time() * 1000))  # fmt: skip
    assert fb.action == "release" and "known batch job" in fb.reason
    # An automatic contain acting now, as the worker publishes it; then released by bob.
    now = int(time.time() * 1000)
    acting = contain("agt-8", finding_uid="f-2", reason="r", duration_ms=3_600_000, now_ms=now,
                     sender="custos-worker")  # fmt: skip
    doc = Follower(settings, store).parse("command", sign(acting, worker), now)
    store.ingest_parsed([(settings.quarantine_topic, 0, 0, "command", doc)])
    active = command_id_for("f-2")
    assert "agt-8" in bob.get("/containment").text
    bob.post(f"/containment/{active}/release", data={"csrf": csrf, "reason": "owner fixed it"},
             headers=ORIGIN)  # fmt: skip
    cancel = json.loads(verify_compact(sent[-1].value, analyst_keys(settings),  # type: ignore[arg-type]
                                       COMMAND_TYP))  # fmt: skip
    assert request_of(cancel)["action"] == "cancel"
    assert request_of(cancel)["target"] == {"command": active}


def test_nothing_is_recorded_when_the_broker_does_not_take_a_decision(world: Any) -> None:
    settings, store, sent, worker = world
    sent.refuse = True
    cid = _pending(settings, store, worker)
    bob, csrf = _client(world, "bob")
    r = bob.post(f"/containment/{cid}/approve", data={"csrf": csrf}, headers=ORIGIN)
    assert r.status_code == 502 and "broker down" in r.text
    assert store.command(cid)["state"] == "pending" and not store.actions()  # type: ignore[index]


def test_a_replay_console_is_read_only_for_decisions(world: Any) -> None:
    _, store, _, _ = world
    client = TestClient(create_console(store))
    page = client.get("/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    client.post("/login", data={"user": "alice", "password": PASSWORD, "nonce": nonce},
                headers=ORIGIN)  # fmt: skip
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/").text).group(1)  # type: ignore[union-attr]
    r = client.post("/findings/f-1/confirm", data={"csrf": csrf, "reason": "x"}, headers=ORIGIN)
    assert r.status_code == 409 and "read-only" in r.text


def test_responder_answers_show_on_the_finding(world: Any) -> None:
    settings, store, _, worker = world
    cid = _pending(settings, store, worker)
    answer = {"headers": {"request_id": "req-1", "created": int(time.time() * 1000)},
              "body": {"openc2": {"response": {
                  "status": 200, "status_text": "contain done for agt-7",
                  "results": {"x-custos": {"command_id": cid, "adapters": {
                      "custos-broker": {"status": "ok", "revoked": ["cred-1"]},
                      "vault": {"status": "failed", "revoked": [], "not_found": ["acc-9"],
                                "failed": [{"ref": "lease/x", "reason": "403 <b>denied</b>"}]},
                  }}}}}}}  # fmt: skip
    store.ingest_parsed([(settings.acks_topic, 0, 0, "response", answer)])
    page = _client(world, "alice")[0].get("/findings/f-1").text
    assert "contain done for agt-7" in page
    rows = re.findall(r'<tr class="outcome-(\w+)"><td>([^<]+)</td><td><code>([^<]*)</code></td>'
                      r"<td>([^<]*)</td>", page)  # fmt: skip
    assert rows == [("ok", "custos-broker", "cred-1", "revoked"),
                    ("failed", "vault", "acc-9", "not found (already gone)"),
                    ("failed", "vault", "lease/x", "failed: 403 &lt;b&gt;denied&lt;/b&gt;")]
