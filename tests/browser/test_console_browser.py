"""The analyst console in a real browser: Debian's chromium driven by Playwright, headless.

Screenshots of each view go to ``build/artifacts/console/`` (look at them). Chromium must be
installed (``.ci/run`` installs it from Debian when it is missing): without it this fails.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, expect, sync_playwright

from pipeline.console.accounts import Accounts
from pipeline.console.store import ConsoleStore
from pipeline.console.web import create_console, row_id
from pipeline.ops.localhost import free_port
from tests.unit.console.test_web import PASSWORD, finding

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "build" / "artifacts" / "console"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ConsoleStore]]:
    store = ConsoleStore(tmp_path_factory.mktemp("console") / "console.db")
    accounts = Accounts(store)
    accounts.add("alice", PASSWORD, "analyst")
    accounts.add("victor", PASSWORD, "viewer")
    store.ingest_finding(finding("f-old", title="Impossible travel", kind="User", severity=3))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_console(store, poll_s=0.2), host="127.0.0.1",
                                           port=port, log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "console did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", store
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: apt-get install chromium"
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


def _login(browser: Browser, base: str, user: str) -> Page:
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    page.goto(base + "/")
    expect(page).to_have_url(base + "/login")
    page.fill("input[name=user]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("#who")).to_contain_text(user)
    return page


def test_an_analyst_sees_alerts_arrive_live_and_triages_them(
    served: tuple[str, ConsoleStore], browser: Browser
) -> None:
    base, store = served
    page = _login(browser, base, "alice")
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    expect(page.locator("table.queue")).to_contain_text("Impossible travel")
    page.evaluate("window.notReloaded = true")
    page.wait_for_timeout(500)  # the event stream is open

    store.ingest_finding(finding("f-live", title="Task credential reused by another agent",
                                 severity=5))  # fmt: skip
    row = page.locator(f"#{row_id('f-live')}")
    expect(row).to_contain_text("Task credential reused", timeout=10_000)
    assert page.evaluate("window.notReloaded") is True  # arrived without a reload
    page.screenshot(path=str(SHOTS / "queue.png"), full_page=True)

    # A newer version of the same finding replaces its row (one row per finding).
    store.ingest_finding(finding("f-live", title="Task credential reused, agent quarantined",
                                 severity=5, t=1_790_000_060_000))  # fmt: skip
    expect(row).to_contain_text("agent quarantined", timeout=10_000)
    assert page.locator(f"#{row_id('f-live')}").count() == 1

    row.get_by_role("button", name="Acknowledge").click()
    expect(page.locator(f"#{row_id('f-live')} td.status")).to_contain_text("acknowledged")

    page.click(f"#{row_id('f-live')} a[href^='/findings/']")
    expect(page.locator("h1")).to_contain_text("Task credential reused")
    page.screenshot(path=str(SHOTS / "finding.png"), full_page=True)
    page.select_option("select[name=classification]", "false_positive")
    page.fill("input[name=reason]", "agent owner confirmed the rerun")
    page.click("form.close button")
    expect(page.locator("#status")).to_have_text("closed")
    expect(page.locator("ul.history")).to_contain_text("alice")
    assert [a["user"] for a in store.actions("f-live")] == ["alice", "alice"]
    assert not [e for e in errors if "Content Security Policy" in e], errors


def test_a_viewer_is_refused_on_the_server_and_forgeries_fail(
    served: tuple[str, ConsoleStore], browser: Browser
) -> None:
    base, store = served
    page = _login(browser, base, "victor")
    expect(page.locator("table.queue")).to_contain_text("Impossible travel")
    assert page.get_by_role("button", name="Acknowledge").count() == 0
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    req = page.context.request
    origin = {"origin": base}
    r = req.post(base + "/findings/f-old/acknowledge", form={"csrf": csrf or ""}, headers=origin)
    assert r.status == 403 and "viewer" in r.text()
    r = req.post(base + "/containment/any/approve", form={"csrf": csrf or ""}, headers=origin)
    assert r.status == 403 and "approver" in r.text()
    analyst = _login(browser, base, "alice")
    forged = analyst.context.request.post(base + "/findings/f-old/acknowledge",
                                          form={}, headers=origin)  # fmt: skip
    assert forged.status == 403 and "CSRF" in forged.text()
    assert store.finding("f-old")["status"] == "new"  # type: ignore[index]
    page.screenshot(path=str(SHOTS / "viewer.png"), full_page=True)


def test_single_sign_on_across_sites_ends_logged_in_on_the_queue(
    served: tuple[str, ConsoleStore], browser: Browser
) -> None:
    """The whole sign-in in a real browser: the login page's link, the provider on another
    host (localhost; the console is on 127.0.0.1), its redirect back, the page that moves on,
    the queue with the linked account's local role."""
    from pipeline.console.oidc import OidcConfig, OidcLogin
    from tests.unit.console.fake_oidc import FakeProvider

    _, store = served
    op = FakeProvider(user={"sub": "u-77", "preferred_username": "sso-alice"})
    idp = op.start()
    Accounts(store).add("sso-alice", None, "analyst")
    Accounts(store).link("sso-alice", op.issuer, "u-77")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    oidc = OidcLogin(OidcConfig(issuer=op.issuer, client_id=op.client_id,
                                client_secret=op.client_secret, public_url=base,
                                label="Example IdP"))  # fmt: skip
    server = uvicorn.Server(uvicorn.Config(create_console(store, poll_s=0.2, oidc=oidc),
                                           host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "console did not start"
        time.sleep(0.05)
    try:
        page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        page.goto(base + "/login")
        page.click("a#sso")
        expect(page.locator("#who")).to_contain_text("sso-alice (analyst)", timeout=15_000)
        expect(page).to_have_url(base + "/")
        expect(page.locator("table.queue")).to_contain_text("Impossible travel")
        assert op.token_calls == 1
        page.screenshot(path=str(SHOTS / "sso.png"), full_page=True)
    finally:
        server.should_exit = True
        idp.should_exit = True
