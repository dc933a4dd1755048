"""Single sign-on (OIDC, Authlib) against a local provider: a linked subject logs in with its
local role; a hostile or broken provider's answer logs nobody in."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.testclient import TestClient

from pipeline.console.accounts import Accounts
from pipeline.console.oidc import OidcConfig, OidcLogin
from pipeline.console.store import ConsoleStore
from pipeline.console.web import COOKIE, OIDC_COOKIE, create_console
from pipeline.errors import ConfigError
from tests.unit.console.fake_oidc import FakeProvider
from tests.unit.console.test_web import ORIGIN

PUBLIC = "http://127.0.0.1:8077"


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    op = FakeProvider()
    server = op.start()
    yield op
    server.should_exit = True


@pytest.fixture
def store(provider: FakeProvider) -> ConsoleStore:
    provider.tamper = None
    provider.user = {"sub": "u-1001", "preferred_username": "alice", "role": "approver"}
    s = ConsoleStore(":memory:")
    accounts = Accounts(s)
    accounts.add("alice", None, "viewer")  # single sign-on only
    accounts.link("alice", provider.issuer, "u-1001")
    return s


def console(store: ConsoleStore, op: FakeProvider) -> TestClient:
    oidc = OidcLogin(OidcConfig(issuer=op.issuer, client_id=op.client_id,
                                client_secret=op.client_secret, public_url=PUBLIC,
                                label="Example IdP"))  # fmt: skip
    return TestClient(create_console(store, oidc=oidc))


def sign_in(client: TestClient) -> httpx.Response:
    """The browser's round trip: console → provider → console's callback."""
    start = client.get("/login/oidc", follow_redirects=False)
    assert start.status_code == 302, start.text
    to_idp = start.headers["location"]
    q = parse_qs(urlsplit(to_idp).query)
    assert q["code_challenge_method"] == ["S256"] and q["nonce"] and q["state"]
    assert q["redirect_uri"] == [PUBLIC + "/login/oidc/callback"]
    assert "samesite=lax" in start.headers["set-cookie"].lower()
    back = httpx.get(to_idp, follow_redirects=False)
    assert back.status_code == 302
    callback = urlsplit(back.headers["location"])
    return client.get(f"{callback.path}?{callback.query}", follow_redirects=False)


def test_a_linked_subject_signs_in_with_its_local_role(
    store: ConsoleStore, provider: FakeProvider
) -> None:
    client = console(store, provider)
    assert "sign in with Example IdP" in client.get("/login").text
    done = sign_in(client)
    assert done.status_code == 200 and "Signed in as alice" in done.text
    assert 'http-equiv="refresh" content="0;url=/"' in done.text  # moves on by itself
    cookie = done.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "SameSite=strict" in cookie and "HttpOnly" in cookie
    page = client.get("/")
    assert "alice (viewer)" in page.text  # the local role; the provider's "role" claim is not
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = client.post("/findings/x/acknowledge", data={"csrf": csrf}, headers=ORIGIN)
    assert r.status_code == 403  # a viewer, whatever the provider said


def test_an_unlinked_subject_and_a_password_for_a_sso_only_account_get_no_session(
    store: ConsoleStore, provider: FakeProvider
) -> None:
    provider.user = {"sub": "u-2002", "preferred_username": "alice"}  # same name, other sub
    client = console(store, provider)
    r = sign_in(client)
    assert r.status_code == 403 and "no console account is linked" in r.text
    assert COOKIE not in client.cookies
    # No password logs in an account made for single sign-on, not even the dummy's.
    accounts = Accounts(store)
    assert accounts.login("alice", "") is None
    assert accounts.login("alice", "not a password of anyone") is None


@pytest.mark.parametrize("tamper", ["key", "aud", "iss", "nonce", "expired", "no_id_token",
                                    "discovery_issuer"])  # fmt: skip
def test_a_hostile_or_broken_providers_answer_logs_nobody_in(
    store: ConsoleStore, provider: FakeProvider, tamper: str
) -> None:
    provider.tamper = tamper
    client = console(store, provider)
    r = sign_in(client) if tamper != "discovery_issuer" else None
    if r is None:  # discovery names another issuer: refused at the callback too
        start = client.get("/login/oidc", follow_redirects=False)
        back = httpx.get(start.headers["location"], follow_redirects=False)
        callback = urlsplit(back.headers["location"])
        r = client.get(f"{callback.path}?{callback.query}", follow_redirects=False)
    assert r.status_code == 403, (tamper, r.text)
    assert COOKIE not in client.cookies


def test_a_forged_state_or_a_replayed_code_is_refused(
    store: ConsoleStore, provider: FakeProvider
) -> None:
    client = console(store, provider)
    start = client.get("/login/oidc", follow_redirects=False)
    back = httpx.get(start.headers["location"], follow_redirects=False)
    callback = urlsplit(back.headers["location"])
    code = parse_qs(callback.query)["code"][0]
    # An attacker's code and state pushed into another browser (login CSRF): no handshake.
    other = console(store, provider)
    r = other.get(f"{callback.path}?code={code}&state=forged", follow_redirects=False)
    assert r.status_code == 403 and COOKIE not in other.cookies
    ok = client.get(f"{callback.path}?{callback.query}", follow_redirects=False)
    assert ok.status_code == 200
    # The same callback again: its state was used up, the code too.
    again = console(store, provider)
    again.cookies.set(OIDC_COOKIE, client.cookies.get(OIDC_COOKIE) or "")
    assert again.get(f"{callback.path}?{callback.query}").status_code == 403


def test_an_unreachable_provider_and_bad_configuration(store: ConsoleStore) -> None:
    from pipeline.ops.localhost import free_port

    gone = OidcLogin(OidcConfig(issuer=f"http://127.0.0.1:{free_port()}", client_id="c",
                                client_secret="s", public_url=PUBLIC))  # fmt: skip
    client = TestClient(create_console(store, oidc=gone))
    assert client.get("/login/oidc", follow_redirects=False).status_code == 502
    with pytest.raises(ConfigError):
        OidcConfig(issuer="http://idp.example", client_id="c", client_secret="s",
                   public_url=PUBLIC)  # plain http off loopback
    with pytest.raises(ConfigError):
        OidcConfig(issuer="https://idp.example", client_id="c", client_secret="",
                   public_url=PUBLIC)  # no secret
    plain = TestClient(create_console(store))
    assert plain.get("/login/oidc").status_code == 404
    assert "sign in with" not in plain.get("/login").text
    with pytest.raises(ConfigError):
        Accounts(store).link("nobody", "https://idp.example", "u-1")
