"""``custos kafka`` (the local broker's lifecycle) and ``custos topics``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from pipeline.cli.common import settings_for

if TYPE_CHECKING:
    from pipeline.kafka.broker import Broker


@click.group()
def kafka() -> None:
    """Run the local single-node Kafka 4.x broker (KRaft) from Maven Central jars; k8s manifests."""


def _broker(ctx: click.Context) -> Broker:
    """The managed broker; on an existing cluster (CUSTOS_BOOTSTRAP) say so and exit 0."""
    from pipeline.kafka.broker import Broker

    settings = settings_for(ctx)
    if not settings.managed_broker:
        click.echo(f"CUSTOS_BOOTSTRAP={settings.bootstrap}: using that cluster, nothing to manage")
        ctx.exit(0)
    return Broker(settings)


@kafka.command("up")
@click.pass_context
def kafka_up(ctx: click.Context) -> None:
    """Fetch jars (once), format storage (once), start and wait until it answers."""
    broker = _broker(ctx)
    started, secs = broker.up()
    if started:
        click.echo(f"kafka started in {secs:.1f} s on {broker.settings.bootstrap_servers}")
    else:
        click.echo(f"kafka already running on {broker.settings.bootstrap_servers}")


@kafka.command("down")
@click.pass_context
def kafka_down(ctx: click.Context) -> None:
    """Stop the broker cleanly; its data stays for the next `up`."""
    broker = _broker(ctx)
    click.echo("kafka stopped" if broker.down() else "kafka was not running")


@kafka.command("status")
@click.pass_context
def kafka_status(ctx: click.Context) -> None:
    """Say whether the broker runs and answers."""
    status = _broker(ctx).status()
    click.echo(status.describe())
    ctx.exit(0 if status.answering else 3)


@kafka.command("logs")
@click.option("-n", "--lines", default=50, show_default=True)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.pass_context
def kafka_logs(ctx: click.Context, lines: int, follow: bool) -> None:
    """Print the end of the broker's log."""
    broker = _broker(ctx)
    click.echo(broker.tail(lines), nl=False)
    if follow:
        for line in broker.follow():
            click.echo(line, nl=False)


@kafka.command("tools", context_settings={"ignore_unknown_options": True,
                                           "allow_extra_args": True, "help_option_names": []})
@click.argument("name", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def kafka_tools(ctx: click.Context, name: str | None, args: tuple[str, ...]) -> None:
    """Run one of Kafka's own tools (consumer-groups, console-consumer, get-offsets, ...) from
    the cached jars, connected and authenticated like Custos; with no NAME, list them."""
    import subprocess

    from pipeline.kafka.broker import Broker
    from pipeline.kafka.tools import TOOLS, java_properties, tool_command, write_properties

    if name is None or name not in TOOLS:
        if name is not None and name not in ("-h", "--help"):
            click.echo(f"no tool {name!r}", err=True)
        for tool, spec in TOOLS.items():
            click.echo(f"  {tool:<17} {spec.help}")
        click.echo("e.g. custos kafka tools consumer-groups --describe --all-groups "
                   "(arguments go to the tool; --help prints its own)")  # fmt: skip
        ctx.exit(0 if name is None or name in ("-h", "--help") else 2)
    settings = settings_for(ctx)
    client = settings.client_config()
    props = write_properties(java_properties(client))
    try:
        cmd = tool_command(Broker(settings).tool_jvm(), name, list(args),
                           client["bootstrap.servers"], props)  # fmt: skip
        code = subprocess.run(cmd, check=False).returncode
    finally:
        props.unlink(missing_ok=True)
    ctx.exit(code)


@kafka.command("k8s")
@click.option("--out", type=click.Path(file_okay=False), default="infra/k8s", show_default=True,
              help="Directory the manifests are written to.")
@click.option("--image", default="custos:latest", show_default=True, help="The worker's image.")
@click.pass_context
def kafka_k8s(ctx: click.Context, out: str, image: str) -> None:
    """Write Strimzi and KEDA manifests generated from infra/topics.yaml and the ACL plan.

    Needs no broker: it only reads the settings and the topics file.
    """
    from pipeline.kafka.k8s import render_all, write_all
    from pipeline.stream.app import internal_topics  # imports faust: only when asked

    settings = settings_for(ctx)
    for path in write_all(render_all(settings, internal_topics(settings), image=image), out):
        click.echo(f"wrote {path}")


@click.group()
def topics() -> None:
    """Custos topics, declared in infra/topics.yaml."""


@topics.command("apply")
@click.option("--file", "path", type=click.Path(exists=True, dir_okay=False), default=None)
@click.pass_context
def topics_apply(ctx: click.Context, path: str | None) -> None:
    """Create or update the declared topics (idempotent)."""
    from pipeline.kafka.topics import apply_topics, load_topics

    settings = settings_for(ctx)
    report = apply_topics(settings, load_topics(path or settings.topics_file))
    for line in report.lines():
        click.echo(line)


@topics.command("list")
@click.pass_context
def topics_list(ctx: click.Context) -> None:
    """List the declared topics and their settings."""
    from pipeline.kafka.topics import load_topics

    for spec in load_topics(settings_for(ctx).topics_file):
        conf = ", ".join(f"{k}={v}" for k, v in spec.config.items())
        click.echo(f"{spec.name:<26} partitions={spec.partitions:<3} {conf}")


#: Registered on the root group by :mod:`pipeline.cli.main`.
COMMANDS: tuple[click.Command, ...] = (kafka, topics,)
