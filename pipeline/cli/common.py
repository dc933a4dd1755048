"""What the ``custos`` commands share: durations, settings as the command's principal, and
the signing keys and one-record producer of the analyst's commands.

Kept apart from :mod:`pipeline.cli.main` so that the area modules can import it while
``main`` imports them (no import cycle).
"""

from __future__ import annotations

import re
from typing import Any

import click

from pipeline.config import Settings

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
PRINCIPALS = {
    "worker": "worker", "ingest": "worker", "respond": "responder", "audit run": "auditor",
    "broker": "broker", "simulate": "producer",
    "quarantine approve": "analyst", "quarantine release": "analyst", "feedback": "analyst",
    "agent-models register": "analyst", "agent-models approve": "analyst",
    "agent-models revoke": "analyst", "models promote": "analyst", "models rollback": "analyst",
    "kafka": "admin", "topics": "admin", "config": "admin", "demo": "admin", "bench": "admin",
    "bench-response": "admin",
}  # fmt: skip


def principal_for(command_path: str) -> str:
    """The principal of ``custos kafka up`` etc.: its longest prefix in PRINCIPALS.

    >>> principal_for("custos kafka up"), principal_for("custos audit show")
    ('admin', 'console')
    """
    words = command_path.split()[1:]  # without the program name
    for n in range(len(words), 0, -1):
        got = PRINCIPALS.get(" ".join(words[:n]))
        if got is not None:
            return got
    return "console"


def settings_for(ctx: click.Context) -> Settings:
    """The environment's settings as this command's principal, read once per invocation."""
    obj = ctx.ensure_object(dict)
    if "settings" not in obj:
        # The subcommands' names, not ctx.command_path: under `python -m pipeline` the program
        # name is three words ("python -m pipeline"), and the worker ran as "console".
        names = []
        c: click.Context | None = ctx
        while c is not None and c.parent is not None:
            names.append(c.info_name or "")
            c = c.parent
        path = " ".join(["custos", *reversed(names)])
        obj["settings"] = Settings.from_env().as_principal(principal_for(path))
    return obj["settings"]  # type: ignore[no-any-return]


def analyst_key(settings: Any) -> Any:
    """The key registry and model updates are signed with (the local command key)."""
    from pipeline.control.signing import command_key

    return command_key(settings.command_key_path, settings.command_jwks_path)


def approver_key(settings: Any) -> Any:
    """This analyst's own key: approvals, releases and feedback."""
    from pipeline.control.signing import analyst_key as own_key

    return own_key(settings)


def produce_one(settings: Any, topic: str, key: bytes, value: bytes, what: str) -> None:
    """Write one record and wait for it: a decision the CLI reports as sent must be sent."""
    from pipeline.kafka.clients import make_producer

    producer = make_producer(settings)
    producer.produce(topic, key=key, value=value)
    if producer.flush(30):
        raise click.ClickException(f"{what} was not delivered to {topic}")
