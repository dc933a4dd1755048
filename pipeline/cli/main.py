"""The ``custos`` command. Thin: parses options and delegates to the modules it names."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import click

from pipeline.config import Settings
from pipeline.errors import CustosError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """'90s', '15m', '1h', '7d', '1w' or plain seconds → seconds.

    >>> parse_duration("1h"), parse_duration("90"), parse_duration("1.5d")
    (3600.0, 90.0, 129600.0)
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if m is None:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 15m, 1h, 7d")
    return float(m.group(1)) * _UNITS.get(m.group(2) or "s", 1)


class _Duration(click.ParamType):
    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        return value if isinstance(value, float) else parse_duration(str(value))


DURATION = _Duration()


#: Kafka principal of each command on a secure managed broker (pipeline.kafka.security): a
#: process may write only what its service writes. Commands not listed read only (console).
_PRINCIPALS = {
    "worker": "worker", "ingest": "worker", "respond": "responder", "audit run": "auditor",
    "broker": "broker", "simulate": "producer",
    "quarantine approve": "analyst", "quarantine release": "analyst", "feedback": "analyst",
    "agent-models register": "analyst", "agent-models approve": "analyst",
    "agent-models revoke": "analyst", "models promote": "analyst", "models rollback": "analyst",
    "kafka": "admin", "topics": "admin", "config": "admin", "demo": "admin", "bench": "admin",
    "bench-response": "admin",
}  # fmt: skip


def _principal(command_path: str) -> str:
    words = command_path.split()[1:]  # without the program name
    for n in range(len(words), 0, -1):
        got = _PRINCIPALS.get(" ".join(words[:n]))
        if got is not None:
            return got
    return "console"


def _settings(ctx: click.Context) -> Settings:
    obj = ctx.ensure_object(dict)
    if "settings" not in obj:
        obj["settings"] = Settings.from_env().as_principal(_principal(ctx.command_path))
    return obj["settings"]  # type: ignore[no-any-return]


class _Group(click.Group):
    """Turns any CustosError into a clear one-line message and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CustosError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.version_option(package_name="custos")
def main() -> None:
    """Custos: streaming behavioural detection for Zero Trust."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # librdkafka reports transient states (a coordinator still loading at first start) as
    # warnings; errors that matter surface as exceptions with context instead.
    logging.getLogger("custos.kafka.client").setLevel(logging.ERROR)


@main.command("config")
@click.pass_context
def config_cmd(ctx: click.Context) -> None:
    """Print the effective configuration (secrets masked)."""
    for name, var, value, doc in _settings(ctx).describe():
        click.echo(f"{name:<24} {value:<40} {var}\n{'':<24} {doc}")


# --- kafka -------------------------------------------------------------------------------------
@main.group()
def kafka() -> None:
    """Run the local single-node Kafka 4.x broker (KRaft) from Maven Central jars."""


def _broker(ctx: click.Context) -> Any:
    from pipeline.kafka.broker import Broker

    settings = _settings(ctx)
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
        with open(broker.server_log, errors="replace") as fh:
            fh.seek(0, 2)
            while True:
                line = fh.readline()
                if line:
                    click.echo(line, nl=False)
                else:
                    time.sleep(0.5)


# --- topics ------------------------------------------------------------------------------------
@main.group()
def topics() -> None:
    """Custos topics, declared in infra/topics.yaml."""


@topics.command("apply")
@click.option("--file", "path", type=click.Path(exists=True, dir_okay=False), default=None)
@click.pass_context
def topics_apply(ctx: click.Context, path: str | None) -> None:
    """Create or update the declared topics (idempotent)."""
    from pipeline.kafka.topics import apply_topics, load_topics

    settings = _settings(ctx)
    report = apply_topics(settings, load_topics(path or settings.topics_file))
    for line in report.lines():
        click.echo(line)


@topics.command("list")
@click.pass_context
def topics_list(ctx: click.Context) -> None:
    """List the declared topics and their settings."""
    from pipeline.kafka.topics import load_topics

    for spec in load_topics(_settings(ctx).topics_file):
        conf = ", ".join(f"{k}={v}" for k, v in spec.config.items())
        click.echo(f"{spec.name:<26} partitions={spec.partitions:<3} {conf}")


# --- simulate ----------------------------------------------------------------------------------
@main.command()
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
    settings = _settings(ctx)
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


# --- ingest / demo -----------------------------------------------------------------------------
@main.command()
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
    from pipeline.kafka.ingest import Ingest, final_report, summary_line
    from pipeline.ops import metrics

    settings = _settings(ctx)
    consumer = Ingest(settings, group_id=group)
    server = metrics.serve(consumer.stats, metrics_port) if metrics_port else None
    t0 = time.monotonic()
    last = 0.0
    try:
        while seconds is None or time.monotonic() - t0 < seconds:
            consumer.poll_batch(timeout=0.5)
            elapsed = time.monotonic() - t0
            if elapsed - last >= 2.0:
                click.echo(summary_line(consumer.stats, 0, elapsed, consumer.lag()))
                last = elapsed
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
        if server is not None:
            server.shutdown()
    total = consumer.stats.valid + consumer.stats.dead.total()
    for line in final_report(consumer.stats, total, time.monotonic() - t0):
        click.echo(line)


@main.command()
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
        run_sweep(_settings(ctx), names, [int(x) for x in seeds.split(",")],
                  identities=identities, duration_s=duration, directory_modes=modes,
                  out_dir=out_dir, echo=click.echo)  # fmt: skip
        return
    if events_path and not labels_path:
        raise click.UsageError("--events needs --labels")
    run_evaluation(_settings(ctx), events_path=events_path, labels_path=labels_path,
                   event_labels_path=event_labels_path, directory_path=directory_path,
                   identities=identities, duration_s=duration, seed=seed, out_dir=out_dir,
                   echo=click.echo, feedback_path=feedback_path,
                   with_directory=not no_directory)


@main.command()
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
@click.pass_context
def bench(
    ctx: click.Context, identities: int, duration: float, seed: int, offline_only: bool,
    paced_rate: float, paced_seconds: float, audit_records: int,
) -> None:  # fmt: skip
    """Throughput, latency and state size; prints a table, then one JSON line."""
    from pipeline.ops.bench import run_bench

    run_bench(
        _settings(ctx), identities=identities, duration_s=duration, seed=seed,
        kafka=not offline_only, paced_rate=paced_rate, paced_seconds=paced_seconds,
        audit_records=audit_records, echo=click.echo,
    )  # fmt: skip


@main.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """Broker, topics, worker lag and the running worker's metrics, in one screen."""
    from pipeline.ops.status import collect

    for line in collect(_settings(ctx)):
        click.echo(line)


@main.command()
@click.option("--loglevel", default="warning", show_default=True)
@click.pass_context
def worker(ctx: click.Context, loglevel: str) -> None:
    """Run the faust detection worker (consumer group CUSTOS_APP_ID) until interrupted."""
    from pipeline.stream.app import run_worker

    run_worker(_settings(ctx), loglevel=loglevel)


@main.command()
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

    settings = _settings(ctx)
    if port is not None:
        settings = dataclasses.replace(settings, broker_port=port)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    click.echo(f"credential broker on {settings.broker_url} (state {settings.broker_state_path})")
    run_broker(settings)


@main.group()
def quarantine() -> None:
    """Analyst decisions: list pending quarantines, approve one, release an identity."""


def _command_messages(settings: Any, topic: str) -> list[tuple[bytes, dict[str, Any]]]:
    import time as _time

    from pipeline.control.signing import trusted_keys
    from pipeline.kafka.clients import read_all
    from pipeline.quarantine.commands import CommandRejected, verify

    keys = trusted_keys(settings)
    out = []
    for m in read_all(settings, topic, timeout_s=5):
        try:
            out.append((m.key() or b"", verify(m.value() or b"", keys,
                                               now_ms=int(_time.time() * 1000),
                                               max_age_ms=10**12, executable=False)))  # fmt: skip
        except CommandRejected as exc:
            click.echo(f"skipping an invalid command at offset {m.offset()}: {exc}", err=True)
    return out


def _analyst_key(settings: Any) -> Any:
    """The key registry and model updates are signed with (the local command key)."""
    from pipeline.control.signing import command_key

    return command_key(settings.command_key_path, settings.command_jwks_path)


def _approver_key(settings: Any) -> Any:
    """This analyst's own key: approvals, releases and feedback."""
    from pipeline.control.signing import analyst_key

    return analyst_key(settings)


def _produce_one(settings: Any, topic: str, key: bytes, value: bytes, what: str) -> None:
    """Write one record and wait for it: a decision the CLI reports as sent must be sent."""
    from pipeline.kafka.clients import make_producer

    producer = make_producer(settings)
    producer.produce(topic, key=key, value=value)
    if producer.flush(30):
        raise click.ClickException(f"{what} was not delivered to {topic}")


def _send_command(settings: Any, key: bytes, message: dict[str, Any], what: str) -> None:
    """Sign an analyst's command with the command key and hand it to the responders."""
    from pipeline.quarantine.commands import sign

    signed = sign(message, _approver_key(settings))
    _produce_one(settings, settings.quarantine_topic, key, signed, what)


@quarantine.command("pending")
@click.pass_context
def quarantine_pending(ctx: click.Context) -> None:
    """Contain commands waiting for approval (CUSTOS_APPROVALS_TOPIC), newest per command."""
    from pipeline.quarantine.commands import request_of
    from pipeline.quarantine.decisions import describe

    latest: dict[str, dict[str, Any]] = {}
    for _, msg in _command_messages(_settings(ctx), _settings(ctx).approvals_topic):
        latest[str(request_of(msg)["command_id"])] = msg
    for msg in latest.values():
        click.echo(describe(msg))
    if not latest:
        click.echo("nothing pending")


@quarantine.command("approve")
@click.argument("command_id")
@click.option("--by", required=True, help="Who approves (recorded in the command).")
@click.pass_context
def quarantine_approve(ctx: click.Context, command_id: str, by: str) -> None:
    """Approve a pending contain command: it goes to the responders, signed."""
    import time as _time

    from pipeline.quarantine.commands import request_of
    from pipeline.quarantine.decisions import approve

    settings = _settings(ctx)
    found = [(k, m) for k, m in _command_messages(settings, settings.approvals_topic)
             if request_of(m)["command_id"] == command_id]  # fmt: skip
    if not found:
        raise click.ClickException(f"no pending command {command_id}")
    key, pending = found[-1]
    message = approve(pending, by=by, now_ms=int(_time.time() * 1000))
    _send_command(settings, key, message, "the approved command")
    click.echo(
        f"approved {command_id} ({key.decode()}): request {message['headers']['request_id']}"
    )


@quarantine.command("release")
@click.argument("identity")
@click.option("--command", "command_id", default=None, help="The contain command to cancel.")
@click.option("--finding", default=None, help="Or the finding uid whose quarantine to cancel.")
@click.option("--by", required=True)
@click.option("--reason", required=True)
@click.pass_context
def quarantine_release(
    ctx: click.Context, identity: str, command_id: str | None, finding: str | None, by: str,
    reason: str,
) -> None:  # fmt: skip
    """Release IDENTITY: a signed cancel of its contain command; responders lift the block."""
    import time as _time

    from pipeline.quarantine.commands import command_id_for
    from pipeline.quarantine.decisions import release

    if (command_id is None) == (finding is None):
        raise click.UsageError("give exactly one of --command or --finding")
    settings = _settings(ctx)
    cid = command_id or command_id_for(str(finding))
    message = release(identity, command_id=cid, reason=reason, by=by,
                      now_ms=int(_time.time() * 1000))  # fmt: skip
    _send_command(settings, identity.encode(), message, "the release")
    click.echo(f"release of {identity} (command {cid}) sent")


@main.group()
def audit() -> None:
    """The tamper-evident audit log: run the auditor, verify, prove, show."""


@audit.command("run")
@click.pass_context
def audit_run(ctx: click.Context) -> None:
    """The auditor: decisions in (alerts, quarantines, approvals, acks), records out."""
    import logging

    from pipeline.audit.auditor import run_auditor

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run_auditor(_settings(ctx))


@audit.command("verify")
@click.option("--topic", default=None, help="Verify another copy of the log (default: the log).")
@click.option(
    "--checkpoints",
    "checkpoints_dir",
    default=None,
    help="A folder of checkpoint files instead of the checkpoints topic.",
)
@click.option("--public-key", default=None, help="PEM of the checkpoint key (default: ours).")
@click.pass_context
def audit_verify(
    ctx: click.Context, topic: str | None, checkpoints_dir: str | None, public_key: str | None
) -> None:  # fmt: skip
    """Recompute the log's hashes and checkpoints; exit 1 naming what is wrong."""
    from pipeline.audit.auditor import load_public, public_key_path, read_log
    from pipeline.audit.log import verify

    settings = _settings(ctx)
    pub_path = Path(public_key) if public_key else public_key_path(settings.home_path)
    entries, texts = read_log(settings, topic, checkpoints_dir)
    report = verify(entries, texts, settings.audit_origin, load_public(pub_path))
    if report.ok:
        click.echo(f"OK: {report.records:,} records, {report.checkpoints} checkpoints verified "
                   f"({report.unsigned_tail} newest await the next checkpoint)")  # fmt: skip
        return
    for p in report.problems:
        click.echo(f"TAMPERED: {p}")
    sys.exit(1)


@audit.command("prove")
@click.argument("seq", type=int)
@click.option("--topic", default=None)
@click.pass_context
def audit_prove(ctx: click.Context, seq: int, topic: str | None) -> None:
    """An RFC 6962 inclusion proof of record SEQ in the newest checkpointed tree."""
    import json as _json

    from pipeline.audit.auditor import load_public, public_key_path, read_log
    from pipeline.audit.checkpoint import verify_checkpoint
    from pipeline.audit.log import prove

    settings = _settings(ctx)
    entries, texts = read_log(settings, topic, None)
    pub = load_public(public_key_path(settings.home_path))
    sizes = [verify_checkpoint(t, settings.audit_origin, pub).size for t in texts]
    size = max((s for s in sizes if s > seq), default=None)
    if size is None:
        raise click.ClickException(f"no checkpoint covers record {seq} yet")
    out = prove(entries, seq, size)
    out["checkpoint"] = next(t for t in texts if f"\n{size}\n" in t)
    click.echo(_json.dumps(out, indent=2))


@audit.command("show")
@click.option("--identity", required=True)
@click.option("--topic", default=None)
@click.pass_context
def audit_show(ctx: click.Context, identity: str, topic: str | None) -> None:
    """An identity's decision history, readably."""
    import datetime as _dt

    import msgspec

    from pipeline.audit.auditor import read_log

    settings = _settings(ctx)
    entries, _ = read_log(settings, topic, None)
    n = 0
    for e in entries:
        r = msgspec.json.decode(e)
        if r.get("subject") != identity:
            continue
        n += 1
        when = _dt.datetime.fromtimestamp(r["time"] / 1000, tz=_dt.UTC).strftime(
            "%Y-%m-%d %H:%M:%S"
        )
        why = "; ".join(str(x) for x in r.get("why", {}).get("explanation", []) if x)
        click.echo(f"#{r['seq']:<6} {when}  {r['kind']:<28} by {r.get('actor')}")
        if why:
            click.echo(f"        why: {why[:300]}")
        said = r.get("why", {}).get("rationale") or []
        if said:
            click.echo(f"        agent said: {' | '.join(map(str, said))[:300]}")
        refs = {k: v for k, v in r.get("refs", {}).items() if v and k != "source"}
        if refs:
            click.echo(f"        refs: {refs}")
    if not n:
        click.echo(f"no records about {identity}")


@main.command()
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

    settings = _settings(ctx)
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


# --- export --------------------------------------------------------------------------------------
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


@main.command()
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
        _settings(ctx), list(topics), since, until, out,
        max_records=max_records, max_depth=max_depth, row_group=row_group,
    )  # fmt: skip
    click.echo(res.summary())


@main.group()
def feedback() -> None:
    """Analyst feedback to the worker (custos.feedback): confirm, false-positive, release..."""


def _send_feedback(ctx: click.Context, **fields: Any) -> None:
    from pipeline.control.feedback import Feedback, new_uid
    from pipeline.control.signing import sign_feedback

    settings = _settings(ctx)
    try:
        fb = Feedback(uid=new_uid(), at_ms=int(time.time() * 1000),
                      **{k: v for k, v in fields.items() if v is not None})  # fmt: skip
    except (ValueError, TypeError) as exc:
        raise click.UsageError(str(exc)) from None
    # Signed with the analyst's command key: workers act on signed, fresh feedback only.
    _produce_one(settings, settings.feedback_topic, fb.identity.encode(),
                 sign_feedback(fb, _approver_key(settings)), "feedback")  # fmt: skip
    click.echo(f"{fb.action} {fb.identity} ({fb.uid}) sent; the worker's answer and the audit "
               f"record follow on {settings.reports_topic} and {settings.audit_topic}")  # fmt: skip


def _feedback_command(action: str, doc: str, *extra: Any) -> None:
    def cmd(ctx: click.Context, identity: str, finding: str | None, by: str, reason: str,
            **kw: Any) -> None:  # fmt: skip
        if "for_" in kw:
            dur = kw.pop("for_")
            kw["until_ms"] = int(time.time() * 1000 + dur * 1000) if dur else None
        _send_feedback(ctx, action=action.replace("-", "_"), identity=identity,
                       finding_uid=finding, by=by, reason=reason, **kw)  # fmt: skip

    cmd.__doc__ = doc
    for deco in reversed([
        feedback.command(action),
        click.argument("identity"),
        click.option("--finding", default=None, help="The finding it is about (default: open)."),
        click.option("--by", required=True, help="Who decides, e.g. analyst:alice."),
        click.option("--reason", required=True),
        *extra,
        click.pass_context,
    ]):  # fmt: skip
        cmd = deco(cmd)


_feedback_command("confirm", "The compromise is real: quarantine now, approved by you.")
_feedback_command(
    "false-positive",
    "Close the incident, lift its quarantine; --learn teaches its held events as normal.",
    click.option("--learn", "learn_as_normal", is_flag=True, default=None,
                 help="Learn the events kept out of the baseline as normal."),
)  # fmt: skip
_feedback_command("release", "Cancel the incident's quarantine.")
_feedback_command(
    "suppress",
    "Silence the identity (or one --feature / rule) for a while.",
    click.option("--feature", default=None, help="A feature or rule name; default: all."),
    click.option("--for", "for_", type=DURATION, required=True, help="How long, e.g. 24h."),
)  # fmt: skip


@main.group("agent-models")
def agent_models() -> None:
    """The registry of approved AI-agent models: list it, register, approve, revoke builds."""


@agent_models.command("list")
@click.pass_context
def agent_models_list(ctx: click.Context) -> None:
    """The registry file (CUSTOS_MODEL_ALLOWLIST_FILE) with the topic's updates applied."""
    from pipeline.control.signing import trusted_keys, verify_agent_model_update
    from pipeline.kafka.clients import read_all
    from pipeline.scores.agent_models import (
        AgentModelRegistry,
        InvalidAgentModelUpdate,
        load_agent_model_registry,
    )

    settings = _settings(ctx)
    reg = (load_agent_model_registry(settings.model_allowlist_file)
           if settings.model_allowlist_file else AgentModelRegistry())  # fmt: skip
    keys = trusted_keys(settings)
    refused = 0
    for m in read_all(settings, settings.agent_models_topic, timeout_s=10):
        try:  # what the workers apply: signed updates only
            reg.apply(verify_agent_model_update(m.value() or b"", keys))
        except InvalidAgentModelUpdate:
            refused += 1
    if refused:
        click.echo(f"({refused} update(s) on {settings.agent_models_topic} refused: unsigned, "
                   "untrusted or invalid)")  # fmt: skip
    for b in reg:
        by = f"revoked by {b.revoked_by}: {b.revoked_reason}" if b.status == "revoked" else (
            f"approved by {b.approved_by or '?'}")  # fmt: skip
        click.echo(f"{b.status:<8} {b.name} {b.version} {b.digest[:19]}… trained by "
                   f"{b.trained_by or '?'}; {by}")  # fmt: skip


def _agent_model_update(ctx: click.Context, **fields: Any) -> None:
    from pipeline.control.signing import sign_agent_model_update
    from pipeline.scores.agent_models import AgentModelUpdate

    settings = _settings(ctx)
    try:
        update = AgentModelUpdate(**{k: v for k, v in fields.items() if v is not None})
    except (ValueError, TypeError) as exc:
        raise click.UsageError(str(exc)) from None
    _produce_one(settings, settings.agent_models_topic, update.key(),
                 sign_agent_model_update(update, _analyst_key(settings)), "update")  # fmt: skip
    click.echo(f"{update.action} {update.name} {update.version} {update.digest[:19]}… sent to "
               f"{settings.agent_models_topic}; every worker applies it")  # fmt: skip


_BUILD = [click.argument("name"), click.argument("version"), click.argument("digest")]


def _build_args(f: Any) -> Any:
    for deco in reversed(_BUILD):
        f = deco(f)
    return f


@agent_models.command("register")
@_build_args
@click.option("--trained-by", default=None)
@click.option("--lineage", default=None, help="Training data lineage (free text).")
@click.option("--by", "approved_by", required=True, help="Who approves it.")
@click.pass_context
def agent_models_register(
    ctx: click.Context, name: str, version: str, digest: str, trained_by: str | None,
    lineage: str | None, approved_by: str,
) -> None:  # fmt: skip
    """Add an approved build (or update its provenance)."""
    _agent_model_update(ctx, action="register", name=name, version=version, digest=digest,
                        trained_by=trained_by, lineage=lineage,
                        approved_by=approved_by)  # fmt: skip


@agent_models.command("approve")
@_build_args
@click.option("--by", "approved_by", required=True)
@click.pass_context
def agent_models_approve(
    ctx: click.Context, name: str, version: str, digest: str, approved_by: str
) -> None:
    """Approve a build, reinstating it if it was revoked."""
    _agent_model_update(ctx, action="approve", name=name, version=version, digest=digest,
                        approved_by=approved_by)  # fmt: skip


@agent_models.command("revoke")
@_build_args
@click.option("--by", "revoked_by", required=True)
@click.option("--reason", required=True)
@click.pass_context
def agent_models_revoke(
    ctx: click.Context, name: str, version: str, digest: str, revoked_by: str, reason: str
) -> None:
    """Revoke a build: every agent running it trips model_provenance (High) from now on."""
    _agent_model_update(ctx, action="revoke", name=name, version=version, digest=digest,
                        revoked_by=revoked_by, reason=reason)  # fmt: skip


@main.group()
def models() -> None:
    """Custos's own signed models: list, verify, train, sign, promote, roll back."""


def _registry(settings: Any) -> Any:
    from pipeline.models.registry import ModelRegistry

    return ModelRegistry(settings.models_dir)


def _announce(settings: Any, promo: Any, action: str, by: str, reason: str) -> None:
    """Tell running workers (``custos.models``), signed with the command key (the analyst's).

    Workers accept only signed announcements, and still verify the version before swapping.
    """
    from pipeline.models.runtime import Announcement, encode_announcement

    a = Announcement(action, promo.name, promo.version, promo.manifest_sha256, by,  # type: ignore[arg-type]
                     int(time.time() * 1000), reason)  # fmt: skip
    _produce_one(settings, settings.models_topic, promo.name.encode(),
                 encode_announcement(a, _analyst_key(settings)), "announcement")  # fmt: skip


@models.command("list")
@click.pass_context
def models_list(ctx: click.Context) -> None:
    """Every version in the registry, its signature status and which one is promoted."""
    from pipeline.models.manifest import ModelRefused, verify
    from pipeline.models.runtime import ModelRuntime

    settings = _settings(ctx)
    runtime = ModelRuntime(settings, "cli")
    reg = runtime.registry
    click.echo(f"registry {reg.root} · {len(runtime.trusted)} trusted key(s)")
    for name in reg.names():
        promo = reg.promoted(name)
        for version in reg.versions(name):
            try:
                signed = reg.read(name, version)
                m = signed.manifest
                try:
                    verify(signed, runtime.trusted)
                    sig = "signed ✓"
                except ModelRefused:
                    sig = "UNTRUSTED"
                rate = m.metrics.get("detection_rate")
                fp = m.metrics.get("false_alerts_per_1000_identity_days")
                quality = f"detect {rate:.0%} fp {fp}/1k id-days" if rate is not None else ""
                line = (f"{name:<10} {version:<6} {m.kind:<7} {m.created_at}  {sig:<9} "
                        f"{m.trainer:<18} {quality}")  # fmt: skip
            except ModelRefused as exc:
                line = f"{name:<10} {version:<6} UNREADABLE {exc}"
            mark = "* " if promo is not None and promo.version == version else "  "
            click.echo(mark + line)


@models.command("verify")
@click.argument("name", required=False)
@click.argument("version", required=False)
@click.pass_context
def models_verify(ctx: click.Context, name: str | None, version: str | None) -> None:
    """Full check (signature, artifact hash, feature schema, safe decode) of versions."""
    from pipeline.models.manifest import ModelRefused
    from pipeline.models.runtime import ModelRuntime

    runtime = ModelRuntime(_settings(ctx), "cli")
    reg = runtime.registry
    bad = 0
    for n in [name] if name else reg.names():
        for v in [version] if version else reg.versions(n):
            try:
                loaded = reg.load(n, v, runtime.trusted)
                click.echo(f"OK      {n} {v} manifest {loaded.manifest_sha256[:16]}… "
                           f"artifact {loaded.manifest.artifact_sha256[:16]}…")  # fmt: skip
            except ModelRefused as exc:
                bad += 1
                click.echo(f"REFUSED {n} {v}: {exc}")
    if bad:
        raise SystemExit(1)


@models.command("sign")
@click.argument("name")
@click.argument("version")
@click.option("--key", "key_path", type=click.Path(dir_okay=False), default=None,
              help="Ed25519 PEM (default CUSTOS_MODEL_SIGNING_KEY).")  # fmt: skip
@click.pass_context
def models_sign(ctx: click.Context, name: str, version: str, key_path: str | None) -> None:
    """Add a signature to an existing version (e.g. an approver's key after the trainer's)."""
    from pipeline.control.keys import key_id, load_or_create

    settings = _settings(ctx)
    key = load_or_create(Path(key_path) if key_path else settings.model_signing_key_path)
    signed = _registry(settings).add_signature(name, version, key)
    click.echo(f"{name} {version}: signed by {key_id(key.public_key())} "
               f"({len(signed.signatures)} signature(s))")  # fmt: skip


@models.command("train")
@click.option("--identities", default=1_000, show_default=True, help="Simulated population.")
@click.option("--duration", type=DURATION, default="1d", show_default=True)
@click.option("--seed", default=3, show_default=True, help="Training simulation seed.")
@click.option("--events", "events_path", type=click.Path(exists=True, dir_okay=False),
              default=None, help="Train on these JSONL events instead of simulating.")  # fmt: skip
@click.option("--eval-seed", default=11, show_default=True, help="Held-out simulation seed.")
@click.option("--eval-identities", default=500, show_default=True)
@click.option("--eval-duration", type=DURATION, default="1d", show_default=True)
@click.option("--version", "version", default=None, help="Default: next integer.")
@click.option("--trainer", default=None, help="Who trains (default: $USER@custos).")
@click.option("--promote", is_flag=True, help="Promote it (registry only; no announcement).")
@click.pass_context
def models_train(
    ctx: click.Context, identities: int, duration: float, seed: int, events_path: str | None,
    eval_seed: int, eval_identities: int, eval_duration: float, version: str | None,
    trainer: str | None, promote: bool,
) -> None:  # fmt: skip
    """Train the shared detector offline, evaluate it on held-out traffic, publish it signed."""
    from pipeline.control.keys import key_id, load_or_create
    from pipeline.models.train import train_and_publish

    settings = _settings(ctx)
    key = load_or_create(settings.model_signing_key_path)
    folder, manifest = train_and_publish(
        settings, key, identities=identities, duration_s=duration, seed=seed,
        events_path=Path(events_path) if events_path else None, eval_seed=eval_seed,
        eval_identities=eval_identities, eval_duration_s=eval_duration, version=version,
        trainer=trainer or f"{os.environ.get('USER', 'unknown')}@custos", echo=click.echo,
    )  # fmt: skip
    click.echo(f"published {manifest.name} {manifest.version} at {folder}, signed by "
               f"{key_id(key.public_key())}")  # fmt: skip
    if promote:
        _registry(settings).promote(manifest.name, manifest.version, by=manifest.trainer,
                                    reason="trained and promoted")  # fmt: skip
        click.echo(f"promoted {manifest.name} {manifest.version}")


@models.command("promote")
@click.argument("name")
@click.argument("version")
@click.option("--by", required=True, help="Who decides (recorded in history and audit).")
@click.option("--reason", default="", help="Why.")
@click.option("--no-announce", is_flag=True, help="Only record it; running workers not told.")
@click.pass_context
def models_promote(
    ctx: click.Context, name: str, version: str, by: str, reason: str, no_announce: bool
) -> None:
    """Make VERSION the one to run; running workers verify it and hot-swap."""
    from pipeline.models.manifest import ModelRefused
    from pipeline.models.runtime import ModelRuntime

    settings = _settings(ctx)
    runtime = ModelRuntime(settings, "cli")
    try:  # never promote what a worker would refuse
        runtime.registry.load(name, version, runtime.trusted)
    except ModelRefused as exc:
        raise click.ClickException(f"not promoting: {exc}") from None
    promo = runtime.registry.promote(name, version, by=by, reason=reason)
    if not no_announce:
        _announce(settings, promo, "promote", by, reason)
    click.echo(f"promoted {name} {version} (manifest {promo.manifest_sha256[:16]}…)"
               + ("" if no_announce else f", announced on {settings.models_topic}"))  # fmt: skip


@models.command("rollback")
@click.argument("name")
@click.option("--by", required=True)
@click.option("--reason", default="")
@click.option("--no-announce", is_flag=True)
@click.pass_context
def models_rollback(
    ctx: click.Context, name: str, by: str, reason: str, no_announce: bool
) -> None:
    """Promote again the version that ran before the current one."""
    settings = _settings(ctx)
    promo = _registry(settings).rollback(name, by=by, reason=reason)
    if not no_announce:
        _announce(settings, promo, "rollback", by, reason)
    click.echo(f"rolled {name} back to {promo.version}")


@main.command("bench-response")
@click.option("--compromises", default=30, show_default=True, help="Agents compromised in turn.")
@click.option("--load", default=2000.0, show_default=True, help="Background events/s.")
@click.option("--identities", default=5_000, show_default=True)
@click.pass_context
def bench_response(ctx: click.Context, compromises: int, load: float, identities: int) -> None:
    """Event -> credential revoked latency under load (broker, worker, responder processes)."""
    from pipeline.ops.bench_response import run_bench_response

    run_bench_response(_settings(ctx), compromises=compromises, load=load,
                       identities=identities, echo=click.echo)  # fmt: skip


@main.command()
@click.pass_context
def respond(ctx: click.Context) -> None:
    """Run a responder: verify quarantine commands, revoke through the adapters, acknowledge.

    A consumer group (CUSTOS_RESPONDER_GROUP) on CUSTOS_QUARANTINE_TOPIC; answers go to
    CUSTOS_ACKS_TOPIC; adapters from CUSTOS_RESPONDER_ADAPTERS.
    """
    import logging

    from pipeline.responders.responder import run_responder

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run_responder(_settings(ctx))


@main.command()
@click.option("--identities", default=1_500, show_default=True)
@click.option(
    "--duration", type=DURATION, default="1d", show_default=True, help="Simulated event-time span."
)
@click.option("--seed", default=7, show_default=True)
@click.option(
    "--rate", type=float, default=None, help="Target events/s (default: as fast as possible)."
)
@click.pass_context
def demo(
    ctx: click.Context, identities: int, duration: float, seed: int, rate: float | None
) -> None:
    """End to end: Kafka up, topics applied, simulated traffic streamed in, live summary."""
    from pipeline.ops.demo import run_demo

    run_demo(
        _settings(ctx),
        identities=identities,
        duration_s=duration,
        seed=seed,
        rate=rate,
        echo=click.echo,
    )


if __name__ == "__main__":
    main()
