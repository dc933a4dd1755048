"""Operating Custos: ``custos config``, ``status``, ``demo``, ``bench``, ``bench-response``."""

from __future__ import annotations

import click

from pipeline.cli.common import DURATION, settings_for

#: The demo's pace into Kafka: a busy tenant's rate, which one worker keeps up with on two
#: shared cores beside the broker, responder, auditor and console (measured: docs/SCALING.md).
DEMO_RATE = 4_000.0


@click.command("config")
@click.pass_context
def config_cmd(ctx: click.Context) -> None:
    """Print the effective configuration (secrets masked)."""
    for name, var, value, doc in settings_for(ctx).describe():
        click.echo(f"{name:<24} {value:<40} {var}\n{'':<24} {doc}")


@click.command()
@click.option("--identities", default=10_000, show_default=True)
@click.option(
    "--duration",
    type=DURATION,
    default="2h",
    show_default=True,
    help="Simulated event time to generate and score.",
)
@click.option("--seed", default=7, show_default=True)
@click.option("--offline-only", is_flag=True, help="Skip the Kafka and worker phases.")
@click.option(
    "--paced-rate",
    default=2000.0,
    show_default=True,
    help="Events/s of the latency phase (worker caught up).",
)
@click.option("--paced-seconds", default=30.0, show_default=True)
@click.option(
    "--audit-records", default=0, show_default=True,
    help="Also measure the audit log: an auditor works through this many findings while a "
    "second worker drains the events (0: skip).",
)  # fmt: skip
@click.option(
    "--response-load", default=2000.0, show_default=True,
    help="Background events/s while 10 agents are compromised in turn: event → credential "
    "revoked (custos bench-response; 0: skip).",
)  # fmt: skip
@click.option(
    "--memory-identities", default=0, show_default=True,
    help="Also measure a worker holding this many identity states (copies of the run's own, "
    "restored from a changelog; 1000000 for the issue-14 figure; 0: skip).",
)  # fmt: skip
@click.option(
    "--console-alerts", default=0, show_default=True,
    help="Also time the analyst console's pages with this many open alerts in its store "
    "(10000 for the issue-15 figure; 0: skip; no Kafka needed).",
)  # fmt: skip
@click.pass_context
def bench(
    ctx: click.Context, identities: int, duration: float, seed: int, offline_only: bool,
    paced_rate: float, paced_seconds: float, audit_records: int, response_load: float,
    memory_identities: int, console_alerts: int,
) -> None:  # fmt: skip
    """Throughput, latency and state size; prints a table, then one JSON line."""
    from pipeline.ops.bench import run_bench

    run_bench(
        settings_for(ctx), identities=identities, duration_s=duration, seed=seed,
        kafka=not offline_only, paced_rate=paced_rate, paced_seconds=paced_seconds,
        audit_records=audit_records, response_load=response_load,
        memory_identities=memory_identities, console_alerts=console_alerts, echo=click.echo,
    )  # fmt: skip


@click.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """Broker, topics, worker lag and the running worker's metrics, in one screen."""
    from pipeline.ops.status import collect

    for line in collect(settings_for(ctx)):
        click.echo(line)


@click.command("bench-response")
@click.option("--compromises", default=30, show_default=True, help="Agents compromised in turn.")
@click.option("--load", default=2000.0, show_default=True, help="Background events/s.")
@click.option("--identities", default=5_000, show_default=True)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Worker processes in one consumer group, sharing the input partitions.")
@click.pass_context
def bench_response(
    ctx: click.Context, compromises: int, load: float, identities: int, workers: int
) -> None:
    """Event -> credential revoked latency under load (broker, worker, responder processes).

    --workers N starts N workers in one group (they split the worker_partitions input
    partitions); the compromises start once the group owns them all.
    """
    from pipeline.ops.bench_response import run_bench_response

    run_bench_response(settings_for(ctx), compromises=compromises, load=load,
                       identities=identities, workers=workers, echo=click.echo)  # fmt: skip


@click.command()
@click.option("--identities", default=1_500, show_default=True)
@click.option(
    "--duration", type=DURATION, default="1d", show_default=True, help="Simulated event-time span."
)
@click.option("--seed", default=7, show_default=True)
@click.option(
    "--rate", type=float, default=DEMO_RATE, show_default=True,
    help="Events/s into Kafka (0: as fast as the simulator can, which one worker does not keep "
    "up with).",
)
@click.pass_context
def demo(
    ctx: click.Context, identities: int, duration: float, seed: int, rate: float | None
) -> None:
    """End to end: Kafka up, topics applied, simulated traffic streamed in, live summary."""
    from pipeline.ops.demo import run_demo

    run_demo(
        settings_for(ctx),
        identities=identities,
        duration_s=duration,
        seed=seed,
        rate=rate or None,
        echo=click.echo,
    )


#: Registered on the root group by :mod:`pipeline.cli.main`.
COMMANDS: tuple[click.Command, ...] = (config_cmd, status, demo, bench, bench_response,)
