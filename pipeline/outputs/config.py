"""Which outputs run and how: a small YAML file (``CUSTOS_OUTPUTS_FILE``), frozen once read.

Secrets (the PagerDuty routing key, webhook URLs, the HEC token) never need to be in the file:
each secret field ``x`` may instead be given as ``x_env`` (the name of an environment
variable) or ``x_file`` (a file holding it, e.g. a mounted Kubernetes secret)::

    console_url: https://custos.example.org
    pagerduty: {routing_key_env: PD_ROUTING_KEY, min_severity_id: 4}
    slack: {webhook_url_file: /run/secrets/slack-webhook}
    teams: {webhook_url_env: TEAMS_WEBHOOK_URL}
    syslog: {host: siem.example.org, port: 6514, tls: true, ca_file: /etc/custos/siem-ca.pem}
    hec: {url: https://splunk.example.org:8088, token_env: HEC_TOKEN, index: zero_trust}

>>> c = parse_config({"hec": {"url": "http://127.0.0.1:8088", "token_env": "T"}}, env={"T": "s"})
>>> c.hec.token, c.pagerduty is None, c.attempts
('s', True, 5)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from pipeline.errors import ConfigError

__all__ = ["HecConfig", "OutputsConfig", "PagerDutyConfig", "SlackConfig", "SyslogConfig",
           "TeamsConfig", "load_config", "parse_config"]  # fmt: skip


@dataclass(frozen=True, slots=True)
class PagerDutyConfig:
    routing_key: str
    url: str = "https://events.pagerduty.com/v2/enqueue"
    source: str = ""  # default: the identity the finding is about
    group: str = "custos"
    min_severity_id: int = 0  # below it no trigger (acknowledge/resolve still go)


@dataclass(frozen=True, slots=True)
class SlackConfig:
    webhook_url: str
    min_severity_id: int = 0


@dataclass(frozen=True, slots=True)
class TeamsConfig:
    webhook_url: str
    min_severity_id: int = 0


@dataclass(frozen=True, slots=True)
class SyslogConfig:
    host: str
    port: int = 6514
    tls: bool = True
    ca_file: str = ""  # empty: the system's trusted CAs
    cert_file: str = ""  # a client certificate, if the collector asks for one
    key_file: str = ""
    facility: int = 10  # security/authorization messages
    hostname: str = ""  # default: this machine's name
    min_severity_id: int = 0


@dataclass(frozen=True, slots=True)
class HecConfig:
    url: str
    token: str
    index: str = ""
    host: str = ""  # default: this machine's name
    source: str = "custos"
    sourcetype: str = "ocsf:detection_finding"
    ca_file: str = ""
    max_events: int = 100
    max_bytes: int = 1_000_000
    min_severity_id: int = 0


@dataclass(frozen=True, slots=True)
class OutputsConfig:
    group: str = "custos-outputs"  # its own consumer group on the alerts topic
    console_url: str = ""  # links back to the finding, if the console is reachable
    attempts: int = 5  # tries per request before the runner stops uncommitted
    backoff_s: float = 1.0  # first retry delay; doubles, capped at max_backoff_s
    max_backoff_s: float = 30.0
    batch: int = 100  # alerts read per poll (and per HEC batch at most)
    timeout_s: float = 10.0
    pagerduty: PagerDutyConfig | None = None
    slack: SlackConfig | None = None
    teams: TeamsConfig | None = None
    syslog: SyslogConfig | None = None
    hec: HecConfig | None = None

    @property
    def configured(self) -> list[str]:
        return [n for n in ("pagerduty", "slack", "teams", "syslog", "hec")
                if getattr(self, n) is not None]  # fmt: skip


_SECRETS = {"routing_key", "webhook_url", "token"}
T = TypeVar("T")


def _secret(section: str, name: str, raw: dict[str, Any], env: Mapping[str, str]) -> str | None:
    if f"{name}_env" in raw:
        var = str(raw.pop(f"{name}_env"))
        if not env.get(var):
            raise ConfigError(f"outputs.{section}.{name}_env: ${var} is not set")
        return env[var]
    if f"{name}_file" in raw:
        path = Path(str(raw.pop(f"{name}_file"))).expanduser()
        try:
            value = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"outputs.{section}.{name}_file: {exc}") from None
        if not value:
            raise ConfigError(f"outputs.{section}.{name}_file: {path} is empty")
        return value
    return None


def _section(cls: type[T], section: str, raw: Any, env: Mapping[str, str]) -> T:
    if not isinstance(raw, dict):
        raise ConfigError(f"outputs.{section} must be a mapping")
    raw = dict(raw)
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for secret in _SECRETS & set(names):
        value = _secret(section, secret, raw, env)
        if value is not None:
            raw[secret] = value
    unknown = set(raw) - set(names)
    if unknown:
        raise ConfigError(f"outputs.{section}: unknown keys {sorted(unknown)}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        kind = str(names[name].type)
        ok = (isinstance(value, bool) if kind == "bool" else
              isinstance(value, int) and not isinstance(value, bool) if kind == "int" else
              isinstance(value, int | float) and not isinstance(value, bool)
              if kind == "float" else isinstance(value, str))  # fmt: skip
        if not ok:
            raise ConfigError(f"outputs.{section}.{name}: expected {kind}, got {value!r}")
        values[name] = float(value) if kind == "float" else value
    try:
        return cls(**values)
    except TypeError as exc:  # a required field missing
        raise ConfigError(f"outputs.{section}: {exc}") from None


def parse_config(doc: Any, env: Mapping[str, str] | None = None) -> OutputsConfig:
    env = os.environ if env is None else env
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError("outputs config must be a mapping")
    kinds: dict[str, type[Any]] = {"pagerduty": PagerDutyConfig, "slack": SlackConfig,
                                   "teams": TeamsConfig, "syslog": SyslogConfig,
                                   "hec": HecConfig}  # fmt: skip
    top = {k: v for k, v in doc.items() if k not in kinds}
    built = _section(OutputsConfig, "", top, env)
    sections = {k: _section(kinds[k], k, v, env) for k, v in doc.items()
                if k in kinds and v is not None}  # fmt: skip
    config = dataclasses.replace(built, **sections)
    if config.attempts < 1 or config.batch < 1:
        raise ConfigError("outputs: attempts and batch must be at least 1")
    return config


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> OutputsConfig:
    """Read the outputs YAML file; ConfigError names what is wrong."""
    try:
        doc = yaml.safe_load(Path(path).expanduser().read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"outputs config {path}: {exc}") from None
    return parse_config(doc, env)
