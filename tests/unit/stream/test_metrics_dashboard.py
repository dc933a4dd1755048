"""The worker's Prometheus exposition follows Prometheus's conventions, parses with its own
parser, and every metric the Grafana dashboard (infra/grafana/custos-worker.json) queries is
one the worker exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families

from pipeline.detection import Detection
from pipeline.kafka.metrics import render
from pipeline.stream.app import _worker_metrics
from pipeline.stream.units import WorkerStats

DASHBOARD = Path(__file__).resolve().parents[3] / "infra" / "grafana" / "custos-worker.json"


def _exposition() -> str:
    stats = WorkerStats()
    stats.by_topic["identity.events"] = 5
    stats.by_class[3002] = 5
    stats.by_kind["human"] = 5
    stats.dead.add("identity.events", "invalid_json", 1)
    stats.scored, stats.score_seconds = 5, 0.002
    stats.stage_seconds.update(decode=0.001, score=0.002)
    stats.latency_ms.extend([100.0, 300.0])
    hot = SimpleNamespace(store=SimpleNamespace(identities=lambda: 3), owned={0, 1}, restored=7,
                          snapshots=2)  # fmt: skip
    detection = Detection()
    detection.names_shed, detection.states_over_budget = 4, 1
    return render(stats, lambda: _worker_metrics(stats, detection, hot))  # type: ignore[arg-type]


def test_the_exposition_follows_prometheus_conventions() -> None:
    families = list(text_string_to_metric_families(_exposition()))
    names = [f.name for f in families]
    assert len(names) == len(set(names)), "a metric family is exposed twice"
    for f in families:
        assert f.name.startswith("custos_"), f.name
        assert re.fullmatch(r"[a-z_]+", f.name), f.name
        assert not re.search(r"_(ms|microseconds|millis)\b", f.name), f"{f.name}: not base units"
        if f.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in f.samples), f.name
    samples = {s.name + str(sorted(s.labels.items())): s.value
               for f in families for s in f.samples}  # fmt: skip
    assert samples["custos_event_to_score_seconds[('quantile', '0.99')]"] < 1.0  # seconds
    assert samples["custos_identities_held[]"] == 3
    assert samples["custos_state_snapshots_total[]"] == 2
    assert samples["custos_state_names_shed_total[]"] == 4  # the 1 KB budget at work
    assert samples["custos_state_over_budget_total[]"] == 1
    assert samples["custos_stage_seconds_total[('stage', 'decode')]"] == 0.001


def test_every_metric_the_dashboard_queries_is_exposed() -> None:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    queried = {m for e in exprs for m in re.findall(r"\bcustos_[a-z_]+", e)}
    exposed = {s.name for f in text_string_to_metric_families(_exposition()) for s in f.samples}
    assert queried <= exposed, f"queried but not exposed: {queried - exposed}"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and dash["uid"] == "custos-worker"
