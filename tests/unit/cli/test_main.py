from __future__ import annotations

import click
from click.testing import CliRunner

from pipeline.cli.common import PRINCIPALS, principal_for
from pipeline.cli.main import main

# What README, Makefile, .ci and the tests call: the root group must offer exactly these.
COMMANDS = {
    "agent-models", "audit", "bench", "bench-response", "broker", "config", "console", "demo",
    "evaluate", "export", "feedback", "ingest", "kafka", "models", "outputs", "quarantine",
    "replay", "respond", "simulate", "status", "topics", "worker",
}  # fmt: skip


def _paths(cmd: click.Command, path: tuple[str, ...] = ()) -> list[str]:
    out = [" ".join(path)] if path else []
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            out += _paths(sub, (*path, name))
    return out


def test_the_root_group_registers_every_area() -> None:
    assert set(main.commands) == COMMANDS
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert all(f"  {name} " in result.output for name in COMMANDS)


def test_every_principal_names_a_command() -> None:
    # A renamed command would silently fall back to the read-only console principal.
    paths = set(_paths(main))
    assert all(prefix in paths for prefix in PRINCIPALS), set(PRINCIPALS) - paths
    assert principal_for("custos audit run") == "auditor"
    assert principal_for("custos feedback confirm") == "analyst"
    assert principal_for("custos audit verify") == "console"


def test_a_command_runs_as_its_principal_whatever_the_program_is_called() -> None:
    """`python -m pipeline worker` (how the demo and tests start it) is the worker too: the
    program name is not a command word (it once made every such process the console)."""
    from pipeline.cli.common import settings_for

    seen: list[str] = []

    @click.group()
    def root() -> None:
        pass

    @root.group(name="audit")
    def audit() -> None:
        pass

    @audit.command(name="run")
    @click.pass_context
    def run(ctx: click.Context) -> None:
        seen.append(settings_for(ctx).kafka_principal)

    for prog in ("custos", "python -m pipeline", "__main__.py"):
        result = CliRunner().invoke(root, ["audit", "run"], prog_name=prog, env={})
        assert result.exit_code == 0, result.output
    assert seen == ["auditor"] * 3
