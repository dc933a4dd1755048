"""The console end to end on the real broker, in chromium: an agent is compromised, the worker
asks for approval, an approver approves in the console, the responder's 200 answer arrives on
the finding's page and the agent is cut off; an analyst marks the incident a false positive,
the worker closes it and lifts the quarantine, and the audit log names both analysts.

Worker, credential broker, responder and auditor each run as their own process; the console
runs in this process (its follower, its Kafka sender, uvicorn), like ``custos console``.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, expect, sync_playwright

from pipeline.config import Settings, env_var
from pipeline.console.accounts import Accounts
from pipeline.console.decisions import KafkaSender
from pipeline.console.follow import Follower
from pipeline.console.store import ConsoleStore
from pipeline.console.web import create_console
from pipeline.kafka.clients import make_producer
from pipeline.ops.localhost import call_json, free_port, healthy
from tests.browser.test_console_browser import CHROMIUM, SHOTS
from tests.integration.test_quarantine_e2e import AGENT, _call, _env, _wait
from tests.unit.console.test_web import PASSWORD


@pytest.fixture
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: apt-get install chromium"
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


def test_approve_in_the_console_cuts_the_agent_off_and_a_false_positive_closes_it(
    isolated: Settings, tmp_path: Path, browser: Browser
) -> None:
    broker_port = free_port()
    tag = f"{os.getpid()}-{int(time.time())}"
    env = _env(isolated, tmp_path, broker_port=str(broker_port), worker_web_port=str(free_port()),
               app_id=f"console-e2e-{tag}", responder_group=f"console-e2e-responders-{tag}",
               auditor_group=f"console-e2e-auditor-{tag}", audit_topic=isolated.audit_topic,
               audit_checkpoints_topic=isolated.audit_checkpoints_topic,
               quarantine_auto_min_severity="6")  # fmt: skip  # every contain waits for a human
    settings = dataclasses.replace(isolated, home=str(tmp_path / "home"),
                                   app_id=f"console-e2e-{tag}")  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> None:
        log = open(tmp_path / f"{args[0]}.log", "ab")
        procs.append(subprocess.Popen([sys.executable, "-m", "pipeline", *args], env=env,
                                      stdout=log, stderr=subprocess.STDOUT))  # fmt: skip

    def logs() -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in tmp_path.glob("*.log"))

    store = ConsoleStore(tmp_path / "console.db")
    accounts = Accounts(store)
    accounts.add("alice", PASSWORD, "analyst")
    accounts.add("bob", PASSWORD, "approver")
    follower: Follower | None = None
    server: uvicorn.Server | None = None
    try:
        start("broker")
        base = f"http://127.0.0.1:{broker_port}"
        _wait(lambda: healthy(base), 30, "broker up")
        token = (tmp_path / "broker" / "api-token").read_text().strip()
        start("worker")
        _wait(lambda: settings.command_jwks_path.exists(), 60, "worker key: " + logs())
        start("respond")
        start("audit", "run")
        follower = Follower(settings, store).start()
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(
            create_console(store, poll_s=0.2, settings=settings, send=KafkaSender(settings),
                           workers=(f"http://127.0.0.1:{env[env_var('worker_web_port')]}",),
                           broker=(base, (tmp_path / "broker" / "read-token").read_text().strip())),
            host="127.0.0.1", port=port, log_level="warning"))  # fmt: skip
        threading.Thread(target=server.run, daemon=True).start()
        _wait(lambda: server.started, 20, "console up")  # type: ignore[union-attr]
        console = f"http://127.0.0.1:{port}"

        status, issued = call_json("POST", f"{base}/v1/credentials", token,
                                   {"agent": AGENT, "task": "task-1", "step": 1,
                                    "scope": ["crm.read"]})  # fmt: skip
        assert status == 201
        use = {"agent": AGENT, "task": "task-1", "step": 1, "operation": "crm.read"}

        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.goto(console + "/login")
        page.fill("input[name=user]", "bob")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        expect(page.locator("#who")).to_contain_text("bob")
        page.wait_for_timeout(500)

        # The compromise: the agent calls with a credential issued to another agent.
        producer = make_producer(isolated)
        stolen = {"uid": "cred-of-agt-x", "issued_to": "agt-x"}
        producer.produce(isolated.agent_topic, key=AGENT.encode(),
                         value=_call("attack-console", int(time.time() * 1000), stolen))
        assert producer.flush(30) == 0
        expect(page.locator("table.queue")).to_contain_text(AGENT, timeout=90_000)  # live
        page.screenshot(path=str(SHOTS / "e2e-queue.png"), full_page=True)

        def pending() -> bool:
            page.goto(console + "/containment")
            return page.locator("table.pending button", has_text="Approve").count() > 0

        _wait(pending, 60, "a pending contain in the console: " + logs())
        assert call_json("POST", f"{base}/v1/access", issued["credential"], use)[0] == 200
        page.screenshot(path=str(SHOTS / "e2e-containment.png"), full_page=True)
        page.locator("table.pending button", has_text="Approve").first.click()
        _wait(lambda: call_json("POST", f"{base}/v1/access", issued["credential"], use)[0] == 403,
              60, "the agent cut off after the approval: " + logs())  # fmt: skip

        finding_uid = store.commands()[0]["finding_uid"]

        def answered() -> bool:
            page.goto(f"{console}/findings/{finding_uid}")
            return page.locator("tr.answer-200").count() > 0

        _wait(answered, 60, "the responder's 200 answer on the finding's page")
        # The identity page: the worker's baseline charted (Vega-Lite, under the strict CSP).
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.click(f"a[href='/identities/{AGENT}']")
        expect(page.locator("#chart-hours svg")).to_be_visible(timeout=15_000)
        expect(page.locator("#chart-numeric svg")).to_be_visible()
        expect(page.locator("#chart-risk svg")).to_be_visible()
        expect(page.locator("table.known").first).to_contain_text("operation")
        # Its task credential from the credential broker: issued, used once, revoked by the
        # quarantine, and the refused use after it.
        creds = page.locator("table.creds").first
        expect(creds).to_contain_text("task-1 / 1")
        expect(creds).to_contain_text("revoked")
        expect(creds).to_contain_text("crm.read")
        expect(page.locator("table.creds").nth(1)).to_contain_text("revoked")
        page.screenshot(path=str(SHOTS / "e2e-identity.png"), full_page=True)
        assert not errors, errors
        page.goto(f"{console}/findings/{finding_uid}")
        expect(page.locator("ul.history")).to_contain_text("bob · approved")
        page.screenshot(path=str(SHOTS / "e2e-finding-answered.png"), full_page=True)

        # Alice, an analyst, decides it was a false positive.
        alice = browser.new_context().new_page()
        alice.goto(console + "/login")
        alice.fill("input[name=user]", "alice")
        alice.fill("input[name=password]", PASSWORD)
        alice.click("button[type=submit]")
        alice.goto(f"{console}/findings/{finding_uid}")
        fp = alice.locator("form[action$='/false_positive']")
        fp.locator("input[name=reason]").fill("agent owner reran the task on purpose")
        fp.locator("button").click()

        def closed() -> bool:
            f = store.finding(finding_uid)
            return f is not None and f["status"] == "closed"

        _wait(closed, 60, "the worker closed the incident: " + logs())
        alice.goto(f"{console}/findings/{finding_uid}")
        expect(alice.locator(".explanation")).to_contain_text("analyst:alice")
        alice.screenshot(path=str(SHOTS / "e2e-false-positive.png"), full_page=True)
        again = {"agent": AGENT, "task": "task-2", "step": 1, "scope": ["crm.read"]}
        _wait(lambda: call_json("POST", f"{base}/v1/credentials", token, again)[0] == 201,
              60, "the quarantine lifted by the false positive")  # fmt: skip

        from pipeline.audit.auditor import read_log

        def audited() -> bool:
            entries, _ = read_log(settings)
            text = b"\n".join(entries)
            return b"analyst:bob" in text and b"analyst:alice" in text

        _wait(audited, 60, "the audit log naming both analysts: " + logs())
        # The audit page: verified now (once the auditor signed a checkpoint), the agent's
        # history names who approved.
        from pipeline.audit.auditor import verify_log

        page.goto(f"{console}/audit")
        if verify_log(settings).checkpoints == 0:
            expect(page.locator("#verdict")).to_contain_text("Not verifiable yet")
        _wait(lambda: verify_log(settings).ok, 90, "a signed checkpoint: " + logs())
        page.goto(f"{console}/audit?identity={AGENT}&seq=0")
        expect(page.locator("#verdict")).to_contain_text("Verified")
        expect(page.locator("#audit-history")).to_contain_text("analyst:bob")
        assert page.locator("#proof").count() + page.get_by_text("No checkpoint covers").count()
        page.screenshot(path=str(SHOTS / "e2e-audit.png"), full_page=True)
    finally:
        if server is not None:
            server.should_exit = True
        if follower is not None:
            follower.stop()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
