"""The ``custos`` command: the root group, and the commands of each area registered on it.

Thin: each command parses options, calls the package and prints. The commands live by area
(:mod:`~pipeline.cli.kafka`, :mod:`~pipeline.cli.simulate`, :mod:`~pipeline.cli.offline`,
:mod:`~pipeline.cli.services`, :mod:`~pipeline.cli.analyst`, :mod:`~pipeline.cli.models`,
:mod:`~pipeline.cli.audit`, :mod:`~pipeline.cli.ops`, :mod:`~pipeline.cli.console`,
:mod:`~pipeline.cli.outputs`); what
they share is in :mod:`~pipeline.cli.common`. Heavy modules are imported inside the
commands, so that ``custos --help`` stays fast.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from pipeline.cli import (
    analyst,
    audit,
    console,
    kafka,
    models,
    offline,
    ops,
    outputs,
    services,
    simulate,
)
from pipeline.errors import CustosError


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


# Each area's commands, in no particular order: click lists them sorted by name.
for _area in (analyst, audit, console, kafka, models, offline, ops, outputs, services,
              simulate):
    for _command in _area.COMMANDS:
        main.add_command(_command)


if __name__ == "__main__":
    main()
