"""Evaluate across worlds: simulator profiles and externally authored worlds, seeds, with and
without an identity directory, in one table (``custos evaluate --sweep``).

A threshold tuned on one world says little about another. The sweep runs the worker's code
path (:func:`~pipeline.offline.evaluate.evaluate_as_worker`) on each (world, seed, directory) and
prints one row per run, marking which worlds were used for tuning (:data:`TUNED_ON`) and which are
held out, so a report can quote held-out figures only.

Worlds: ``sim:<profile>`` (the simulator, :mod:`pipeline.simulate.profiles` where present;
``sim:default`` is the simulator as it always was) and ``agentdojo`` (agents whose tools,
counterparties and attacker goals come from the public AgentDojo benchmark,
:mod:`pipeline.simulate.worlds.agentdojo`; it has no directory).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from pipeline.errors import CustosError

if TYPE_CHECKING:
    from pipeline.config import Settings
    from pipeline.events.schemas import Event
    from pipeline.offline.evaluate import Evaluation
    from pipeline.scores.directory import Directory
    from pipeline.simulate.labels import EventLabel, LabelRow

__all__ = ["TUNED_ON", "SweepRow", "load_world", "run_sweep", "sweep_table", "world_names"]

#: Worlds the detection defaults were tuned on; every other world is held out.
TUNED_ON: tuple[str, ...] = ("sim:default", "sim:secret_services", "sim:heavy_tail")
#: Every world starts at this event time (2026-10-01 00:00 UTC), so a sweep is reproducible
#: whenever it runs (the simulator's own default start follows the wall clock).
START_MS = 1_790_812_800_000


@dataclass(frozen=True)
class SweepRow:
    world: str
    seed: int
    directory: bool
    held_out: bool
    identities: int
    days: float
    campaigns: int
    campaigns_detected: int
    worst_scenario: str  # the scenario with the lowest campaign detection rate, with its rate
    events_to_alert_median: float
    false_per_1000_identity_days: float
    contains_per_incident_max: int
    updates_per_incident_max: int
    benign_contained: int
    benign_contained_twice: int
    benign_asked: int  # benign identities whose contain waited for an analyst instead
    inventory: int
    scenarios: dict[str, tuple[int, int]]  # scenario -> (campaigns detected, campaigns)

    @property
    def detected_rate(self) -> float:
        return self.campaigns_detected / self.campaigns if self.campaigns else math.nan


def world_names() -> list[str]:
    """Every world the sweep can run."""
    names = ["sim:default"]
    try:
        from pipeline.simulate.profiles import PROFILES

        names = [f"sim:{p}" for p in PROFILES]
    except ImportError:  # a simulator without profiles: the default world only
        pass
    try:
        from pipeline.simulate.worlds import agentdojo  # noqa: F401

        names.append("agentdojo")
    except ImportError:
        pass
    return names


def load_world(
    settings: Settings, world: str, *, identities: int, duration_s: float, seed: int,
    with_directory: bool,
) -> tuple[list[Event], list[LabelRow], list[EventLabel], Directory | None, str]:
    """(events, labels, event labels, directory or None, source) of one world."""
    from pipeline.events.schemas import EventDecoder

    decoder = EventDecoder(max_future_skew_ms=10**13)
    if world == "agentdojo":
        from pipeline.events.schemas import encode_event_dict
        from pipeline.simulate.worlds.agentdojo import build_world

        if with_directory:
            raise CustosError("the agentdojo world has no directory")
        w = build_world(agents=identities, days=duration_s / 86_400, seed=seed,
                        start_ms=START_MS)  # fmt: skip
        events = [decoder.decode(encode_event_dict(d)) for d in w.events]
        return events, list(w.labels), list(w.event_labels), None, (
            f"agentdojo: {identities} agents, {duration_s / 86_400:g} d, seed {seed}"
        )
    if not world.startswith("sim:"):
        raise CustosError(f"unknown world {world!r}; known: {', '.join(world_names())}")
    profile = world[4:]
    from pipeline.simulate import Simulation
    from pipeline.simulate.directory import population_directory

    kwargs: dict[str, Any] = {} if profile == "default" else {"profile": profile}
    sim = Simulation(settings, identities=identities, duration_s=duration_s, seed=seed,
                     label_events=True, start_ms=START_MS, **kwargs)  # fmt: skip
    events = [decoder.decode(value) for _, _, value, _ in sim.events(progress=False)]
    directory = None
    if with_directory:
        if profile != "default":
            from pipeline.scores.directory import Directory
            from pipeline.simulate.directory import directory_entries

            directory = Directory(directory_entries(sim.population))
        else:
            directory = population_directory(identities, seed)
    return events, sim.label_rows(), sim.event_labels(), directory, (
        f"{world}: {identities} identities, {duration_s / 86_400:g} d, seed {seed}"
    )


def _row(world: str, seed: int, directory: bool, ev: Evaluation) -> SweepRow:
    scen = {name: (r.campaigns_detected, r.campaigns) for name, r in sorted(ev.rows.items())}
    worst = min(scen.items(), key=lambda kv: (kv[1][0] / kv[1][1] if kv[1][1] else 1.0, kv[0]),
                default=None)  # fmt: skip
    t = ev.total
    return SweepRow(
        world=world, seed=seed, directory=directory, held_out=world not in TUNED_ON,
        identities=ev.identities, days=ev.span_days, campaigns=t.campaigns,
        campaigns_detected=t.campaigns_detected,
        worst_scenario=f"{worst[0]} {worst[1][0]}/{worst[1][1]}" if worst else "-",
        events_to_alert_median=t.ttd_events_median,
        false_per_1000_identity_days=ev.false_per_1000_identity_days,
        contains_per_incident_max=ev.contains_per_incident_max,
        updates_per_incident_max=ev.updates_per_incident_max,
        benign_contained=len(ev.benign_contained),
        benign_contained_twice=ev.benign_quarantined_twice,
        benign_asked=len(ev.benign_asked),
        inventory=ev.inventory, scenarios=scen,
    )  # fmt: skip


def run_sweep(
    settings: Settings,
    worlds: Sequence[str],
    seeds: Sequence[int],
    *,
    identities: int,
    duration_s: float,
    directory_modes: Sequence[bool] = (False, True),
    out_dir: Path | None = None,
    echo: Callable[[str], None] = print,
) -> list[SweepRow]:
    """Evaluate every (world, seed, directory mode); print and return one row each."""
    rows: list[SweepRow] = []
    quiet: Callable[[str], None] = lambda _line: None  # noqa: E731
    for world in worlds:
        for seed in seeds:
            for with_dir in directory_modes:
                if with_dir and world == "agentdojo":
                    continue
                t0 = time.perf_counter()
                events, labels, marks, directory, source = load_world(
                    settings, world, identities=identities, duration_s=duration_s, seed=seed,
                    with_directory=with_dir,
                )  # fmt: skip
                from pipeline.offline.evaluate import evaluate_as_worker

                ev = evaluate_as_worker(settings, events, labels, event_labels=marks,
                                        directory=directory, source=source, echo=quiet)  # fmt: skip
                row = _row(world, seed, with_dir, ev)
                rows.append(row)
                echo(f"{source}{' + directory' if with_dir else ''}: {len(events):,} events, "
                     f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
    for line in sweep_table(rows):
        echo(line)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "sweep.json").write_bytes(msgspec.json.encode(rows))
        (out_dir / "sweep.md").write_text("\n".join(sweep_table(rows, markdown=True)) + "\n")
    return rows


def sweep_table(rows: Sequence[SweepRow], *, markdown: bool = False) -> list[str]:
    """One line per run, then every scenario's detection per world."""
    head = ("world", "seed", "dir", "held out", "campaigns", "median ev→alert",
            "false /1k id-days", "contains/inc max", "updates/inc max",
            "benign contained (>1) / asked", "inventory", "worst scenario")  # fmt: skip
    body = [
        (r.world, str(r.seed), "yes" if r.directory else "no", "yes" if r.held_out else "TUNED",
         f"{r.campaigns_detected}/{r.campaigns} ({r.detected_rate:.0%})",
         "-" if math.isnan(r.events_to_alert_median) else f"{r.events_to_alert_median:.0f}",
         f"{r.false_per_1000_identity_days:.2f}", str(r.contains_per_incident_max),
         str(r.updates_per_incident_max),
         f"{r.benign_contained} ({r.benign_contained_twice}) / {r.benign_asked}",
         str(r.inventory), r.worst_scenario)
        for r in rows
    ]  # fmt: skip
    scen = sorted({s for r in rows for s in r.scenarios})
    per = []
    for s in scen:
        cells = []
        for r in rows:
            d, n = r.scenarios.get(s, (0, 0))
            cells.append(f"{d}/{n}" if n else "·")
        per.append((s, *cells))
    per_head = ("scenario", *(f"{r.world}/{r.seed}/{'dir' if r.directory else 'nodir'}"
                              for r in rows))  # fmt: skip
    return [*_render(head, body, markdown), "", *_render(per_head, per, markdown)]


def _render(head: Sequence[str], body: Sequence[Sequence[str]], markdown: bool) -> list[str]:
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return lines + ["| " + " | ".join(row) + " |" for row in body]
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h)
              for i, h in enumerate(head)]  # fmt: skip
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*head)] + [fmt.format(*row) for row in body]
