"""``custos console``: accounts from the command line, and the server on a replay directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from click.testing import CliRunner

from pipeline.cli.main import main
from pipeline.console.accounts import Accounts
from pipeline.console.store import ConsoleStore
from pipeline.ops.localhost import free_port, healthy, stop, wait_until
from tests.unit.console.test_web import finding


def test_users_are_added_listed_and_logged_out_from_the_cli(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    runner = CliRunner()
    r = runner.invoke(main, ["console", "users", "add", "alice", "--role", "approver", "--db", db],
                      input="a long enough password\n")  # fmt: skip
    assert r.exit_code == 0, r.output
    short = runner.invoke(main, ["console", "users", "add", "bob", "--role", "viewer",
                                 "--db", db], input="short\n")  # fmt: skip
    assert short.exit_code == 1 and "at least 12" in short.output
    listed = runner.invoke(main, ["console", "users", "list", "--db", db]).output
    assert listed == "alice\tapprover\n"
    assert Accounts(ConsoleStore(db)).login("alice", "a long enough password") is not None
    out = runner.invoke(main, ["console", "users", "logout", "alice", "--db", db]).output
    assert "1 session(s) ended" in out


def test_a_single_sign_on_account_is_added_and_linked_from_the_cli(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    runner = CliRunner()
    r = runner.invoke(main, ["console", "users", "add", "carol", "--role", "analyst",
                             "--sso-only", "--db", db])  # fmt: skip
    assert r.exit_code == 0 and "single sign-on only" in r.output, r.output
    link = ["console", "users", "link", "carol", "--issuer", "https://idp.example", "--sub",
            "00u1", "--db", db]  # fmt: skip
    assert runner.invoke(main, link).exit_code == 0
    accounts = Accounts(ConsoleStore(db))
    assert accounts.login("carol", "") is None
    got = accounts.login_linked("https://idp.example", "00u1")
    assert got is not None and got[2] == "carol"
    assert accounts.login_linked("https://other.example", "00u1") is None  # issuer counts
    bad = runner.invoke(main, ["console", "users", "link", "nobody", "--issuer",
                               "https://idp.example", "--sub", "x", "--db", db])  # fmt: skip
    assert bad.exit_code == 1 and "no account 'nobody'" in bad.output
    plain = runner.invoke(main, ["console", "users", "link", "carol", "--issuer",
                                 "http://idp.example", "--sub", "x", "--db", db])  # fmt: skip
    assert plain.exit_code == 1 and "https" in plain.output


def test_the_console_serves_a_replay_directory(tmp_path: Path) -> None:
    replay = tmp_path / "replay"
    replay.mkdir()
    (replay / "alerts.jsonl").write_text(json.dumps(finding("r-1", title="From a replay")) + "\n")
    port = free_port()
    env = {**os.environ, "HOME": str(tmp_path), "CUSTOS_HOME": str(tmp_path / ".custos")}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "console", "--from", str(replay),
                             "--port", str(port), "--db", str(tmp_path / "c.db")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_until(lambda: healthy(f"http://127.0.0.1:{port}"), 60, "console up")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=5) as r:
            assert r.status == 200 and b"Log in" in r.read()
    finally:
        stop([proc])
    assert ConsoleStore(tmp_path / "c.db").finding("r-1") is not None
