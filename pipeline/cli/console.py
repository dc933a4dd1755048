"""The analyst console: ``custos console`` serves it, ``custos console users`` manages accounts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from pipeline.cli.common import settings_for


def _db(ctx: click.Context, db: str | None) -> Path:
    from pipeline.console.store import default_path

    return Path(db) if db else default_path(settings_for(ctx).home)


_DB = click.option("--db", type=click.Path(dir_okay=False), default=None,
                   help="The console's store (SQLite); default <home>/console/console.db.")


@click.group("console", invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8077, show_default=True)
@click.option("--from", "from_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Serve a `custos replay` output directory instead of following Kafka.")
@click.option("--secure-cookies", is_flag=True,
              help="Mark cookies Secure (serving behind a TLS proxy).")
@click.option("--worker", "workers", multiple=True,
              help="A worker's web server to ask for identity baselines (repeatable); "
              "default: the local worker's.")
@click.option("--two-person", is_flag=True,
              help="An approver cannot approve the quarantine of a compromise they confirmed.")
@click.option("--oidc-issuer", default=None,
              help="Single sign-on: the OpenID Connect issuer URL (discovery); the client "
              "secret comes from CUSTOS_CONSOLE_OIDC_SECRET.")
@click.option("--oidc-client-id", default=None, help="Single sign-on: this console's client id.")
@click.option("--oidc-label", default="single sign-on", show_default=True,
              help="What the login page calls the identity provider.")
@click.option("--public-url", default=None,
              help="This console's URL as browsers reach it (the OIDC redirect); "
              "default http://HOST:PORT.")
@_DB
@click.pass_context
def console(ctx: click.Context, host: str, port: int, from_dir: str | None,
            secure_cookies: bool, workers: tuple[str, ...], two_person: bool,
            oidc_issuer: str | None, oidc_client_id: str | None, oidc_label: str,
            public_url: str | None, db: str | None) -> None:  # fmt: skip
    """Serve the analyst console (alert queue, findings) until interrupted."""
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from pipeline.console.decisions import KafkaSender
    from pipeline.console.follow import Follower, load_replay
    from pipeline.console.store import ConsoleStore
    from pipeline.console.web import create_console

    oidc = None
    if oidc_issuer or oidc_client_id:
        from pipeline.console.oidc import OidcConfig, OidcLogin

        oidc = OidcLogin(OidcConfig(
            issuer=oidc_issuer or "", client_id=oidc_client_id or "",
            client_secret=os.environ.get("CUSTOS_CONSOLE_OIDC_SECRET", ""),
            public_url=public_url or f"http://{host}:{port}", label=oidc_label))  # fmt: skip
    store = ConsoleStore(_db(ctx, db))
    if not store.query("SELECT 1 FROM users LIMIT 1"):
        click.echo("no console account yet: add one with `custos console users add NAME "
                   "--role analyst` (password on stdin)", err=True)  # fmt: skip
    follower = None
    settings = settings_for(ctx)
    if from_dir:
        n = load_replay(store, Path(from_dir))
        click.echo(f"loaded {n:,} findings from {from_dir} (read-only: decisions need Kafka)")
        app = create_console(store, secure_cookies=secure_cookies, oidc=oidc)
    else:
        from pipeline.config import Settings

        follower = Follower(settings, store).start()
        # Reads as the read-only console principal; decisions go out as the analysts' one
        # (the ACL plan lets only it write feedback and quarantine commands).
        writer = Settings.from_env().as_principal("analyst")
        from pipeline.credentials.broker import load_read_token

        app = create_console(store, secure_cookies=secure_cookies, settings=settings,
                             send=KafkaSender(writer), two_person=two_person,
                             workers=workers or (f"http://127.0.0.1:{settings.worker_web_port}",),
                             broker=(settings.broker_url, load_read_token(settings)), oidc=oidc)
    click.echo(f"console: http://{host}:{port}/")
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        if follower is not None:
            follower.stop()


@console.group("users")
def users() -> None:
    """Console accounts (local, argon2-hashed passwords)."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["viewer", "analyst", "approver"]), required=True)
@click.option("--sso-only", is_flag=True,
              help="No password: this account logs in only by single sign-on (see `link`).")
@_DB
@click.pass_context
def users_add(ctx: click.Context, name: str, role: str, sso_only: bool, db: str | None) -> None:
    """Create NAME (or reset its password and role); the password is read from stdin."""
    from pipeline.console.accounts import Accounts
    from pipeline.console.store import ConsoleStore

    password: str | None = None
    if sso_only:
        pass
    elif sys.stdin.isatty():  # typed: not echoed, asked twice
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\n")
    Accounts(ConsoleStore(_db(ctx, db))).add(name, password, role)
    click.echo(f"{name}: {role}{' (single sign-on only)' if sso_only else ''}")


@users.command("link")
@click.argument("name")
@click.option("--issuer", required=True, help="The OpenID Connect issuer URL (exactly as its "
              "ID tokens' iss).")
@click.option("--sub", required=True, help="The subject (sub claim) that logs in as NAME.")
@_DB
@click.pass_context
def users_link(ctx: click.Context, name: str, issuer: str, sub: str, db: str | None) -> None:
    """Let one single sign-on identity log in as NAME (NAME keeps its own role)."""
    from pipeline.console.accounts import Accounts
    from pipeline.console.store import ConsoleStore

    Accounts(ConsoleStore(_db(ctx, db))).link(name, issuer, sub)
    click.echo(f"{name}: {sub} of {issuer}")


@users.command("list")
@_DB
@click.pass_context
def users_list(ctx: click.Context, db: str | None) -> None:
    """Accounts and their roles."""
    from pipeline.console.accounts import Accounts
    from pipeline.console.store import ConsoleStore

    for name, role in Accounts(ConsoleStore(_db(ctx, db))).users():
        click.echo(f"{name}\t{role}")


@users.command("logout")
@click.argument("name")
@_DB
@click.pass_context
def users_logout(ctx: click.Context, name: str, db: str | None) -> None:
    """End every session of NAME now (a lost laptop, a leaver)."""
    from pipeline.console.accounts import Accounts
    from pipeline.console.store import ConsoleStore

    n = Accounts(ConsoleStore(_db(ctx, db))).logout_all(name)
    click.echo(f"{name}: {n} session(s) ended")


COMMANDS: tuple[click.Command, ...] = (console,)
