"""The analyst's decisions: ``custos quarantine``, ``feedback``, ``agent-models``."""

from __future__ import annotations

import time
from typing import Any

import click

from pipeline.cli.common import DURATION, analyst_key, approver_key, produce_one, settings_for


@click.group()
def quarantine() -> None:
    """Analyst decisions: list pending quarantines, approve one, release an identity."""


def _skipped(offset: int | None, exc: Exception) -> None:
    click.echo(f"skipping an invalid command at offset {offset}: {exc}", err=True)


def _send_command(settings: Any, key: bytes, message: dict[str, Any], what: str) -> None:
    """Sign an analyst's command with the command key and hand it to the responders."""
    from pipeline.quarantine.commands import sign

    signed = sign(message, approver_key(settings))
    produce_one(settings, settings.quarantine_topic, key, signed, what)


@quarantine.command("pending")
@click.pass_context
def quarantine_pending(ctx: click.Context) -> None:
    """Contain commands waiting for approval (CUSTOS_APPROVALS_TOPIC), newest per command."""
    from pipeline.quarantine.decisions import describe, pending

    latest = pending(settings_for(ctx), on_invalid=_skipped)
    for _, msg in latest.values():
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

    from pipeline.quarantine.decisions import approve, pending

    settings = settings_for(ctx)
    found = pending(settings, on_invalid=_skipped).get(command_id)
    if found is None:
        raise click.ClickException(f"no pending command {command_id}")
    key, waiting = found
    message = approve(waiting, by=by, now_ms=int(_time.time() * 1000))
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
    settings = settings_for(ctx)
    cid = command_id or command_id_for(str(finding))
    message = release(identity, command_id=cid, reason=reason, by=by,
                      now_ms=int(_time.time() * 1000))  # fmt: skip
    _send_command(settings, identity.encode(), message, "the release")
    click.echo(f"release of {identity} (command {cid}) sent")


@click.group()
def feedback() -> None:
    """Analyst feedback to the worker (custos.feedback): confirm, false-positive, release..."""


def _send_feedback(ctx: click.Context, **fields: Any) -> None:
    from pipeline.control.feedback import Feedback, new_uid
    from pipeline.control.signing import sign_feedback

    settings = settings_for(ctx)
    try:
        fb = Feedback(uid=new_uid(), at_ms=int(time.time() * 1000),
                      **{k: v for k, v in fields.items() if v is not None})  # fmt: skip
    except (ValueError, TypeError) as exc:
        raise click.UsageError(str(exc)) from None
    # Signed with the analyst's command key: workers act on signed, fresh feedback only.
    produce_one(settings, settings.feedback_topic, fb.identity.encode(),
                 sign_feedback(fb, approver_key(settings)), "feedback")  # fmt: skip
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


@click.group("agent-models")
def agent_models() -> None:
    """The registry of approved AI-agent models: list it, register, approve, revoke builds."""


@agent_models.command("list")
@click.pass_context
def agent_models_list(ctx: click.Context) -> None:
    """The registry file (CUSTOS_MODEL_ALLOWLIST_FILE) with the topic's updates applied."""
    from pipeline.control.signing import apply_signed_agent_model_updates, trusted_keys
    from pipeline.kafka.clients import read_all
    from pipeline.scores.agent_models import AgentModelRegistry, load_agent_model_registry

    settings = settings_for(ctx)
    reg = (load_agent_model_registry(settings.model_allowlist_file)
           if settings.model_allowlist_file else AgentModelRegistry())  # fmt: skip
    updates = read_all(settings, settings.agent_models_topic, timeout_s=10)
    refused = apply_signed_agent_model_updates(reg, [m.value() or b"" for m in updates],
                                               trusted_keys(settings))  # fmt: skip
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

    settings = settings_for(ctx)
    try:
        update = AgentModelUpdate(**{k: v for k, v in fields.items() if v is not None})
    except (ValueError, TypeError) as exc:
        raise click.UsageError(str(exc)) from None
    produce_one(settings, settings.agent_models_topic, update.key(),
                 sign_agent_model_update(update, analyst_key(settings)), "update")  # fmt: skip
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


#: Registered on the root group by :mod:`pipeline.cli.main`.
COMMANDS: tuple[click.Command, ...] = (quarantine, feedback, agent_models,)
