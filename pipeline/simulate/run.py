"""Run a simulation: population → per-slice behaviour + attacks → OCSF messages → a sink.

Event time runs as fast as the machine allows (or paced to ``rate`` events per wall second).
The window ``[start, start + duration)`` is generated in slices of ``slice_s`` simulated
seconds; each slice is generated vectorised, sorted by time and encoded, so the output is in
event-time order. Agent tasks started in one slice may spill into the next ones: those events
wait in a pending batch until their slice comes.

Same seed + same parameters (including an explicit ``start_ms``) → byte-identical output.

>>> from pipeline.config import Settings
>>> msgs = list(iter_events(Settings(), identities=50, duration_s=120, seed=1,
...                         start_ms=1_700_000_000_000))
>>> times = [t for _, _, _, t in msgs]
>>> times == sorted(times) and all(1_700_000_000_000 <= t < 1_700_000_120_000 for t in times)
True
"""

from __future__ import annotations

import time as _time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np

from pipeline.simulate.batches import Batch
from pipeline.simulate.behaviours import Habits, human_events, service_events
from pipeline.simulate.catalogue import catalogue, secret_catalogue
from pipeline.simulate.chains import agent_events
from pipeline.simulate.events import Encoder
from pipeline.simulate.labels import (
    EventLabel,
    LabelBook,
    LabelRow,
    write_event_labels,
    write_labels,
)
from pipeline.simulate.population import Mix, Population
from pipeline.simulate.profiles import build_population, get_profile
from pipeline.simulate.scenarios import DAY_MS, AttackPlan, plan_attacks
from pipeline.simulate.seeds import rng_for
from pipeline.simulate.sinks import Sink

if TYPE_CHECKING:
    from pipeline.config import Settings

__all__ = [
    "Simulation",
    "SimulationReport",
    "auto_slice_s",
    "default_start",
    "iter_events",
    "simulate",
]

_HOUR_MS: Final = 3_600_000
_SLICE_STREAM: Final = 0x534C4943


def default_start(duration_s: float, now_ms: int | None = None) -> int:
    """``now - duration`` rounded down to the hour: the whole window lies in the past.

    >>> default_start(3600, now_ms=1_700_000_000_000)  # 2023-11-14 22:13:20 UTC
    1699995600000
    """
    now = _time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return (now - int(duration_s * 1000)) // _HOUR_MS * _HOUR_MS


def auto_slice_s(identities: int) -> float:
    """Simulated seconds per slice: about 1-4k events each, so numpy overhead stays small.

    Habits are evaluated per event (not per slice), so the slice length only trades memory
    for speed; it is part of the parameters that make a run reproducible.

    >>> auto_slice_s(10_000), auto_slice_s(400), auto_slice_s(1_000_000)
    (60.0, 900.0, 60.0)
    """
    return float(min(900, max(60, 60 * round(10_000 / max(identities, 1)))))


@dataclass(frozen=True, slots=True)
class SimulationReport:
    """What a run produced."""

    events: int
    per_topic: dict[str, int]
    campaigns: int  # campaigns with at least one emitted event
    labels: tuple[LabelRow, ...]
    wall_s: float
    events_per_s: float
    start_ms: int
    end_ms: int
    identities: int
    seed: int
    scenarios: dict[str, int] = field(default_factory=dict)  # campaigns per scenario


class Simulation:
    """A planned run: population, attack plan, encoder and label book; events on demand.

    Iterate :meth:`events` once; afterwards :meth:`label_rows` describes the attacks in it
    (and, with ``label_events=True``, :meth:`event_labels` lists every malicious event).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        identities: int,
        duration_s: float,
        seed: int = 7,
        start_ms: int | None = None,
        attacks: bool = True,
        mix: Mix | None = None,
        campaigns_per_scenario: int | None = None,
        scenarios: tuple[str, ...] | None = None,
        slice_s: float | None = None,
        drift_min_window_s: float = DAY_MS / 1000,
        population: Population | None = None,
        label_events: bool = False,
        profile: str = "default",
    ) -> None:
        """``profile`` names a population profile (:data:`pipeline.simulate.profiles.PROFILES`);
        ``scenarios`` defaults to the profile's (``default``: the original eight)."""
        if duration_s <= 0:
            raise ValueError("duration_s must be positive")
        if slice_s is None:
            slice_s = auto_slice_s(identities)
        if slice_s <= 0:
            raise ValueError("slice_s must be positive")
        prof = get_profile(profile)
        if scenarios is None:
            scenarios = prof.scenarios
        self.profile = prof.name
        self.seed = seed
        self.start_ms = default_start(duration_s) if start_ms is None else int(start_ms)
        self.end_ms = self.start_ms + int(duration_s * 1000)
        self.slice_ms = max(1, int(slice_s * 1000))
        self.population = population or build_population(identities, seed, mix, prof.name)
        traits = self.population.traits
        self.cat = secret_catalogue() if traits is not None and traits.secret_data else catalogue()
        self.habits = Habits(self.population, self.cat)
        self.plan = (
            plan_attacks(
                self.habits,
                self.start_ms,
                self.end_ms,
                seed,
                per_scenario=campaigns_per_scenario,
                scenarios=scenarios,
                drift_min_window_ms=int(drift_min_window_s * 1000),
            )
            if attacks
            else AttackPlan()
        )
        campaigns = self.plan.campaigns
        self.labels = LabelBook(
            lambda c: (campaigns[c].campaign_id, campaigns[c].scenario),
            self.population.uid,
            keep_events=label_events,
        )
        models = list(
            zip(self.cat.model_name, self.cat.model_version, self.cat.model_digest, strict=True)
        )
        self.encoder = Encoder(
            self.population,
            self.cat,
            identity_topic=settings.identity_topic,
            agent_topic=settings.agent_topic,
            models=models + self.plan.extra_models,
            labels=self.labels,
        )

    @property
    def n_slices(self) -> int:
        return -(-(self.end_ms - self.start_ms) // self.slice_ms)

    def batches(self) -> Iterator[Batch]:
        """Time-sorted batches, one per slice (before encoding)."""
        habits, plan = self.habits, self.plan
        injected = plan.injected
        pending = Batch.empty()
        next_task = 0
        for s in range(self.n_slices):
            t0 = self.start_ms + s * self.slice_ms
            t1 = min(t0 + self.slice_ms, self.end_ms)
            dt = t1 - t0
            rng = rng_for(self.seed, _SLICE_STREAM, s)
            agents, next_task = agent_events(habits, t0, dt, rng, next_task)
            lo, hi = np.searchsorted(injected.time, [t0, t1])
            current = Batch.concat(
                [
                    pending,
                    human_events(habits, t0, dt, rng),
                    service_events(habits, t0, dt, rng),
                    agents,
                    injected.take(np.arange(lo, hi)),
                ]
            )
            due = current.time < t1
            pending = current.take(~due & (current.time < self.end_ms))
            out = current.take(due)
            out = out.take(out.time_order())
            plan.apply_mutations(out)
            yield out

    def events(self, progress: bool = False) -> Iterator[tuple[str, bytes, bytes, int]]:
        """``(topic, key, value, time_ms)`` per event, in event-time order."""
        from tqdm import tqdm

        with tqdm(
            total=self.n_slices,
            unit="slice",
            desc="simulate",
            disable=not progress,
            mininterval=0.5,
        ) as bar:
            emitted = 0
            for batch in self.batches():
                yield from self.encoder.encode(batch)
                emitted += len(batch)
                bar.update(1)
                bar.set_postfix(events=emitted, refresh=False)

    def label_rows(self) -> list[LabelRow]:
        """Ground truth for the events emitted so far."""
        return self.labels.rows()

    def event_labels(self) -> list[EventLabel]:
        """Every malicious event emitted so far (needs ``label_events=True``)."""
        return self.labels.event_labels()


def iter_events(
    settings: Settings,
    *,
    identities: int,
    duration_s: float,
    seed: int = 7,
    start_ms: int | None = None,
    attacks: bool = True,
    progress: bool = False,
    mix: Mix | None = None,
    campaigns_per_scenario: int | None = None,
    profile: str = "default",
) -> Iterator[tuple[str, bytes, bytes, int]]:
    """Generate ``(topic, key, value, time_ms)`` tuples without a sink (labels: use Simulation)."""
    sim = Simulation(
        settings,
        identities=identities,
        duration_s=duration_s,
        seed=seed,
        start_ms=start_ms,
        attacks=attacks,
        mix=mix,
        campaigns_per_scenario=campaigns_per_scenario,
        profile=profile,
    )
    yield from sim.events(progress)


def simulate(
    settings: Settings,
    *,
    identities: int,
    duration_s: float,
    seed: int = 7,
    start_ms: int | None = None,
    rate: float | None = None,
    sink: Sink,
    labels_path: Path | None,
    attacks: bool = True,
    progress: bool = False,
    mix: Mix | None = None,
    campaigns_per_scenario: int | None = None,
    event_labels_path: Path | None = None,
    profile: str = "default",
) -> SimulationReport:
    """Simulate ``identities`` over ``duration_s`` seconds of event time into ``sink``.

    ``rate`` paces output to about that many events per wall-clock second (None: as fast as
    possible). The sink is closed at the end. Ground truth goes to ``labels_path`` (JSONL) when
    given, and is always in the report; ``event_labels_path`` (JSONL) also gets one line per
    malicious event (exact event-level ground truth; the other outputs do not change).
    ``profile`` picks a population profile (``"default"``: the original world).
    """
    if rate is not None and rate <= 0:
        raise ValueError("rate must be positive")
    sim = Simulation(
        settings,
        identities=identities,
        duration_s=duration_s,
        seed=seed,
        start_ms=start_ms,
        attacks=attacks,
        mix=mix,
        campaigns_per_scenario=campaigns_per_scenario,
        label_events=event_labels_path is not None,
        profile=profile,
    )
    per_topic: dict[str, int] = {settings.identity_topic: 0, settings.agent_topic: 0}
    n = 0
    write = sink.write
    # Check the pace about ten times a second of output, at most every thousand events.
    pace = float(rate) if rate is not None else 0.0
    pace_every = max(1, min(1_000, int(pace // 10))) if pace else 0
    began = _time.perf_counter()
    try:
        for topic, key, value, _t in sim.events(progress):
            write(topic, key, value)
            per_topic[topic] += 1
            n += 1
            if pace_every and n % pace_every == 0:
                ahead = n / pace - (_time.perf_counter() - began)
                if ahead > 0:
                    _time.sleep(ahead)
    finally:
        sink.close()
    wall = _time.perf_counter() - began
    rows = sim.label_rows()
    if labels_path is not None:
        write_labels(Path(labels_path), rows)
    if event_labels_path is not None:
        write_event_labels(Path(event_labels_path), sim.event_labels())
    scenarios: dict[str, int] = {}
    for _cid, scenario in sorted({(r.campaign_id, r.scenario) for r in rows}):
        scenarios[scenario] = scenarios.get(scenario, 0) + 1
    return SimulationReport(
        events=n,
        per_topic=per_topic,
        campaigns=len({r.campaign_id for r in rows}),
        labels=tuple(rows),
        wall_s=wall,
        events_per_s=n / wall if wall > 0 else 0.0,
        start_ms=sim.start_ms,
        end_ms=sim.end_ms,
        identities=sim.population.n,
        seed=seed,
        scenarios=scenarios,
    )
