"""The long-running processes: ``custos worker``, ``ingest``, ``respond``, ``broker``."""

from __future__ import annotations

import click

from pipeline.cli.common import settings_for


@click.command()
@click.option("--seconds", type=float, default=None, help="Stop after this long (default: Ctrl-C).")
@click.option("--group", default=None, help="Consumer group (default CUSTOS_GROUP_ID).")
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Serve Prometheus counters on 127.0.0.1:PORT/metrics.",
)
@click.pass_context
def ingest(
    ctx: click.Context, seconds: float | None, group: str | None, metrics_port: int | None
) -> None:
    """Validate the input topics live: count what arrives, dead-letter what is malformed."""
    from pipeline.kafka.ingest import run_ingest

    run_ingest(settings_for(ctx), seconds=seconds, group_id=group, metrics_port=metrics_port,
               echo=click.echo)  # fmt: skip


@click.command()
@click.option("--loglevel", default="warning", show_default=True)
@click.pass_context
def worker(ctx: click.Context, loglevel: str) -> None:
    """Run the detection worker (consumer group CUSTOS_APP_ID) until interrupted."""
    from pipeline.stream.app import run_worker

    run_worker(settings_for(ctx), loglevel=loglevel)


@click.command()
@click.option("--port", type=int, default=None, help="Override CUSTOS_BROKER_PORT.")
@click.pass_context
def broker(ctx: click.Context, port: int | None) -> None:
    """Run the credential broker (ephemeral task credentials, revocation, quarantine blocks).

    HTTP on 127.0.0.1; the signing key, API token and credential database live in
    CUSTOS_BROKER_STATE_DIR (created on first run). Refused uses go to CUSTOS_REJECTIONS_TOPIC.
    """
    import dataclasses
    import logging

    from pipeline.credentials.broker import run_broker

    settings = settings_for(ctx)
    if port is not None:
        settings = dataclasses.replace(settings, broker_port=port)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    click.echo(f"credential broker on {settings.broker_url} (state {settings.broker_state_path})")
    run_broker(settings)


@click.command()
@click.pass_context
def respond(ctx: click.Context) -> None:
    """Run a responder: verify quarantine commands, revoke through the adapters, acknowledge.

    A consumer group (CUSTOS_RESPONDER_GROUP) on CUSTOS_QUARANTINE_TOPIC; answers go to
    CUSTOS_ACKS_TOPIC; adapters from CUSTOS_RESPONDER_ADAPTERS.
    """
    import logging

    from pipeline.responders.responder import run_responder

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run_responder(settings_for(ctx))


#: Registered on the root group by :mod:`pipeline.cli.main`.
COMMANDS: tuple[click.Command, ...] = (worker, ingest, respond, broker,)
