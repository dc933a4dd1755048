"""``custos outputs``: alerts to the SOC's pager, chat, syslog SIEM and HTTP collector."""

from __future__ import annotations

import click

from pipeline.cli.common import settings_for


@click.group()
def outputs() -> None:
    """Alert outputs: PagerDuty, Slack, Teams, syslog CEF, Splunk HEC (docs/OUTPUTS.md)."""


@outputs.command(name="run")
@click.option("--config", "config_path", default=None,
              help="Outputs YAML (default CUSTOS_OUTPUTS_FILE).")  # fmt: skip
@click.option("--seconds", type=float, default=None, help="Stop after this long (default: Ctrl-C).")
@click.pass_context
def run(ctx: click.Context, config_path: str | None, seconds: float | None) -> None:
    """Send every finding on CUSTOS_ALERTS_TOPIC to each configured output; commit the offsets
    only once every output accepted (or refused for good, logged) what they carry."""
    import logging
    import signal
    import threading

    from pipeline.errors import ConfigError
    from pipeline.outputs.config import load_config
    from pipeline.outputs.runner import run_outputs

    settings = settings_for(ctx)
    path = config_path or settings.outputs_file
    if not path:
        raise ConfigError("no outputs config: pass --config or set CUSTOS_OUTPUTS_FILE")
    config = load_config(path)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if seconds is not None:
        threading.Timer(seconds, stop.set).start()
    try:
        n = run_outputs(settings, config, stop=stop, echo=click.echo)
    except KeyboardInterrupt:
        return
    finally:
        stop.set()
    click.echo(f"{n} alerts delivered and committed")


#: Registered on the root group by :mod:`pipeline.cli.main`.
COMMANDS: tuple[click.Command, ...] = (outputs,)
