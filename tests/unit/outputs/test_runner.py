"""The runner's delivery loop (bounded retries, failed skipped, retry stops) and the outputs
config (frozen, secrets from env or files)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.outputs.base import OutputError
from pipeline.outputs.config import load_config, parse_config
from pipeline.outputs.hec import HecOutput
from pipeline.outputs.pagerduty import PagerDutyOutput
from pipeline.outputs.runner import Deliverer, build_outputs
from tests.unit.outputs.receivers import HttpReceiver, alert

OK = (202, b'{"status":"success","message":"Event processed","dedup_key":"f-1"}')
SUCCESS = (200, b'{"text":"Success","code":0}')


def test_the_runner_retries_429_and_5xx_with_backoff_until_accepted() -> None:
    slept: list[float] = []
    with HttpReceiver([(429, b"", {"Retry-After": "3"}), (502, b""), OK]) as r:
        d = Deliverer([PagerDutyOutput("rk", url=r.url)], attempts=4, backoff_s=0.5,
                      sleep=slept.append)  # fmt: skip
        report = d.deliver([alert()])
    assert len(r.requests) == 3 and len({req.body for req in r.requests}) == 1
    assert slept == [3.0, 1.0]  # Retry-After honoured, then the doubled backoff
    assert report.ok == {"pagerduty": 1} and report.attempts == 3


def test_still_refused_after_the_retries_raises_and_later_outputs_wait() -> None:
    slept: list[float] = []
    with HttpReceiver([(503, b"")]) as pd, HttpReceiver([SUCCESS]) as hec:
        d = Deliverer([PagerDutyOutput("rk", url=pd.url), HecOutput(hec.url, "t", host="h")],
                      attempts=3, backoff_s=1.0, max_backoff_s=1.5, sleep=slept.append)
        with pytest.raises(OutputError, match="pagerduty still refuses after 3 tries"):
            d.deliver([alert()])
    assert len(pd.requests) == 3 and slept == [1.0, 1.5]  # doubled, capped
    assert hec.requests == []  # the batch is not half-delivered past a stuck output


def test_a_permanent_failure_is_logged_and_the_rest_delivered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad = (400, b'{"status":"invalid event","errors":["payload.summary is missing"]}')
    with HttpReceiver([bad, OK]) as pd, HttpReceiver([SUCCESS]) as hec:
        d = Deliverer([PagerDutyOutput("rk", url=pd.url), HecOutput(hec.url, "t", host="h")],
                      sleep=lambda s: None)  # fmt: skip
        with caplog.at_level(logging.ERROR, "custos.outputs"):
            report = d.deliver([alert(uid="f-a"), alert(uid="f-b")])
    assert report.failed == {"pagerduty": ["trigger f-a"]}
    assert report.ok == {"pagerduty": 1, "hec": 1}
    assert [json.loads(r.body)["dedup_key"] for r in pd.requests] == ["f-a", "f-b"]
    assert "trigger f-a refused for good" in caplog.text


def test_config_reads_secrets_from_env_and_files(tmp_path: Path) -> None:
    (tmp_path / "slack").write_text("https://hooks.slack.invalid/T/B/x\n")
    path = tmp_path / "outputs.yaml"
    path.write_text(
        "console_url: https://console.example\nattempts: 3\n"
        "pagerduty: {routing_key_env: PD_KEY, min_severity_id: 4}\n"
        f"slack: {{webhook_url_file: {tmp_path / 'slack'}}}\n"
        "syslog: {host: 127.0.0.1, port: 6514, tls: true}\n"
        "hec: {url: 'http://127.0.0.1:8088', token: inline-token, max_events: 500}\n"
    )
    c = load_config(path, env={"PD_KEY": "pd-secret"})
    assert c.pagerduty is not None and c.pagerduty.routing_key == "pd-secret"
    assert c.pagerduty.min_severity_id == 4
    assert c.slack is not None and c.slack.webhook_url == "https://hooks.slack.invalid/T/B/x"
    assert c.configured == ["pagerduty", "slack", "syslog", "hec"] and c.attempts == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.attempts = 9  # type: ignore[misc]
    names = [o.name for o in build_outputs(c, version="0.1.0")]
    assert names == ["pagerduty", "slack", "syslog", "hec"]
    hec = build_outputs(c, version="0.1.0")[-1]
    assert isinstance(hec, HecOutput) and hec.max_events == 100  # at most one poll's batch


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"pagerduty": {"routing_key_env": "MISSING"}}, r"\$MISSING is not set"),
        ({"slack": {"webhook_url_file": "/nonexistent/x"}}, "webhook_url_file"),
        ({"hec": {"url": "http://x"}}, "token"),
        ({"syslog": {"host": "h", "port": "514"}}, "port: expected int"),
        ({"teams": {"webhook_url": "u", "colour": "red"}}, "unknown keys"),
        ({"attempts": 0}, "at least 1"),
    ],
)
def test_config_errors_name_what_is_wrong(doc: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(doc, env={})
