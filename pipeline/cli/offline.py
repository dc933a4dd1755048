"""Offline work on files and topics: ``custos evaluate``, ``replay``, ``export``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pipeline.cli.common import DURATION, settings_for


@click.command()
@click.option("--identities", default=1_000, show_default=True, help="Simulated population.")
@click.option("--duration", type=DURATION, default="2d", show_default=True)
@click.option("--seed", default=7, show_default=True)
@click.option("--events", "events_path", type=click.Path(exists=True, dir_okay=False),
              default=None,
              help="Events (JSONL or Parquet, the input contract) instead of simulating.")
@click.option("--labels", "labels_path", type=click.Path(exists=True, dir_okay=False),
              default=None, help="Labels file for --events (the simulator's).")
@click.option("--event-labels", "event_labels_path",
              type=click.Path(exists=True, dir_okay=False), default=None,
              help="Exact per-event labels for --events (custos simulate --event-labels); "
              "without it events are labelled by the campaigns' time windows.")
@click.option("--directory", "directory_path", type=click.Path(exists=True, dir_okay=False),
              default=None, help="Identity directory JSONL for --events.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write report.md, metrics.json and PNG plots into this directory.")
@click.option("--feedback", "feedback_path", type=click.Path(exists=True, dir_okay=False),
              default=None, help="Analyst feedback JSONL, replayed at each one's at_ms.")
@click.option("--no-directory", is_flag=True,
              help="Simulated runs: score without the population's identity directory "
              "(a deployment on day one).")
@click.option("--sweep", is_flag=True,
              help="Run every --worlds x --seeds, with and without a directory, in one table.")
@click.option("--worlds", default="all", show_default=True,
              help="Sweep: comma-separated worlds (sim:<profile>, agentdojo) or 'all'.")
@click.option("--seeds", default="1,2", show_default=True, help="Sweep: comma-separated seeds.")
@click.pass_context
def evaluate(
    ctx: click.Context, identities: int, duration: float, seed: int, events_path: str | None,
    labels_path: str | None, event_labels_path: str | None, directory_path: str | None,
    out_dir: Path | None, feedback_path: str | None, no_directory: bool, sweep: bool,
    worlds: str, seeds: str,
) -> None:
    """Detection quality per attack scenario on labelled traffic (same code as the worker)."""
    from pipeline.offline.evaluate import run_evaluation

    if sweep:
        from pipeline.offline.sweep import run_sweep, world_names

        names = world_names() if worlds == "all" else [w.strip() for w in worlds.split(",")]
        modes = (False,) if no_directory else (False, True)
        run_sweep(settings_for(ctx), names, [int(x) for x in seeds.split(",")],
                  identities=identities, duration_s=duration, directory_modes=modes,
                  out_dir=out_dir, echo=click.echo)  # fmt: skip
        return
    if events_path and not labels_path:
        raise click.UsageError("--events needs --labels")
    run_evaluation(settings_for(ctx), events_path=events_path, labels_path=labels_path,
                   event_labels_path=event_labels_path, directory_path=directory_path,
                   identities=identities, duration_s=duration, seed=seed, out_dir=out_dir,
                   echo=click.echo, feedback_path=feedback_path,
                   with_directory=not no_directory)


@click.command()
@click.argument("events", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True)
@click.option("--directory", "directory_path", type=click.Path(exists=True, dir_okay=False),
              default=None, help="Identity directory JSONL (default CUSTOS_DIRECTORY_FILE).")
@click.option("--feedback", "feedback_path", type=click.Path(exists=True, dir_okay=False),
              default=None, help="Analyst feedback JSONL, applied at each one's at_ms.")
@click.pass_context
def replay(
    ctx: click.Context, events: str, out_dir: str, directory_path: str | None,
    feedback_path: str | None,
) -> None:  # fmt: skip
    """Run an events file (JSONL or Parquet) through the worker's code path, without Kafka."""
    import dataclasses

    from pipeline.offline.replay import replay as run_replay

    settings = settings_for(ctx)
    if directory_path:
        settings = dataclasses.replace(settings, directory_file=directory_path)
    res = run_replay(settings, Path(events), Path(out_dir),
                     feedback_path=Path(feedback_path) if feedback_path else None)  # fmt: skip
    dead = ", ".join(f"{k} {v}" for k, v in sorted(res.dead_reasons.items())) or "none"
    model = f"{res.model['name']} {res.model['version']}" if res.model else "built-in cold start"
    click.echo(f"replayed {res.events:,} records in {res.seconds:.1f} s "
               f"({res.events_per_s:,.0f} events/s): {res.scored:,} scored, "
               f"{res.findings:,} findings ({res.alerts:,} alerts), {res.commands:,} quarantine "
               f"commands, {res.dead:,} dead letters ({dead}): every record scored or "
               f"dead-lettered; model at the end: {model}")
    click.echo(f"outputs in {out_dir}: alerts.jsonl quarantine.jsonl scores.parquet "
               "features.parquet deadletter.jsonl reports.jsonl")


class _Time(click.ParamType):
    """``--since`` / ``--until``: ``2h`` (ago), ``now``, ISO-8601 or epoch ms → epoch ms."""

    name = "time"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        from pipeline.offline.export import parse_time

        if isinstance(value, int):
            return int(value)
        try:
            return parse_time(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@click.command()
@click.option("--topic", "topics", multiple=True, required=True,
              help="Topic to export; repeat for several (one file, a 'topic' column).")
@click.option("--since", type=_Time(), default=None,
              help="Records with a timestamp at or after this: 2h (ago), ISO-8601, epoch ms. "
                   "Default: the beginning.")
@click.option("--until", type=_Time(), default=None,
              help="... and before this (exclusive). Default: the end, as of now.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Parquet file to write (replaced atomically).")
@click.option("--max-records", type=int, default=None, help="Stop after this many records.")
@click.option("--max-depth", type=int, default=4, show_default=True,
              help="Nested JSON objects become dotted columns to this depth; deeper: JSON text.")
@click.option("--row-group", type=int, default=50_000, show_default=True,
              help="Records per Parquet row group (bounds memory).")
@click.pass_context
def export(
    ctx: click.Context, topics: tuple[str, ...], since: int | None, until: int | None, out: Path,
    max_records: int | None, max_depth: int, row_group: int,
) -> None:  # fmt: skip
    """Records of topics in a time range to Parquet, JSON values flattened for pandas."""
    from pipeline.offline.export import export_topics

    res = export_topics(
        settings_for(ctx), list(topics), since, until, out,
        max_records=max_records, max_depth=max_depth, row_group=row_group,
    )  # fmt: skip
    click.echo(res.summary())


#: Registered on the root group by :mod:`pipeline.cli.main`.
COMMANDS: tuple[click.Command, ...] = (evaluate, replay, export,)
