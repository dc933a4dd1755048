"""`custos outputs run` on the real broker: findings on the alerts topic reach a local HEC
collector, and the group's offsets move only once the collector accepted them."""

from __future__ import annotations

import threading

import pytest

from pipeline.config import Settings
from pipeline.kafka.clients import group_lag, make_producer
from pipeline.outputs.base import OutputError
from pipeline.outputs.config import OutputsConfig
from pipeline.outputs.hec import HecOutput
from pipeline.outputs.runner import run_outputs
from tests.unit.outputs.receivers import HttpReceiver, alert
from tests.unit.outputs.test_hec import _events

SUCCESS = (200, b'{"text":"Success","code":0}')


def _produce(settings: Settings, n: int) -> list[str]:
    producer = make_producer(settings)
    uids = [f"f-{i}" for i in range(n)]
    for uid in uids:
        producer.produce(settings.alerts_topic, key=b"agt-7", value=alert(uid=uid).raw)
    producer.produce(settings.alerts_topic, key=b"agt-7", value=b"not json")  # skipped, logged
    assert producer.flush(30) == 0
    return uids


def _run(settings: Settings, config: OutputsConfig, url: str, stop_after: int) -> int:
    stop = threading.Event()
    timer = threading.Timer(90, stop.set)  # never hang the suite
    timer.start()
    try:
        return run_outputs(settings, config, stop=stop, stop_after=stop_after,
                           outputs=[HecOutput(url, "tok", host="h", max_events=3)])
    finally:
        timer.cancel()


def test_alerts_are_committed_only_after_the_collector_accepted_them(isolated: Settings) -> None:
    uids = _produce(isolated, 5)
    config = OutputsConfig(group="custos-outputs-e2e", attempts=2, backoff_s=0.01)
    # The collector is busy: nothing is committed, the runner stops.
    with HttpReceiver([(503, b'{"text":"Server is busy","code":9}')]) as busy:
        with pytest.raises(OutputError, match="still refuses after 2 tries"):
            _run(isolated, config, busy.url, 6)
    assert busy.requests
    assert group_lag(isolated, config.group, [isolated.alerts_topic]) == 6
    # It accepts again: a new runner reads the same records and delivers every finding.
    with HttpReceiver([SUCCESS]) as hec:
        assert _run(isolated, config, hec.url, 6) == 6
    got = [e for r in hec.requests for e in _events(r.body)]
    assert sorted(e["event"]["finding_info"]["uid"] for e in got) == uids
    assert {e["sourcetype"] for e in got} == {"ocsf:detection_finding"}
    assert group_lag(isolated, config.group, [isolated.alerts_topic]) == 0
