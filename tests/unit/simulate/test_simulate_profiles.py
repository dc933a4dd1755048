"""Population profiles: the default one is unchanged, each other one differs as it says, and the
two profile scenarios (task_exfil, novel_counterparty) produce what their labels claim."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from functools import cache
from typing import Any

import numpy as np
import pytest

from pipeline.config import Settings
from pipeline.simulate import Simulation, build_population
from pipeline.simulate.batches import API, Batch
from pipeline.simulate.catalogue import HUMAN, SERVICE, catalogue
from pipeline.simulate.events import counterparty_uid
from pipeline.simulate.profiles import PROFILES, get_profile
from pipeline.simulate.scenarios import NEW_SCENARIOS, SCENARIOS

SETTINGS = Settings()
START = 1_699_920_000_000  # 2023-11-14 00:00 UTC, a Tuesday
HOUR = 3_600_000
MINUTE = 60_000
# sha256 of a 200-identity, 6-hour, seed-7 run (messages, labels, event labels): the default
# profile must reproduce the simulator's output byte for byte. Computed before profiles existed,
# then once more when API Activity events became valid OCSF (issue 16: http_request /
# http_response instead of traffic, data_classifications under its profile), a change that
# decodes to the very same events (checked on 300 identities x 1 day, 130,010 events).
DEFAULT_HASH = "ba229f3883611a3cba192cc0343af663cc71d7d94744dec8badd34f3d6ed463d"


def _sim(profile: str, identities: int = 200, hours: float = 6, **kw: Any) -> Simulation:
    return Simulation(
        SETTINGS,
        identities=identities,
        duration_s=hours * 3600,
        seed=7,
        start_ms=START,
        profile=profile,
        **kw,
    )


@cache
def _batch(profile: str, hours: float = 6, identities: int = 200) -> tuple[Simulation, Batch]:
    sim = _sim(profile, identities, hours)
    return sim, Batch.concat(list(sim.batches()))


def _benign(b: Batch) -> Batch:
    return b.take(b.camp < 0)


def test_default_profile_is_byte_identical_to_before_profiles() -> None:
    sim = _sim("default", label_events=True)
    h = hashlib.sha256()
    for topic, key, value, _t in sim.events():
        h.update(topic.encode() + b"\0" + key + b"\0" + value + b"\n")
    for r in sim.label_rows():
        h.update(repr(r).encode())
    for e in sim.event_labels():
        h.update(repr(e).encode())
    assert h.hexdigest() == DEFAULT_HASH
    assert build_population(200, seed=7, profile="default").traits is None
    assert {c.scenario for c in sim.plan.campaigns} <= set(SCENARIOS)


def test_profiles_are_described_and_unknown_ones_refused() -> None:
    assert {"default", "secret_services", "heavy_tail", "shift_travel", "agent_fleet",
            "bursty_batch", "peer_mix"} <= set(PROFILES)  # fmt: skip
    assert all(p.description and "\n" not in p.description for p in PROFILES.values())
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile("nope")


@pytest.mark.parametrize("profile", sorted(set(PROFILES) - {"default"}))
def test_every_profile_runs_with_every_scenario(profile: str) -> None:
    sim, b = _batch(profile)
    assert len(b) > 5_000
    assert np.all(np.diff(b.time) >= 0)
    planned = {c.scenario for c in sim.plan.campaigns}
    assert set(NEW_SCENARIOS) <= planned
    assert planned >= set(SCENARIOS) - {"slow_drift"}  # drift needs a day
    emitted = {sim.plan.campaigns[c].scenario for c in np.unique(b.camp[b.camp >= 0]).tolist()}
    assert emitted == planned  # every planned campaign really emits labelled events


def _hourly_secret_services(profile: str) -> int:
    sim, b = _batch(profile)
    pop, cat = sim.population, sim.cat
    b = _benign(b)
    svc = (b.ident >= pop.n_human) & (b.ident < pop.n_human + pop.n_service)
    secret = svc & (b.eclass == API) & (b.res >= 0)
    secret &= cat.res_rank[np.maximum(b.res, 0)] >= 4
    hours = defaultdict(set)
    for i, t in zip(b.ident[secret].tolist(), b.time[secret].tolist(), strict=True):
        hours[i].add((t - START) // HOUR)
    return sum(1 for h in hours.values() if len(h) == 6)


def test_secret_services_read_secret_data_every_hour() -> None:
    n_secret, n_default = (
        _hourly_secret_services("secret_services"),
        _hourly_secret_services("default"),
    )
    assert n_secret >= 8 and n_secret >= 3 * max(n_default, 1)
    sim, b = _batch("secret_services")
    hr = sim.cat.service_id("hr")
    rows = _benign(b)
    rows = rows.take((rows.svc == hr) & (rows.res >= 0))
    assert (sim.cat.res_rank[rows.res] >= 4).any()  # payroll data is Secret in this world


def _volume_tail(profile: str) -> tuple[float, float, float]:
    """p99 / p50 over identities: services' calls, humans' daily calls, bytes_out per call."""
    sim, b = _batch(profile, hours=24)
    pop = sim.population
    b = _benign(b)
    api = b.eclass == API
    calls = np.bincount(b.ident[api], minlength=pop.n).astype(np.float64)
    out = np.bincount(b.ident[api], weights=b.bytes_out[api], minlength=pop.n)
    per_call = out[calls > 0] / calls[calls > 0]

    def tail(x: np.ndarray) -> float:
        return float(np.percentile(x, 99) / max(np.percentile(x, 50), 1.0))

    services = calls[pop.n_human : pop.n_human + pop.n_service]
    return tail(services), tail(calls[: pop.n_human]), tail(per_call)


def test_heavy_tail_volumes_are_heavy_tailed() -> None:
    svc, hum, bytes_ = _volume_tail("heavy_tail")
    svc0, hum0, bytes0 = _volume_tail("default")
    assert svc > 2 * svc0 and hum > 2 * hum0
    assert max(svc, hum) >= 30  # some identities 30-100x busier than the median one
    assert bytes_ > 3 * bytes0 and bytes_ >= 50


def test_shift_travel_has_night_workers_travellers_and_plausible_speeds() -> None:
    def night_humans(profile: str) -> int:
        sim, b = _batch(profile, hours=24)
        b = _benign(b)
        human = b.ident < sim.population.n_human
        utc_hour = (b.time // HOUR) % 24
        night = human & ((utc_hour >= 22) | (utc_hour < 6))
        total = np.bincount(b.ident[human], minlength=sim.population.n)
        at_night = np.bincount(b.ident[night], minlength=sim.population.n)
        tz = sim.cat.geo_tz_min[sim.population.geo]
        far_east = tz >= 300  # Asia-Pacific days are UTC nights anyway
        return int(((total >= 10) & (at_night > 0.7 * total) & ~far_east).sum())

    assert night_humans("shift_travel") >= 5 * max(night_humans("default"), 1)

    def travel(profile: str) -> tuple[float, int, float]:
        sim, b = _batch(profile, hours=24 * 6, identities=60)
        b = _benign(b)
        cat = sim.cat
        human = b.take(b.ident < sim.population.n_human)
        countries: dict[int, set[str]] = defaultdict(set)
        last: dict[int, tuple[int, int]] = {}
        fastest = 0.0
        for i, t, g in zip(human.ident.tolist(), human.time.tolist(), human.geo.tolist(),
                           strict=True):  # fmt: skip
            countries[i].add(cat.geo_country[g])
            if i in last and last[i][1] != g:
                km = cat.geo_distance_km(last[i][1], g)
                hours = max(t - last[i][0], 1) / HOUR
                fastest = max(fastest, km / hours)
            last[i] = (t, g)
        per = [len(c) for c in countries.values()]
        return float(np.mean(per)), max(per), fastest

    mean_c, max_c, fastest = travel("shift_travel")
    mean_d, max_d, _ = travel("default")
    assert max_d == 1 and max_c >= 3 and mean_c > mean_d
    assert fastest < 1_000.0  # km/h: nobody teleports (the attackers' events are excluded)
    # Away from home, travellers keep the working hours of the city they are in.
    sim, b = _batch("shift_travel", hours=24 * 6, identities=60)
    pop = sim.population
    assert pop.traits is not None
    b = _benign(b)
    away = (b.ident < pop.n_human) & (b.geo != pop.geo[np.minimum(b.ident, pop.n - 1)])
    assert away.sum() >= 100
    local_hour = ((b.time // MINUTE + sim.cat.geo_tz_min[b.geo]) % 1440) // 60
    assert ((local_hour >= 7) & (local_hour < 19))[away].mean() > 0.8
    sim, _ = _batch("shift_travel")
    mobile = sim.population.mobile[: sim.population.n_human]
    assert (mobile >= 0.5).sum() >= 10


def _chain_depth_and_tools(profile: str) -> tuple[int, float]:
    sim, b = _batch(profile)
    pop = sim.population
    first_agent = pop.n_human + pop.n_service
    b = _benign(b)
    api = b.take((b.eclass == API) & (b.ident >= first_agent) & (b.task >= 0))
    depth: dict[tuple[int, int], int] = {}
    order = np.lexsort((api.time, api.task))
    for task, i, d in zip(api.task[order].tolist(), api.ident[order].tolist(),
                          api.deleg[order].tolist(), strict=True):  # fmt: skip
        if (task, i) not in depth:
            depth[(task, i)] = depth.get((task, d), 0) + 1 if d >= first_agent else 1
    tools: dict[int, set[int]] = defaultdict(set)
    for i, op in zip(api.ident.tolist(), api.op.tolist(), strict=True):
        tools[i].add(op)
    busy = [len(s) for i, s in tools.items() if np.sum(api.ident == i) >= 100]
    return max(depth.values()), float(np.median(busy)) if busy else 0.0


def test_agent_fleet_has_deep_chains_and_many_tools() -> None:
    depth, tools = _chain_depth_and_tools("agent_fleet")
    depth0, tools0 = _chain_depth_and_tools("default")
    assert depth0 <= 2 and depth >= 4
    assert tools >= 12 and tools > 1.5 * tools0
    sim, b = _batch("agent_fleet")
    _, b0 = _batch("default")
    first = sim.population.n_human + sim.population.n_service

    def tasks(x: Batch) -> int:
        return len(np.unique(x.task[(x.ident >= first) & (x.task >= 0) & (x.camp < 0)]))

    assert tasks(b) > 1.5 * tasks(b0)  # many more (concurrent) tasks


def _minute_burst(profile: str) -> tuple[int, float]:
    sim, b = _batch(profile)
    pop = sim.population
    b = _benign(b)
    svc = (b.eclass == API) & (b.ident >= pop.n_human) & (b.ident < pop.n_human + pop.n_service)
    per = Counter(zip(b.ident[svc].tolist(), (b.time[svc] // MINUTE).tolist(), strict=True))
    counts = np.asarray(list(per.values()))
    return int(counts.max()), float(np.median(counts))


def test_bursty_batch_services_burst_then_go_quiet() -> None:
    peak, median = _minute_burst("bursty_batch")
    peak0, _ = _minute_burst("default")
    assert peak >= 100 and peak >= 50 * median and peak >= 5 * peak0
    sim, b = _batch("bursty_batch")
    traits = sim.population.traits
    assert traits is not None
    jobs = np.flatnonzero(traits.batch_period_ms > 0)
    quiet = np.isin(b.ident, jobs) & (b.time >= START + 5 * HOUR) & (b.camp < 0)
    assert quiet.sum() < 0.02 * np.isin(b.ident, jobs).sum()  # after the night: silence


def test_peer_mix_has_tiny_and_huge_peer_groups() -> None:
    pop = build_population(1000, seed=7, profile="peer_mix")
    hs = slice(0, pop.n_human)
    teams = Counter(zip(pop.group[hs].tolist(), pop.team[hs].tolist(), strict=True))
    assert max(teams.values()) >= 200 and min(teams.values()) <= 3
    assert sum(1 for v in teams.values() if v <= 3) >= 10
    ss = slice(pop.n_human, pop.n_human + pop.n_service)
    families = Counter(pop.group[ss].tolist())
    assert max(families.values()) >= 200 and min(families.values()) <= 3
    default = build_population(1000, seed=7)
    d_teams = Counter(zip(default.group[: default.n_human].tolist(),
                          default.team[: default.n_human].tolist(), strict=True))  # fmt: skip
    assert max(d_teams.values()) < 40
    assert int(pop.kind[0]) == HUMAN and int(pop.kind[pop.n_human]) == SERVICE


# ---- the two profile scenarios, on encoded events -------------------------------------------
@cache
def _encoded() -> tuple[Simulation, list[dict[str, Any]], dict[str, str]]:
    sim = _sim("agent_fleet", 300, 6, label_events=True, campaigns_per_scenario=3)
    events = [json.loads(v) for _topic, _key, v, _t in sim.events()]
    labels = {e.event_uid: e.campaign_id for e in sim.event_labels()}
    return sim, events, labels


def _uid(ev: dict[str, Any]) -> str:
    return str(ev["user"]["uid"] if ev["class_uid"] == 3002 else ev["actor"]["user"]["uid"])


def test_task_exfil_is_one_task_of_usual_tools_with_huge_volumes() -> None:
    sim, events, labels = _encoded()
    camps = {c.campaign_id for c in sim.plan.campaigns if c.scenario == "task_exfil"}
    assert camps
    sweeps = 0
    for cid in camps:
        bad = [e for e in events if labels.get(e["metadata"]["uid"]) == cid]
        assert 2 <= len(bad) <= 4 and all(e["class_uid"] == 6003 for e in bad)
        agent = _uid(bad[0])
        assert {_uid(e) for e in bad} == {agent}
        assert len({e["actor"]["session"]["uid"] for e in bad}) == 1  # one task
        assert all(e["unmapped"]["credential"]["issued_to"] == agent for e in bad)
        mine = [e for e in events if e["class_uid"] == 6003 and _uid(e) == agent
                and e["metadata"]["uid"] not in labels]  # fmt: skip
        usual_ops = Counter(e["api"]["operation"] for e in mine)
        usual_models = {e["unmapped"]["model"]["digest"] for e in mine}
        med_in = float(np.median([e["http_response"]["length"] for e in mine]))
        med_out = float(np.median([e["http_request"]["length"] for e in mine]))
        assert len(mine) >= 20  # a busy agent with a known routine
        ratios = []
        for e in bad:
            assert usual_ops[e["api"]["operation"]] > 0  # a tool it normally calls
            assert e["unmapped"]["model"]["digest"] in usual_models
            same_op = [m for m in mine if m["api"]["operation"] == e["api"]["operation"]]
            if len(same_op) >= 5:
                op_in = float(np.median([m["http_response"]["length"] for m in same_op]))
                op_out = float(np.median([m["http_request"]["length"] for m in same_op]))
                ratios.append(
                    max(e["http_response"]["length"] / op_in, e["http_request"]["length"] / op_out)
                )
            overall = max(e["http_response"]["length"] / med_in,
                          e["http_request"]["length"] / med_out)  # fmt: skip
            assert overall >= 25, overall
        assert all(r >= 10 for r in ratios) and (not ratios or np.median(ratios) >= 20)
        # The sweep variant: one task touches many more resources than any usual task does.
        per_task: dict[str, set[str]] = defaultdict(set)
        for m in mine:
            per_task[m["actor"]["session"]["uid"]].update(r["uid"] for r in m.get("resources", []))
        touched = {r["uid"] for e in bad for r in e.get("resources", [])}
        if len(touched) >= 3 * max(len(v) for v in per_task.values()) and len(touched) >= 20:
            sweeps += 1
    assert sweeps >= 1


def test_novel_counterparty_writes_to_someone_new() -> None:
    sim, events, labels = _encoded()
    camps = {c.campaign_id for c in sim.plan.campaigns if c.scenario == "novel_counterparty"}
    assert camps
    prefixes = ("iban:", "mail:", "user:")
    # Benign write/send calls carry their counterparties too (slowly growing sets).
    benign_cp = [r for e in events if e["class_uid"] == 6003 and e["metadata"]["uid"] not in labels
                 for r in e.get("resources", []) if r["uid"].startswith(prefixes)]  # fmt: skip
    assert len(benign_cp) > 100
    for cid in camps:
        bad = [e for e in events if labels.get(e["metadata"]["uid"]) == cid]
        assert 1 <= len(bad) <= 3
        who = _uid(bad[0])
        first = min(e["time"] for e in bad)
        before = [e for e in events if e["class_uid"] == 6003 and _uid(e) == who
                  and e["time"] < first]  # fmt: skip
        seen = {r["uid"] for e in before for r in e.get("resources", [])}
        ops = {e["api"]["operation"] for e in before}
        for e in bad:
            cps = [r for r in e["resources"] if r["uid"].startswith(prefixes)]
            assert len(cps) == 1 and cps[0]["type"] in ("bank_account", "email_address", "user")
            assert cps[0]["uid"] not in seen
            assert e["api"]["operation"] in ops or len(before) < 20
            assert e["status_id"] == 1


def test_counterparty_uids_look_like_the_contract() -> None:
    assert counterparty_uid(0 << 58 | 987654321)[0].startswith("iban:")
    uid, rtype = counterparty_uid(1 << 58 | 12345)
    assert uid.startswith("mail:") and "@" in uid and rtype == "email_address"
    assert counterparty_uid(2 << 58 | 5)[1] == "user"
    assert catalogue().op_name  # the catalogue still builds
