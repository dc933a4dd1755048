"""Population profiles: worlds that differ the way real deployments differ.

The default world is one company. Real deployments differ: vaults and payroll services read
Secret data around the clock by design; request volumes are heavy-tailed; people work nights,
travel and work from mobile networks; agents carry dozens of tools and delegate deep; batch
jobs make thousands of calls in minutes and then go quiet; peer groups range from one person to
a contact centre. A :class:`Profile` is a frozen set of knobs for one such world; detection can
be tuned on some profiles and reported on others held out.

A profile never changes how the default population is drawn: :func:`apply_profile` takes the
default population of the same seed and reshapes it with its own random stream, and every
behaviour a profile adds is gated on :class:`~pipeline.simulate.population.Traits` the default
population does not have. So ``profile="default"`` is byte-identical to a run without profiles.

>>> sorted(PROFILES)  # doctest: +NORMALIZE_WHITESPACE
['agent_fleet', 'bursty_batch', 'default', 'heavy_tail', 'peer_mix', 'secret_services',
 'shift_travel']
>>> pop = build_population(200, seed=1, profile="secret_services")
>>> pop.traits is not None and pop.traits.secret_data
True
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final

import numpy as np

from pipeline.simulate.catalogue import AGENT, HUMAN, SERVICE, catalogue
from pipeline.simulate.population import TEAM_SIZE, Mix, Population, Traits, draw_population
from pipeline.simulate.scenarios import ALL_SCENARIOS, SCENARIOS
from pipeline.simulate.seeds import Array, hash64, rng_for

__all__ = ["PROFILES", "Profile", "apply_profile", "build_population", "get_profile"]

_PROFILE_STREAM: Final = 0x50524F46  # "PROF"
_DAY_MS: Final = 86_400_000
_HOUR_MS: Final = 3_600_000


@dataclass(frozen=True, slots=True)
class Profile:
    """Knobs of one population profile (neutral values = the default world)."""

    name: str
    description: str  # one line: what kind of deployment this is
    mix: Mix | None = None  # identity kind shares (None: the default 60/15/25)
    scenarios: tuple[str, ...] = ALL_SCENARIOS  # attack scenarios planned by default
    counterparties: bool = True  # payments / mail / invites name their counterparty
    # secret_services
    secret_service_share: float = 0.0  # services moved to key-management / payroll / secrets
    secret_agent_share: float = 0.0  # non-orchestrator agents moved to hr-assistant / secops
    secret_data: bool = False  # HR and payments hold Secret / Top Secret data
    # heavy_tail
    heavy_tail: bool = False  # Pareto / wide lognormal rates and volumes per identity
    human_rate_sigma: float = 1.8  # lognormal sigma of human API calls per hour
    service_rate_alpha: float = 0.9  # Pareto shape of service API calls per hour
    agent_rate_sigma: float = 1.5  # lognormal sigma of agent tasks per hour
    volume_spread: float = 1.5  # per-identity sigma of log typical bytes (default 0.5 / 0.7)
    # shift_travel
    night_share: float = 0.0  # humans working 22:00-06:00 UTC
    travel_share: float = 0.0  # humans moving between cities (a few days in each)
    travel_stop_days: tuple[int, int] = (2, 6)  # days per stop (inclusive range)
    remote_mobile_share: float = 0.0  # humans working mostly from a mobile network
    # agent_fleet
    agent_tools: tuple[int, int] | None = None  # favourite operations per agent (inclusive)
    generalist_share: float = 0.0  # non-orchestrator agents moved to the "workflow" kind
    sub_orchestrator_share: float = 0.0  # pooled workers that delegate further themselves
    chain_depth: int = 2  # most agents in one delegation chain
    sub_delegate: float = 0.0  # chance a sub-orchestrator delegates a step
    agent_tasks_per_hour: float | None = None  # median tasks/h of root agents
    # bursty_batch
    batch_share: float = 0.0  # services whose work is a scheduled batch job
    weekly_share: float = 0.3  # of batch services: weekly instead of nightly
    batch_calls_median: float = 3_000.0  # API calls per job (lognormal, sigma 0.8)
    batch_minutes: tuple[float, float] = (2.0, 15.0)  # job length range
    # peer_mix
    big_team_share: float = 0.0  # humans in one huge team (a contact centre)
    tiny_team_share: float = 0.0  # humans in teams of 1-3
    fleet_share: float = 0.0  # services in one family (a CI runner fleet)
    tiny_families: int = 0  # service families cut down to 1-3 members


PROFILES: Final[dict[str, Profile]] = {
    p.name: p
    for p in (
        Profile(
            "default",
            "The simulator's original single company (byte-identical to runs before profiles).",
            scenarios=SCENARIOS,
            counterparties=False,
        ),
        Profile(
            "secret_services",
            "Vault, key-management, payroll and HR workloads and agents that read Secret / "
            "Top Secret data every hour by design.",
            secret_service_share=0.45,
            secret_agent_share=0.3,
            secret_data=True,
        ),
        Profile(
            "heavy_tail",
            "Heavy-tailed request rates and bytes per identity: some identities 100x busier "
            "and heavier than others.",
            heavy_tail=True,
        ),
        Profile(
            "shift_travel",
            "Night-shift humans (22-06 UTC), travellers moving between countries every few "
            "days, remote workers on mobile networks.",
            night_share=0.2,
            travel_share=0.15,
            remote_mobile_share=0.15,
        ),
        Profile(
            "agent_fleet",
            "Agents with 15-40 tools across many services, delegation chains 3-5 agents deep "
            "and many concurrent tasks.",
            agent_tools=(15, 40),
            generalist_share=0.5,
            sub_orchestrator_share=0.5,
            chain_depth=5,
            sub_delegate=0.7,
            agent_tasks_per_hour=10.0,
        ),
        Profile(
            "bursty_batch",
            "Service accounts running nightly / weekly batch jobs: thousands of calls in "
            "minutes, then silence.",
            batch_share=0.5,
        ),
        Profile(
            "peer_mix",
            "Peer groups from 1-3 members to 200+ (a contact-centre team, a CI runner fleet) "
            "at 1000 identities.",
            mix=Mix(0.55, 0.25, 0.20),
            big_team_share=0.38,
            tiny_team_share=0.15,
            fleet_share=0.8,
            tiny_families=5,
        ),
    )
}


def get_profile(name: str) -> Profile:
    """The profile called ``name`` (ValueError listing the known ones otherwise)."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown profile {name!r}; known: {', '.join(sorted(PROFILES))}"
        ) from None


def _pick(rng: np.random.Generator, cands: Array, share: float) -> Array:
    """A random ``share`` of ``cands`` (sorted)."""
    k = round(len(cands) * share)
    if k <= 0 or len(cands) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.sort(rng.choice(cands, size=min(k, len(cands)), replace=False)).astype(np.int64)


class _Builder:
    """Mutable copies of the population arrays a profile reshapes."""

    def __init__(self, pop: Population, prof: Profile, seed: int) -> None:
        self.pop = pop
        self.prof = prof
        self.seed = seed
        self.cat = catalogue()
        n = pop.n
        self.arrays: dict[str, Array] = {}
        self.traits = Traits(
            travel_stop_ms=np.zeros(n, dtype=np.int64),
            travel_phase_ms=np.zeros(n, dtype=np.int64),
            batch_period_ms=np.zeros(n, dtype=np.int64),
            batch_phase_ms=np.zeros(n, dtype=np.int64),
            batch_len_ms=np.zeros(n, dtype=np.int64),
            batch_calls=np.zeros(n, dtype=np.float32),
            chain_depth=prof.chain_depth,
            sub_delegate=prof.sub_delegate,
            counterparties=prof.counterparties,
            secret_data=prof.secret_data,
        )
        self.hs = np.arange(pop.n_human, dtype=np.int64)
        self.ss = np.arange(pop.n_human, pop.n_human + pop.n_service, dtype=np.int64)
        self.ag = np.arange(pop.n_human + pop.n_service, n, dtype=np.int64)

    def a(self, name: str) -> Array:
        """A private copy of a population array (made once)."""
        if name not in self.arrays:
            self.arrays[name] = getattr(self.pop, name).copy()
        arr: Array = self.arrays[name]
        return arr

    def rng(self, step: int) -> np.random.Generator:
        return rng_for(self.seed, _PROFILE_STREAM, step)

    def regroup(self, who: Array, groups: Array, rng: np.random.Generator) -> None:
        """Move identities to other peer groups: ceilings (and agents' models) follow."""
        if not len(who):
            return
        cat = self.cat
        group, ceiling = self.a("group"), self.a("ceiling")
        group[who] = groups
        lo = cat.group_ceiling[groups, 0]
        hi = cat.group_ceiling[groups, 1]
        ceiling[who] = (lo + np.floor(rng.random(len(who)) * (hi - lo + 1))).astype(np.int8)
        agents = who[self.pop.kind[who] == AGENT]
        if len(agents):
            model = self.a("model")
            first = int(cat.groups_of_kind(AGENT)[0])
            for i in agents.tolist():
                models = cat.kind_models[int(group[i]) - first]
                h = int(hash64(self.pop.key, i, 0x4D4F44)[0])
                model[i] = models[h % len(models)]

    def movable_agents(self) -> Array:
        """Agents that are not orchestrators (their kind can change without breaking chains)."""
        orch = self.cat.group_id(AGENT, "orchestrator")
        movable: Array = self.ag[self.pop.group[self.ag] != orch]
        return movable

    # ---- the knobs ----------------------------------------------------------------------------
    def secret(self) -> None:
        prof, cat, pop = self.prof, self.cat, self.pop
        rng = self.rng(1)
        fams = np.array(
            [cat.group_id(SERVICE, f) for f in ("key-management", "payroll", "secrets-broker")]
        )
        svc = _pick(rng, self.ss, prof.secret_service_share)
        self.regroup(svc, rng.choice(fams, size=len(svc), p=[0.4, 0.35, 0.25]), rng)
        rate = self.a("api_rate")
        rate[svc] = np.clip(rng.lognormal(np.log(40.0), 0.6, len(svc)), 8.0, 600.0)
        kinds = np.array([cat.group_id(AGENT, k) for k in ("hr-assistant", "secops")])
        agents = _pick(rng, self.movable_agents(), prof.secret_agent_share)
        self.regroup(agents, rng.choice(kinds, size=len(agents)), rng)
        # Root secret agents are mostly scheduled by a secret service: they run every hour.
        owner = self.a("owner")
        roots = agents[pop.root[agents]]
        if len(roots) and len(svc):
            scheduled = roots[rng.random(len(roots)) < 0.7]
            owner[scheduled] = rng.choice(svc, size=len(scheduled))
            rate[scheduled] = np.clip(rng.lognormal(np.log(4.0), 0.5, len(scheduled)), 1.5, 30)
        # People, finance and security staff read payroll / key material too.
        staff = [cat.group_id(HUMAN, r) for r in ("people", "finance", "security")]
        hum = self.hs[np.isin(pop.group[self.hs], staff) & (rng.random(pop.n_human) < 0.5)]
        ceiling = self.a("ceiling")
        ceiling[hum] = np.maximum(ceiling[hum], 4)

    def heavy(self) -> None:
        prof, pop = self.prof, self.pop
        rng = self.rng(2)
        rate, auth = self.a("api_rate"), self.a("auth_rate")
        hs, ss, ag = self.hs, self.ss, self.ag
        rate[hs] = np.clip(rng.lognormal(np.log(5.0), prof.human_rate_sigma, len(hs)), 0.2, 3000)
        auth[hs] = np.clip(rng.lognormal(np.log(3.0), 1.0, len(hs)), 0.2, 200)
        rate[ss] = np.clip(3.0 * (1.0 + rng.pareto(prof.service_rate_alpha, len(ss))), 1, 30_000)
        rate[ag] = np.clip(rng.lognormal(np.log(1.5), prof.agent_rate_sigma, len(ag)), 0.05, 200)
        steps = self.a("steps")
        steps[ag] = np.clip(1.0 + rng.lognormal(np.log(3.0), 0.8, len(ag)), 1.0, 40.0)
        out_mu, in_mu, vs = self.a("out_mu"), self.a("in_mu"), self.a("vol_sigma")
        out_mu += rng.normal(0.0, prof.volume_spread, pop.n).astype(np.float32)
        in_mu += rng.normal(0.0, prof.volume_spread, pop.n).astype(np.float32)
        vs[:] = rng.uniform(0.5, 1.6, pop.n).astype(np.float32)

    def shifts(self) -> None:
        prof, cat, pop = self.prof, self.cat, self.pop
        rng = self.rng(3)
        night = _pick(rng, self.hs, prof.night_share)
        if len(night):
            tz = cat.geo_tz_min[pop.geo[night]].astype(np.int64)
            start = (22 * 60 + tz + rng.integers(-6, 7, len(night)) * 5) % 1440
            self.a("work_start")[night] = start.astype(np.int16)
            self.a("work_len")[night] = rng.integers(450, 511, len(night)).astype(np.int16)
        rest = np.setdiff1d(self.hs, night)
        travellers = _pick(rng, rest, prof.travel_share)
        lo, hi = prof.travel_stop_days
        t = self.traits
        t.travel_stop_ms[travellers] = rng.integers(lo, hi + 1, len(travellers)) * _DAY_MS
        t.travel_phase_ms[travellers] = rng.integers(0, 7 * _DAY_MS, len(travellers))
        if len(travellers):
            self.traits = dataclasses.replace(t, travellers=True)
        remote = _pick(rng, np.setdiff1d(rest, travellers), prof.remote_mobile_share)
        self.a("mobile")[remote] = rng.uniform(0.5, 0.95, len(remote)).astype(np.float32)

    def fleet(self) -> None:
        prof, cat, pop = self.prof, self.cat, self.pop
        rng = self.rng(4)
        ag = self.ag
        if prof.agent_tools is not None:
            lo, hi = prof.agent_tools
            self.a("n_fav")[ag] = rng.integers(lo, hi + 1, len(ag)).astype(np.uint8)
        workflow = cat.group_id(AGENT, "workflow")
        gen = _pick(rng, self.movable_agents(), prof.generalist_share)
        self.regroup(gen, np.full(len(gen), workflow), rng)
        if prof.agent_tasks_per_hour is not None:
            rate = self.a("api_rate")
            rate[ag] = rng.lognormal(np.log(prof.agent_tasks_per_hour), 0.7, len(ag))
            self.a("steps")[ag] = rng.uniform(3.0, 12.0, len(ag)).astype(np.float32)
        subs = _pick(rng, pop.pooled.astype(np.int64), prof.sub_orchestrator_share)
        if len(subs):
            self.a("team_size")[subs] = rng.integers(2, 5, len(subs)).astype(np.uint8)
            self.arrays["orchestrators"] = np.union1d(pop.orchestrators, subs).astype(np.int32)

    def batch(self) -> None:
        prof, cat, pop = self.prof, self.cat, self.pop
        rng = self.rng(5)
        ss = self.ss
        if not len(ss):
            return
        likely = [cat.group_id(SERVICE, f) for f in ("etl", "backup", "billing", "search-indexer")]
        w = np.where(np.isin(pop.group[ss], likely), 3.0, 1.0)
        k = round(len(ss) * prof.batch_share)
        if k <= 0:
            return
        jobs = np.sort(rng.choice(ss, size=k, replace=False, p=w / w.sum())).astype(np.int64)
        weekly = rng.random(k) < prof.weekly_share
        period = np.where(weekly, 7 * _DAY_MS, _DAY_MS)
        night = rng.integers(0, 5 * 60, k) * 60_000  # start between 00:00 and 05:00 UTC
        t = self.traits
        t.batch_period_ms[jobs] = period
        t.batch_phase_ms[jobs] = night + np.where(weekly, rng.integers(0, 7, k) * _DAY_MS, 0)
        lo, hi = prof.batch_minutes
        t.batch_len_ms[jobs] = (rng.uniform(lo, hi, k) * 60_000).astype(np.int64)
        calls = np.clip(rng.lognormal(np.log(prof.batch_calls_median), 0.8, k), 300, 30_000)
        t.batch_calls[jobs] = calls.astype(np.float32)
        self.a("api_rate")[jobs] = 0.2  # outside its jobs: a health check now and then

    def peers(self) -> None:
        prof, cat = self.prof, self.cat
        rng = self.rng(6)
        group, team = self.a("group"), self.a("team")
        support = cat.group_id(HUMAN, "support")
        big = _pick(rng, self.hs, prof.big_team_share)
        self.regroup(big, np.full(len(big), support), rng)
        team[big] = 0
        # Tiny teams: the chosen humans form teams of 1-3 numbered after the role's teams.
        tiny = _pick(rng, np.setdiff1d(self.hs, big), prof.tiny_team_share)
        n_groups = len(cat.group_name)
        counts = np.bincount(group[self.hs], minlength=n_groups)
        n_teams = np.maximum(1, np.round(counts / TEAM_SIZE)).astype(np.int64)
        n_teams[support] = max(int(n_teams[support]), 1)
        next_team = n_teams.copy()
        left = 0
        for i in tiny.tolist():
            g = int(group[i])
            if left <= 0:
                left = int(rng.integers(1, 4))
                next_team[g] += 1
            team[i] = next_team[g] - 1
            left -= 1
        counts = np.bincount(group[self.hs], minlength=n_groups)
        per_team = np.maximum(1, np.round(counts / TEAM_SIZE)).astype(np.int16)
        self.arrays["n_teams"] = np.maximum(per_team, next_team.astype(np.int16))
        # Services: one big fleet, some families cut down to a handful.
        ss = self.ss
        ci = cat.group_id(SERVICE, "ci-runner")
        fleet = _pick(rng, ss[group[ss] != ci], prof.fleet_share)
        self.regroup(fleet, np.full(len(fleet), ci), rng)
        others = [int(g) for g in cat.groups_of_kind(SERVICE) if cat.group_weight[g] > 0]
        others = [g for g in others if g != ci]
        cut = rng.choice(others, size=min(prof.tiny_families, len(others)), replace=False)
        for g in cut.tolist():
            members = ss[group[ss] == g]
            keep = int(rng.integers(1, 4))
            self.regroup(members[keep:], np.full(max(len(members) - keep, 0), ci), rng)

    def build(self) -> Population:
        prof = self.prof
        if prof.secret_service_share or prof.secret_agent_share:
            self.secret()
        if prof.heavy_tail:
            self.heavy()
        if prof.night_share or prof.travel_share or prof.remote_mobile_share:
            self.shifts()
        if prof.agent_tools or prof.generalist_share or prof.sub_orchestrator_share:
            self.fleet()
        if prof.batch_share:
            self.batch()
        if prof.big_team_share or prof.tiny_team_share or prof.fleet_share:
            self.peers()
        return dataclasses.replace(self.pop, traits=self.traits, **self.arrays)  # type: ignore[arg-type]


def apply_profile(pop: Population, profile: Profile | str, seed: int) -> Population:
    """``pop`` (a default population) reshaped by ``profile`` (its own random stream)."""
    prof = get_profile(profile) if isinstance(profile, str) else profile
    if prof.name == "default":
        return pop
    return _Builder(pop, prof, seed).build()


def build_population(
    identities: int, seed: int = 7, mix: Mix | None = None, profile: str = "default"
) -> Population:
    """Draw a population of ``identities`` identities for the world ``profile``.

    The default population is drawn first (:func:`~pipeline.simulate.population.draw_population`),
    then the profile reshapes it with its own random stream, so ``"default"`` is exactly the
    population the default draw gives.
    """
    if profile == "default":
        return draw_population(identities, seed, mix)
    prof = get_profile(profile)
    return apply_profile(draw_population(identities, seed, mix or prof.mix), prof, seed)
