"""``custos audit``: run the auditor; verify, prove and show the log."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pipeline.cli.common import settings_for


@click.group()
def audit() -> None:
    """The tamper-evident audit log: run the auditor, verify, prove, show."""


@audit.command("run")
@click.pass_context
def audit_run(ctx: click.Context) -> None:
    """The auditor: decisions in (alerts, quarantines, approvals, acks), records out."""
    import logging

    from pipeline.audit.auditor import run_auditor

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run_auditor(settings_for(ctx))


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

    settings = settings_for(ctx)
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

    settings = settings_for(ctx)
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

    settings = settings_for(ctx)
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


#: Registered on the root group by :mod:`pipeline.cli.main`.
COMMANDS: tuple[click.Command, ...] = (audit,)
