"""Custos's traffic simulator: realistic, labelled, deterministic OCSF input for detection work.

A population of humans, service accounts and AI agents with stable personal habits produces
OCSF 1.8 Authentication (3002) and API Activity (6003) events; labelled attack campaigns are
injected at known times and their ground truth is written to a separate labels file.

Public API::

    simulate(settings, identities=..., duration_s=..., seed=7, start_ms=None, rate=None,
             sink=..., labels_path=None, attacks=True, progress=False) -> SimulationReport
    iter_events(settings, identities=..., duration_s=..., ...) -> (topic, key, value, time_ms)
    Simulation(settings, ..., profile="default")   # .events(), then .label_rows()
    PROFILES                    # population profiles by name (pipeline.simulate.profiles)
    open_sink(settings, out)    # .jsonl / .parquet by suffix, Kafka when out is None

Modules follow the data: ``catalogue`` (the static world) → ``population`` (identities and
habits) → ``behaviours`` (humans, services) / ``chains`` (agent tasks) / ``scenarios``
(attacks) → ``batches`` (columnar events) → ``events`` (OCSF JSON) → ``sinks``; ``labels`` holds
the ground truth and ``run`` ties it together.
"""

from pipeline.simulate.labels import LabelRow, read_labels, write_labels
from pipeline.simulate.population import Mix, Population
from pipeline.simulate.profiles import PROFILES, Profile, build_population
from pipeline.simulate.run import (
    Simulation,
    SimulationReport,
    default_start,
    iter_events,
    simulate,
)
from pipeline.simulate.scenarios import ALL_SCENARIOS, NEW_SCENARIOS, SCENARIOS
from pipeline.simulate.sinks import (
    JsonlSink,
    KafkaSink,
    MemorySink,
    NullSink,
    ParquetSink,
    Sink,
    open_sink,
)

__all__ = [
    "ALL_SCENARIOS",
    "NEW_SCENARIOS",
    "PROFILES",
    "SCENARIOS",
    "JsonlSink",
    "KafkaSink",
    "LabelRow",
    "MemorySink",
    "Mix",
    "NullSink",
    "ParquetSink",
    "Population",
    "Profile",
    "Simulation",
    "SimulationReport",
    "Sink",
    "build_population",
    "default_start",
    "iter_events",
    "open_sink",
    "read_labels",
    "simulate",
    "write_labels",
]
