"""``custos models``: Custos's own signed detector versions."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import click

from pipeline.cli.common import DURATION, analyst_key, produce_one, settings_for


@click.group()
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
    produce_one(settings, settings.models_topic, promo.name.encode(),
                 encode_announcement(a, analyst_key(settings)), "announcement")  # fmt: skip


@models.command("list")
@click.pass_context
def models_list(ctx: click.Context) -> None:
    """Every version in the registry, its signature status and which one is promoted."""
    from pipeline.models.runtime import ModelRuntime

    runtime = ModelRuntime(settings_for(ctx), "cli")
    click.echo(f"registry {runtime.registry.root} · {len(runtime.trusted)} trusted key(s)")
    for line in runtime.registry.listing(runtime.trusted):
        click.echo(line)


@models.command("verify")
@click.argument("name", required=False)
@click.argument("version", required=False)
@click.pass_context
def models_verify(ctx: click.Context, name: str | None, version: str | None) -> None:
    """Full check (signature, artifact hash, feature schema, safe decode) of versions."""
    from pipeline.models.manifest import ModelRefused
    from pipeline.models.runtime import ModelRuntime

    runtime = ModelRuntime(settings_for(ctx), "cli")
    bad = 0
    for n, v, got in runtime.registry.check(runtime.trusted, name, version):
        if isinstance(got, ModelRefused):
            bad += 1
            click.echo(f"REFUSED {n} {v}: {got}")
        else:
            click.echo(f"OK      {n} {v} manifest {got.manifest_sha256[:16]}… "
                       f"artifact {got.manifest.artifact_sha256[:16]}…")  # fmt: skip
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

    settings = settings_for(ctx)
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
    from pipeline.offline.train import train_and_publish

    settings = settings_for(ctx)
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

    settings = settings_for(ctx)
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
    settings = settings_for(ctx)
    promo = _registry(settings).rollback(name, by=by, reason=reason)
    if not no_announce:
        _announce(settings, promo, "rollback", by, reason)
    click.echo(f"rolled {name} back to {promo.version}")


#: Registered on the root group by :mod:`pipeline.cli.main`.
COMMANDS: tuple[click.Command, ...] = (models,)
