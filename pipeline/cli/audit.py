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
    from pipeline.audit.auditor import verify_log

    report = verify_log(settings_for(ctx), topic, checkpoints_dir,
                        Path(public_key) if public_key else None)  # fmt: skip
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
    import json

    from pipeline.audit.auditor import prove_record

    proof = prove_record(settings_for(ctx), seq, topic)
    if proof is None:
        raise click.ClickException(f"no checkpoint covers record {seq} yet")
    click.echo(json.dumps(proof, indent=2))


@audit.command("show")
@click.option("--identity", required=True)
@click.option("--topic", default=None)
@click.pass_context
def audit_show(ctx: click.Context, identity: str, topic: str | None) -> None:
    """An identity's decision history, readably."""
    from pipeline.audit.auditor import identity_history

    lines = identity_history(settings_for(ctx), identity, topic)
    for line in lines:
        click.echo(line)
    if not lines:
        click.echo(f"no records about {identity}")


#: Registered on the root group by :mod:`pipeline.cli.main`.
COMMANDS: tuple[click.Command, ...] = (audit,)
