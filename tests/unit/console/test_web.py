"""The console over HTTP, as an attacker and an operator would use it: logins, CSRF, origins,
roles, revoked sessions, hostile finding text, the live stream."""

from __future__ import annotations

import re
from typing import Any

import pytest
from starlette.testclient import TestClient

from pipeline.console.accounts import Accounts
from pipeline.console.store import ConsoleStore
from pipeline.console.web import COOKIE, create_console

ORIGIN = {"origin": "http://testserver"}
PASSWORD = "a long enough password"


def finding(uid: str = "f-1", *, title: str = "Agent misuses its tools",
            t: int = 1_790_000_000_000, activity: int = 1, severity: int = 4,
            kind: str = "Agent") -> dict[str, Any]:  # fmt: skip
    return {"finding_info": {"uid": uid, "title": title, "first_seen_time": t,
                             "analytic": {"type": "Rule"}},
            "activity_id": activity, "severity_id": severity, "time": t, "is_alert": True,
            "status": "New", "message": f"{title}: explained", "risk_score": 80,
            "evidences": [{"actor": {"user": {"uid": "agt-7", "type": kind}}}],
            "unmapped": {"custos": {"rules": [{"rule": "task_credential_reuse"}]}}}  # fmt: skip


@pytest.fixture
def store() -> ConsoleStore:
    s = ConsoleStore(":memory:")
    accounts = Accounts(s)
    accounts.add("alice", PASSWORD, "analyst")
    accounts.add("victor", PASSWORD, "viewer")
    s.ingest_finding(finding())
    return s


def login(store: ConsoleStore, user: str = "alice", **console: Any) -> tuple[TestClient, str]:
    """A client logged in as ``user`` (``console``: more arguments for create_console)."""
    client = TestClient(create_console(store, **({"poll_s": 0.05} | console)))
    page = client.get("/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = client.post("/login", data={"user": user, "password": PASSWORD, "nonce": nonce},
                    headers=ORIGIN, follow_redirects=False)  # fmt: skip
    assert r.status_code == 303 and COOKIE in r.cookies
    set_cookie = r.headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/").text).group(1)  # type: ignore[union-attr]
    return client, csrf


def test_pages_need_a_login_and_a_wrong_password_gets_none(store: ConsoleStore) -> None:
    client = TestClient(create_console(store))
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    assert client.get("/findings/f-1", follow_redirects=False).status_code == 303
    assert client.get("/stream").status_code == 401
    page = client.get("/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = client.post("/login", data={"user": "alice", "password": "guess", "nonce": nonce},
                    headers=ORIGIN)  # fmt: skip
    assert r.status_code == 401 and "Wrong user name or password" in r.text
    assert COOKIE not in client.cookies


def test_a_login_posted_from_elsewhere_or_without_the_form_nonce_is_refused(
    store: ConsoleStore,
) -> None:
    client = TestClient(create_console(store))
    client.get("/login")
    data = {"user": "alice", "password": PASSWORD, "nonce": "made-up"}
    assert client.post("/login", data=data, headers=ORIGIN).status_code == 403
    nonce = client.cookies["custos_login"]
    data["nonce"] = nonce
    evil = {"origin": "http://evil.example"}
    assert client.post("/login", data=data, headers=evil).status_code == 403
    ok = client.post("/login", data=data, headers=ORIGIN, follow_redirects=False)
    assert ok.status_code == 303


def test_the_queue_shows_findings_and_escapes_what_they_say(store: ConsoleStore) -> None:
    store.ingest_finding(finding("f-2", title="<script>alert(1)</script>"))
    client, _ = login(store)
    page = client.get("/")
    assert "Agent misuses its tools" in page.text and "agt-7" in page.text
    assert "<script>alert(1)</script>" not in page.text and "&lt;script&gt;" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    one = client.get("/findings/f-1")
    assert one.status_code == 200 and "Agent misuses its tools: explained" in one.text
    assert client.get("/findings/nope").status_code == 404


def test_a_change_needs_the_csrf_token_and_the_console_s_own_origin(store: ConsoleStore) -> None:
    client, csrf = login(store)
    assert client.post("/findings/f-1/acknowledge", headers=ORIGIN).status_code == 403
    assert client.post("/findings/f-1/acknowledge", data={"csrf": "x" + csrf},
                       headers=ORIGIN).status_code == 403  # fmt: skip
    assert client.post("/findings/f-1/acknowledge", data={"csrf": csrf},
                       headers={"origin": "http://evil.example"}).status_code == 403  # fmt: skip
    assert client.post("/findings/f-1/acknowledge", data={"csrf": csrf}).status_code == 403
    assert store.finding("f-1")["status"] == "new"  # type: ignore[index]
    r = client.post("/findings/f-1/acknowledge", data={"csrf": csrf}, headers=ORIGIN,
                    follow_redirects=False)  # fmt: skip
    assert r.status_code == 303 and store.finding("f-1")["status"] == "acknowledged"  # type: ignore[index]
    assert [(a["user"], a["action"]) for a in store.actions("f-1")] == [("alice", "acknowledge")]


def test_a_viewer_cannot_triage_whatever_it_posts(store: ConsoleStore) -> None:
    client, csrf = login(store, "victor")
    assert "Acknowledge" not in client.get("/").text  # not offered...
    for action in ("acknowledge", "assign", "close"):  # ...and refused when sent anyway
        r = client.post(f"/findings/f-1/{action}", headers=ORIGIN,
                        data={"csrf": csrf, "classification": "false_positive"})  # fmt: skip
        assert r.status_code == 403 and "viewer" in r.text
    assert store.finding("f-1")["status"] == "new" and not store.actions()  # type: ignore[index]


def test_assign_and_close_with_a_classification_are_attributed(store: ConsoleStore) -> None:
    client, csrf = login(store)
    client.post("/findings/f-1/assign", data={"csrf": csrf}, headers=ORIGIN)
    assert store.finding("f-1")["assignee"] == "alice"  # type: ignore[index]
    assert "Agent misuses its tools" in client.get("/?mine=1").text
    assert "Agent misuses its tools" in client.get("/?assignee=alice&analytic=Rule").text
    assert "Agent misuses its tools" not in client.get("/?analytic=Behavioral").text
    bad = client.post("/findings/f-1/close", data={"csrf": csrf, "classification": "meh"},
                      headers=ORIGIN)  # fmt: skip
    assert bad.status_code == 400
    client.post("/findings/f-1/close", headers=ORIGIN,
                data={"csrf": csrf, "classification": "false_positive", "reason": "owner ok",
                      "back": "https://evil.example/"})  # fmt: skip
    f = store.finding("f-1")
    assert f is not None and (f["status"], f["classification"]) == ("closed", "false_positive")
    last = store.actions("f-1")[-1]
    assert last["user"] == "alice" and "owner ok" in last["detail"]


def test_logout_and_revocation_end_the_session_on_the_server(store: ConsoleStore) -> None:
    client, csrf = login(store)
    token = client.cookies[COOKIE]
    assert client.post("/logout", data={"csrf": csrf}, headers=ORIGIN,
                       follow_redirects=False).status_code == 303  # fmt: skip
    replay = TestClient(create_console(store), cookies={COOKIE: token})
    assert replay.get("/", follow_redirects=False).headers["location"] == "/login"
    other, _ = login(store)
    assert Accounts(store).logout_all("alice") == 1  # custos console users logout alice
    assert other.get("/", follow_redirects=False).status_code == 303


def test_the_stream_sends_new_and_changed_findings_as_rows(store: ConsoleStore) -> None:
    client, _ = login(store)
    after = store.last_seq()
    store.ingest_finding(finding("f-9", title="Fresh one"))
    with client.stream("GET", f"/stream?after={after}") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        seen = ""
        for line in r.iter_lines():
            seen += line + "\n"
            if "Fresh one" in seen and line == "":
                break
    assert "event: finding" in seen and "Agent misuses" not in seen  # only what changed


def test_the_store_keeps_the_latest_version_and_a_worker_close(store: ConsoleStore) -> None:
    assert not store.ingest_finding(finding(t=1_789_999_999_000, title="older"))
    assert store.finding("f-1")["title"] == "Agent misuses its tools"  # type: ignore[index]
    store.ingest_finding(finding(t=1_790_000_100_000, activity=3))
    assert store.finding("f-1")["status"] == "closed"  # type: ignore[index]


def test_ingest_commits_findings_with_their_offsets(store: ConsoleStore) -> None:
    import json

    recs = [("custos.alerts", 2, 40, json.dumps(finding("f-a")).encode()),
            ("custos.alerts", 2, 41, b"not json"), ("custos.alerts", 0, 7, None)]  # fmt: skip
    assert store.ingest(recs) == 1
    assert store.offsets("custos.alerts") == {2: 42, 0: 8}
    store.ingest([("custos.alerts", 2, 30, json.dumps(finding("f-b")).encode())])
    assert store.offsets("custos.alerts")[2] == 42  # an offset never goes back


def test_accounts_refuse_weak_input(store: ConsoleStore) -> None:
    from pipeline.errors import ConfigError

    accounts = Accounts(store)
    for name, password, role in (("Bad Name", PASSWORD, "viewer"), ("bob", "short", "viewer"),
                                 ("bob", PASSWORD, "root")):  # fmt: skip
        with pytest.raises(ConfigError):
            accounts.add(name, password, role)
    stored = store.query("SELECT hash FROM users WHERE name = 'alice'")[0]["hash"]
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


def test_an_identity_page_charts_its_findings_and_says_when_no_worker_answers(
    store: ConsoleStore,
) -> None:
    from pipeline.ops.localhost import free_port

    # nobody there
    client, _ = login(store, "victor", workers=(f"http://127.0.0.1:{free_port()}",))
    r = client.get("/identities/agt-7")
    assert r.status_code == 200 and "No worker answered" in r.text
    assert 'id="spec-risk"' in r.text and "Agent misuses its tools" in r.text
    assert 'id="spec-hours"' not in r.text  # no baseline without a worker
    assert client.get("/identities/nobody").status_code == 404


def test_an_identity_page_shows_names_peers_model_provenance_and_task_credentials(
    store: ConsoleStore, tmp_path: Any
) -> None:
    """The worker's description (a real Detection's) and the broker's credential history (a
    real CredentialBroker's) served over loopback HTTP, rendered for an analyst."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import msgspec

    from pipeline.config import Settings
    from pipeline.control.signing import SigningKey
    from pipeline.credentials.broker import CredentialBroker
    from pipeline.credentials.registry import Registry
    from pipeline.credentials.tokens import CredentialRejected
    from pipeline.detection import Detection
    from pipeline.events.schemas import Event, ModelRef

    digest = "sha256:" + "d" * 64
    reg = tmp_path / "agent-models.yaml"
    reg.write_text(f"models:\n  - {{name: gpt-x, version: '1', digest: '{digest}',"
                   " trained_by: vendor-a, approved_by: alice}\n")  # fmt: skip
    det = Detection.from_settings(Settings(model_allowlist_file=str(reg)))
    mem: dict[str, bytes] = {}
    t0 = 1_790_000_000_000
    det.process([Event(uid=f"e{i}", class_uid=6003, activity_id=2, time_ms=t0 + i * 60_000,
                       identity_uid="agt-7", identity_kind="agent", service="crm",
                       operation="crm.read" if i % 4 else "crm.export", country="DE",
                       model=ModelRef("gpt-x", "1", digest)) for i in range(30)], mem)  # fmt: skip
    broker = CredentialBroker(Registry(":memory:"), SigningKey.generate("k"), issuer="custos")
    broker.issue("agt-orch", "plan", 1, ("delegate",), 0, delegated_by="svc-scheduler")
    got = broker.issue("agt-7", "t-42", 2, ("crm.read",), 1, delegated_by="agt-orch")
    broker.check(got.credential, agent="agt-7", operation="crm.read")
    with pytest.raises(CredentialRejected):
        broker.check(got.credential, agent="agt-7", operation="mail.send")
    broker.block("agt-7", reason="quarantine c-1 finding f-1", by="responder")
    token = "broker-api-token"

    class Fake(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/custos/identity/agt-7?kind=agent"):
                body: Any = det.describe("agt-7", mem, "agent")
            elif self.path == "/v1/identities/agt-7/credentials?limit=12":
                if self.headers.get("Authorization") != f"Bearer {token}":
                    self.send_response(401)
                    self.end_headers()
                    return
                body = broker.history("agt-7")
            else:
                self.send_response(404)
                self.end_headers()
                return
            data = json.dumps(msgspec.to_builtins(body)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Fake)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        client, _ = login(store, "victor", workers=(base,), broker=(base, token))
        r = client.get("/identities/agt-7")
        assert r.status_code == 200, r.text
        text = r.text
        assert "crm.export" in text and "crm.read" in text  # values named, not hashes
        assert "agent:svc:crm" in text  # its peer group
        assert "peer_low" in text  # the peer band in the numeric chart's data
        assert "trained by vendor-a" in text and "approved by alice" in text
        assert "agt-7</strong> ← agt-orch ← svc-scheduler" in text  # the delegation chain
        assert "t-42 / 2" in text and ">revoked<" in text and "responder" in text
        assert "out_of_scope" in text and "mail.send" in text  # the refused use
        assert re.search(r"<td>1 \(last ", text)  # one allowed use
        assert "1 issued: 0 live, 0 completed, 1 revoked · 1 uses" in text
        # Wrong token: the page still renders, without the broker's section.
        app2 = create_console(store, workers=(base,), broker=(base, "wrong"))
        c2 = TestClient(app2)
        c2.cookies = client.cookies
        assert "Task credentials" not in c2.get("/identities/agt-7").text
    finally:
        srv.shutdown()


def test_bulk_triage_applies_to_every_selected_finding_and_only_for_analysts(
    store: ConsoleStore,
) -> None:
    for i in range(3):
        store.ingest_finding(finding(f"b-{i}"))
    viewer, csrf_v = login(store, "victor")
    data = {"csrf": csrf_v, "action": "acknowledge", "uid": ["b-0", "b-1"]}
    assert viewer.post("/bulk", data=data, headers=ORIGIN).status_code == 403
    client, csrf = login(store)
    assert client.post("/bulk", data={**data, "csrf": csrf}).status_code == 403  # no Origin
    bad = {"csrf": csrf, "action": "close", "classification": "meh", "uid": ["b-0"]}
    assert client.post("/bulk", data=bad, headers=ORIGIN).status_code == 400
    done = {"csrf": csrf, "action": "close", "classification": "benign_positive",
            "reason": "nightly backup", "uid": ["b-0", "b-1"]}  # fmt: skip
    r = client.post("/bulk", data=done, headers=ORIGIN, follow_redirects=False)
    assert r.status_code == 303
    statuses = [(store.finding(f"b-{i}") or {}).get("status") for i in range(3)]
    assert statuses == ["closed", "closed", "new"]
    assert {a["target"] for a in store.actions() if a["user"] == "alice"} == {"b-0", "b-1"}


def test_guessing_passwords_is_throttled_per_user(store: ConsoleStore) -> None:
    client = TestClient(create_console(store))
    for _ in range(5):
        page = client.get("/login")
        nonce = re.search(r'name="nonce" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        r = client.post("/login", data={"user": "alice", "password": "guess", "nonce": nonce},
                        headers=ORIGIN)  # fmt: skip
        assert r.status_code == 401
    page = client.get("/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = client.post("/login", data={"user": "alice", "password": PASSWORD, "nonce": nonce},
                    headers=ORIGIN)  # fmt: skip
    assert r.status_code == 429 and COOKIE not in client.cookies  # even the right one waits
    login(store, "victor")  # another user is not affected


def test_a_close_never_redirects_off_the_console(store: ConsoleStore) -> None:
    client, csrf = login(store)
    for back in ("//evil.example/x", "/\\evil.example", "https://evil.example"):
        store.ingest_finding(finding("f-r", t=1_790_000_000_000 + len(back)))
        r = client.post("/findings/f-r/assign", data={"csrf": csrf, "back": back},
                        headers=ORIGIN, follow_redirects=False)  # fmt: skip
        assert r.headers["location"] == "/"


def test_a_long_queue_is_paged_with_its_count_and_only_the_first_page_is_live(
    store: ConsoleStore,
) -> None:
    for i in range(449):
        store.ingest_finding(finding(f"p-{i:03d}", title=f"Paged {i:03d}",
                                     t=1_790_000_000_000 + i))  # fmt: skip
    client, _ = login(store)
    first = client.get("/").text
    assert "450 matching, newest 200 shown" in first and 'sse-connect="/stream' in first
    assert "Paged 448" in first and "Paged 248" not in first
    seen = set(re.findall(r"Paged (\d{3})", first))
    page, pages = first, 1
    while (m := re.search(r'id="older" href="([^"]+)"', page)) is not None:
        page = client.get(m.group(1).replace("&amp;", "&")).text
        assert "sse-connect" not in page  # an older page does not take live rows
        seen |= set(re.findall(r"Paged (\d{3})", page))
        pages += 1
    assert pages == 3 and len(seen) == 449  # every finding once, across the pages
    filtered = client.get("/?severity=5").text
    assert "0 matching" in filtered and 'id="older"' not in filtered
