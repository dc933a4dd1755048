"""The analyst console: ``custos console`` serves it, ``custos console users`` manages accounts."""

from __future__ import annotations

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
@_DB
@click.pass_context
def console(ctx: click.Context, host: str, port: int, from_dir: str | None,
            secure_cookies: bool, workers: tuple[str, ...], two_person: bool,
            db: str | None) -> None:  # fmt: skip
    """Serve the analyst console (alert queue, findings) until interrupted."""
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from pipeline.console.decisions import KafkaSender
    from pipeline.console.follow import Follower, load_replay
    from pipeline.console.store import ConsoleStore
    from pipeline.console.web import create_console

    store = ConsoleStore(_db(ctx, db))
    if not store.query("SELECT 1 FROM users LIMIT 1"):
        click.echo("no console account yet: add one with `custos console users add NAME "
                   "--role analyst` (password on stdin)", err=True)  # fmt: skip
    follower = None
    settings = settings_for(ctx)
    if from_dir:
        n = load_replay(store, Path(from_dir))
        click.echo(f"loaded {n:,} findings from {from_dir} (read-only: decisions need Kafka)")
        app = create_console(store, secure_cookies=secure_cookies)
    else:
        from pipeline.config import Settings

        follower = Follower(settings, store).start()
        # Reads as the read-only console principal; decisions go out as the analysts' one
        # (the ACL plan lets only it write feedback and quarantine commands).
        writer = Settings.from_env().as_principal("analyst")
        from pipeline.credentials.broker import load_api_token

        app = create_console(store, secure_cookies=secure_cookies, settings=settings,
                             send=KafkaSender(writer), two_person=two_person,
                             workers=workers or (f"http://127.0.0.1:{settings.worker_web_port}",),
                             broker=(settings.broker_url, load_api_token(settings)))
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
@_DB
@click.pass_context
def users_add(ctx: click.Context, name: str, role: str, db: str | None) -> None:
    """Create NAME (or reset its password and role); the password is read from stdin."""
    from pipeline.console.accounts import Accounts
    from pipeline.console.store import ConsoleStore

    if sys.stdin.isatty():  # typed: not echoed, asked twice
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\n")
    Accounts(ConsoleStore(_db(ctx, db))).add(name, password, role)
    click.echo(f"{name}: {role}")


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
