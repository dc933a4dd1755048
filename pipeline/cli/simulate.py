"""``custos simulate``: synthetic, labelled traffic into Kafka or a file."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.common import DURATION, settings_for


@click.command()
@click.option("--identities", default=10_000, show_default=True, help="Population size.")
@click.option(
    "--duration",
    type=DURATION,
    default="1h",
    show_default=True,
    help="Simulated event-time span (90s, 15m, 1h, 7d).",
)
@click.option("--seed", default=7, show_default=True)
@click.option(
    "--start",
    "start_ms",
    type=int,
    default=None,
    help="Event-time start (ms since epoch); default: now minus the duration.",
)
@click.option(
    "--rate", type=float, default=None, help="Target events/s (default: as fast as possible)."
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to a .jsonl or .parquet file instead of Kafka.",
)
@click.option(
    "--labels",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the ground-truth labels (JSONL).",
)
@click.option(
    "--event-labels",
    "event_labels",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write exact per-event labels (malicious event uid -> campaign), JSONL.",
)
@click.option(
    "--directory",
    "directory_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the population's identity directory (JSONL) for replay / evaluate.",
)
@click.option("--no-attacks", is_flag=True, help="Only normal behaviour.")
@click.option(
    "--profile",
    default="default",
    show_default=True,
    help="Population profile: default, secret_services, heavy_tail, shift_travel, "
    "agent_fleet, bursty_batch, peer_mix (pipeline.simulate.profiles).",
)
@click.pass_context
def simulate(
    ctx: click.Context, identities: int, duration: float, seed: int, start_ms: int | None,
    rate: float | None, out: Path | None, labels: Path | None, event_labels: Path | None,
    directory_out: Path | None, no_attacks: bool, profile: str,
) -> None:  # fmt: skip
    """Simulate humans, services and AI agents (with labelled attacks) into Kafka or a file."""
    from pipeline.simulate import simulate as run
    from pipeline.simulate.profiles import PROFILES
    from pipeline.simulate.sinks import open_sink

    if profile not in PROFILES:
        raise click.BadParameter(
            f"unknown profile {profile!r}; known: {', '.join(sorted(PROFILES))}",
            param_hint="--profile",
        )
    settings = settings_for(ctx)
    sink = open_sink(settings, out)
    report = run(
        settings, identities=identities, duration_s=duration, seed=seed, start_ms=start_ms,
        rate=rate, sink=sink, labels_path=labels, attacks=not no_attacks, progress=True,
        event_labels_path=event_labels, profile=profile,
    )  # fmt: skip
    where = str(out) if out else f"Kafka at {settings.bootstrap_servers}"
    click.echo(
        f"{report.events:,} events for {identities:,} identities into {where} "
        f"in {report.wall_s:.1f} s ({report.events_per_s:,.0f} events/s)"
    )
    for topic, n in sorted(report.per_topic.items()):
        click.echo(f"  {topic:<20} {n:>10,}")
    if labels:
        click.echo(f"{report.campaigns} attack campaigns labelled in {labels}")
    if directory_out:
        from pipeline.simulate.directory import write_directory
        from pipeline.simulate.profiles import build_population

        n = write_directory(
            build_population(identities, seed=seed, profile=profile), directory_out
        )
        click.echo(f"{n:,} directory entries in {directory_out}")


#: Registered on the root group by :mod:`pipeline.cli.main`.
COMMANDS: tuple[click.Command, ...] = (simulate,)
