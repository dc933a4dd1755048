"""The population: humans, service accounts and AI agents with stable personal habits.

One numpy array per attribute, indexed by identity number; no Python object per identity, so a
million identities take a few tens of megabytes. Identities are laid out by kind: humans
``[0, n_human)``, services ``[n_human, n_human + n_service)``, agents after that. Favourite tools
and resources are *not* stored: they are recomputed from the seed (see
:mod:`pipeline.simulate.behaviours`).

>>> pop = draw_population(200, seed=1)
>>> pop.n, pop.n_human + pop.n_service + pop.n_agent
(200, 200)
>>> pop.uid(0), pop.uid(pop.n_human), pop.uid(pop.n - 1)
('usr-0000000', 'svc-0000120', 'agt-0000199')
>>> bool((pop.owner[pop.roots] >= 0).all())  # humans or services own every root agent
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from pipeline.simulate.catalogue import (
    AGENT,
    HUMAN,
    PROTO_KERBEROS,
    PROTO_OAUTH,
    PROTO_OIDC,
    PROTO_SAML,
    SERVICE,
    catalogue,
    ip_blocks,
)
from pipeline.simulate.seeds import Array, hash64, rng_for, unit

__all__ = ["Mix", "Population", "Traits", "draw_population"]

_POP_STREAM: Final = 0x504F50  # "POP": the population's own random stream
_NAME_KEY: Final = 0x4E414D45
_PREFIX_KEY: Final = 0x50524546
_TRAVEL_KEY: Final = 0x54524156
TEAM_SIZE: Final = 12  # humans per team within a role
UID_PREFIX: Final = ("usr-", "svc-", "agt-")

_FIRST: Final = (
    "alex", "maria", "john", "wei", "priya", "james", "fatima", "lucas", "sofia", "ahmed",
    "emma", "liam", "olivia", "noah", "ava", "mateo", "yuki", "chen", "anna", "david",
    "sara", "omar", "elena", "ivan", "grace", "daniel", "mei", "arjun", "laura", "thomas",
    "nina", "pedro", "hana", "samuel", "zoe", "kofi", "ines", "raj", "julia", "ben",
)  # fmt: skip
_LAST: Final = (
    "smith", "garcia", "mueller", "wang", "patel", "johnson", "khan", "silva", "rossi",
    "kim", "brown", "martin", "nguyen", "lopez", "tanaka", "cohen", "dubois", "novak",
    "williams", "jones", "singh", "ivanova", "okafor", "schmidt", "costa", "larsen",
    "murphy", "sato", "fernandez", "kowalski", "ali", "chen", "walker", "moreau", "berg",
    "haddad", "reyes", "yamamoto", "osei", "fischer",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Mix:
    """Share of each identity kind (normalised, so weights work too)."""

    human: float = 0.60
    service: float = 0.15
    agent: float = 0.25

    def counts(self, n: int) -> tuple[int, int, int]:
        total = self.human + self.service + self.agent
        if total <= 0 or min(self.human, self.service, self.agent) < 0:
            raise ValueError(f"invalid identity mix {self}")
        n_h = round(n * self.human / total)
        n_s = min(n - n_h, round(n * self.service / total))
        return n_h, n_s, n - n_h - n_s


@dataclass(frozen=True, slots=True, eq=False)
class Traits:
    """Habits only population profiles give (see :mod:`pipeline.simulate.profiles`).

    Arrays have length ``n``; a zero means "not this identity". The default population has
    none (``Population.traits is None``) and behaves exactly as it always has.
    """

    travel_stop_ms: Array  # int64: travellers stay this long in each place (0: never travel)
    travel_phase_ms: Array  # int64: when a traveller's itinerary starts
    batch_period_ms: Array  # int64: services running a batch job every period (0: none)
    batch_phase_ms: Array  # int64: job start within the period
    batch_len_ms: Array  # int64: how long one job runs
    batch_calls: Array  # float32: API calls per job
    chain_depth: int = 2  # most agents in one delegation chain (2: orchestrator → worker)
    sub_delegate: float = 0.0  # chance a sub-orchestrator delegates a step further down
    counterparties: bool = False  # write/send calls name their counterparty as a resource
    secret_data: bool = False  # HR / payments hold Secret data (catalogue.secret_catalogue)
    travellers: bool = False  # some identities have travel_stop_ms > 0


@dataclass(frozen=True, slots=True, eq=False)
class Population:
    """Per-identity attributes as arrays (length ``n`` unless noted)."""

    n: int
    seed: int
    key: int  # hashing key derived from the seed
    n_human: int
    n_service: int
    n_agent: int
    kind: Array  # uint8: HUMAN / SERVICE / AGENT
    group: Array  # int16: peer group (role, service family, agent kind)
    team: Array  # int16: team within the role (humans), 0 otherwise
    geo: Array  # int16: home city (humans) or region of the environment
    asn: Array  # int16: home network
    prefix: Array  # uint32: home /24
    env: Array  # int8: environment (services, agents), -1 for humans
    work_start: Array  # int16: local minute of day work starts (humans)
    work_len: Array  # int16: minutes worked per day (humans)
    weekend: Array  # float32: activity factor at weekends (humans)
    offhours: Array  # float32: activity factor outside working hours (humans)
    api_rate: Array  # float32: API calls per active hour (humans, services), tasks/h (agents)
    auth_rate: Array  # float32: sign-ins per active hour (humans)
    auth_period: Array  # int32: seconds between token refreshes (services)
    steps: Array  # float32: mean steps per task (agents)
    out_mu: Array  # float32: log of typical bytes_out
    in_mu: Array  # float32: log of typical bytes_in
    vol_sigma: Array  # float32: lognormal sigma of volumes
    fail: Array  # float32: failure probability
    mfa: Array  # float32: probability a logon uses MFA (humans)
    mobile: Array  # float32: share of events from a mobile network (humans)
    proto: Array  # int8: habitual auth protocol
    ceiling: Array  # int8: highest sensitivity rank normally touched
    n_fav: Array  # uint8: number of favourite operations
    model: Array  # int16: model (agents), -1 otherwise
    owner: Array  # int32: identity that hands a root agent its tasks, -1 otherwise
    root: Array  # bool: agent receives tasks directly from its owner
    team_size: Array  # uint8: downstream agents an orchestrator delegates to
    orchestrators: Array  # int32 [n_orchestrators], sorted
    pooled: Array  # int32 [n_pooled]: workers that only get tasks from orchestrators
    roots: Array  # int32 [n_roots]: agents that receive tasks directly (from their owner)
    n_teams: Array  # int16 [n_groups]
    traits: Traits | None = None  # profile-only habits (None: the default world)

    # ---- identity strings (computed, never stored) -------------------------------------------
    def kind_of(self, i: int) -> int:
        return (
            HUMAN if i < self.n_human else SERVICE if i < self.n_human + self.n_service else AGENT
        )

    def uid(self, i: int) -> str:
        """Opaque, stable identity uid (also the Kafka message key)."""
        return f"{UID_PREFIX[self.kind_of(i)]}{i:07d}"

    def uids(self, idx: Array) -> list[str]:
        """Vectorised :meth:`uid` for many identities."""
        bounds = (self.n_human, self.n_human + self.n_service)
        kinds = np.searchsorted(np.asarray(bounds), idx, side="right").tolist()
        return [f"{UID_PREFIX[k]}{i:07d}" for k, i in zip(kinds, idx.tolist(), strict=True)]

    def names(self, idx: Array) -> list[str]:
        """Display names: ``first.last`` (humans), ``<family>-<n>`` / ``<kind>-agent-<n>``."""
        cat = catalogue()
        h = hash64(self.key, idx, _NAME_KEY)
        first = (h % np.uint64(len(_FIRST))).astype(np.int64).tolist()
        last = ((h >> np.uint64(20)) % np.uint64(len(_LAST))).astype(np.int64).tolist()
        groups = self.group[idx].tolist()
        out = []
        for i, f, la, g in zip(idx.tolist(), first, last, groups, strict=True):
            k = self.kind_of(i)
            if k == HUMAN:
                out.append(f"{_FIRST[f]}.{_LAST[la]}")
            elif k == SERVICE:
                out.append(f"{cat.group_name[g]}-{i - self.n_human}")
            else:
                out.append(f"{cat.group_name[g]}-agent-{i - self.n_human - self.n_service}")
        return out

    # ---- habits in time ------------------------------------------------------------------------
    def activity_at(self, ident: Array, t_ms: Array | int) -> tuple[Array, Array]:
        """Activity factor of humans ``ident`` at times ``t_ms``, and "first work half-hour".

        1 inside working hours (0.5 over lunch), ``offhours`` outside, scaled by ``weekend`` on
        Saturdays and Sundays - all in the person's own time zone. Evaluated per event, so
        habits do not depend on how the run is sliced.
        """
        tz = catalogue().geo_tz_min[self.located(ident, t_ms)].astype(np.int64)
        local = np.asarray(t_ms, dtype=np.int64) // 60_000 + tz
        minute = local % 1440
        weekday = (local // 1440 + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        since = (minute - self.work_start[ident]) % 1440
        working = since < self.work_len[ident]
        factor = np.where(working, 1.0, self.offhours[ident]).astype(np.float32)
        factor[working & (since >= 240) & (since < 285)] = 0.5
        weekend = weekday >= 5
        factor[weekend] *= self.weekend[ident][weekend]
        first = working & (since < 30) & ~weekend
        return factor, first

    def stop_geo(self, ident: Array, k: Array) -> Array:
        """Where traveller ``ident`` is during its ``k``-th stop: home (40 %) or another city."""
        cat = catalogue()
        h = hash64(self.key, ident, k, _TRAVEL_KEY)
        away = unit(h) >= 0.4
        pick = ((h >> np.uint64(8)) % np.uint64(len(cat.home_geos))).astype(np.int64)
        return np.where(away, cat.home_geos[pick], self.geo[ident]).astype(np.int16)

    def located(self, ident: Array, t_ms: Array | int) -> Array:
        """Where each identity is at ``t_ms``: home, or (profiles) a traveller's current stop.

        Travellers keep the working hours of wherever they are.
        """
        traits = self.traits
        if traits is None or not traits.travellers:
            return self.geo[ident]
        geo = self.geo[ident].copy()
        stop = traits.travel_stop_ms[ident]
        moving = stop > 0
        if moving.any():
            t = np.broadcast_to(np.asarray(t_ms, dtype=np.int64), np.shape(ident))[moving]
            k = (t - traits.travel_phase_ms[ident[moving]]) // stop[moving]
            geo[moving] = self.stop_geo(ident[moving], k)
        return geo

    def human_activity(self, t_ms: int) -> tuple[Array, Array]:
        """:meth:`activity_at` for every human at one instant."""
        return self.activity_at(np.arange(self.n_human), t_ms)

    def owner_activity(self, agents: Array, t_ms: Array) -> Array:
        """Task-arrival factor of root agents at ``t_ms``: their owner's activity (services: 1)."""
        owner = self.owner[agents]
        factor = np.ones(len(owner), dtype=np.float32)
        human_owned = (owner >= 0) & (owner < self.n_human)
        if human_owned.any():
            factor[human_owned] = self.activity_at(owner[human_owned], t_ms[human_owned])[0]
        return factor

    def team_member(self, orch: Array, slot: Array) -> Array:
        """The ``slot``-th habitual downstream agent of each orchestrator (-1 if none exist).

        Slot ``j`` of orchestrator rank ``r`` is pooled worker ``(r + j * n_orch) % n_pooled``:
        every pooled worker serves some orchestrator, and nothing is stored.
        """
        n_o, n_p = len(self.orchestrators), len(self.pooled)
        if n_p == 0 or n_o == 0:
            return np.full(len(orch), -1, dtype=np.int32)
        rank = np.searchsorted(self.orchestrators, orch)
        members: Array = self.pooled[(rank + slot.astype(np.int64) * n_o) % n_p]
        return members

    def is_team_member(self, orch: int, agent: int) -> bool:
        slots = np.arange(int(self.team_size[orch]))
        members = self.team_member(np.full(len(slots), orch), slots)
        return bool((members == agent).any())


def draw_population(identities: int, seed: int = 7, mix: Mix | None = None) -> Population:
    """Draw the default population of ``identities`` identities (vectorised; 1,000,000 in a few
    seconds). A world's profile reshapes it afterwards
    (:func:`pipeline.simulate.profiles.build_population`)."""
    return _draw(identities, seed, mix)


def _draw(identities: int, seed: int, mix: Mix | None) -> Population:
    if identities < 10:
        raise ValueError("a population needs at least 10 identities")
    mix = mix or Mix()
    cat = catalogue()
    rng = rng_for(seed, _POP_STREAM)
    key = int(hash64(seed, _POP_STREAM)[0])
    n = identities
    n_h, n_s, n_a = mix.counts(n)
    hs, ss, ag = slice(0, n_h), slice(n_h, n_h + n_s), slice(n_h + n_s, n)
    idx = np.arange(n, dtype=np.int64)

    kind = np.repeat(np.array([HUMAN, SERVICE, AGENT], dtype=np.uint8), [n_h, n_s, n_a])
    group = np.empty(n, dtype=np.int16)
    for k, sl, size in ((HUMAN, hs, n_h), (SERVICE, ss, n_s), (AGENT, ag, n_a)):
        gs = cat.groups_of_kind(k)
        group[sl] = rng.choice(gs, size=size, p=cat.group_weight[gs])
    n_groups = len(cat.group_name)
    counts = np.bincount(group[hs], minlength=n_groups)
    n_teams = np.maximum(1, np.round(counts / TEAM_SIZE)).astype(np.int16)
    team = np.zeros(n, dtype=np.int16)
    team[hs] = np.floor(rng.random(n_h) * n_teams[group[hs]]).astype(np.int16)

    # Places and networks: humans live in a city on a home ISP; workloads run in an environment.
    geo = np.empty(n, dtype=np.int16)
    asn = np.empty(n, dtype=np.int16)
    env = np.full(n, -1, dtype=np.int8)
    geo[hs] = rng.choice(cat.home_geos, size=n_h, p=cat.home_weight)
    lo = cat.home_isp_ptr[geo[hs]]
    span = cat.home_isp_ptr[geo[hs] + 1] - lo
    asn[hs] = cat.home_isp[lo + np.floor(rng.random(n_h) * span).astype(np.int64)]
    workload = slice(n_h, n)
    env[workload] = rng.choice(len(cat.env_name), size=n - n_h, p=cat.env_weight)
    geo[workload] = cat.env_geo[env[workload]]
    asn[workload] = cat.env_asn[env[workload]]
    sub = (hash64(key, idx, _PREFIX_KEY) & np.uint64(0x3FF)).astype(np.uint32)
    prefix = ip_blocks(cat.asn_number[asn], geo) | (sub << np.uint32(8))

    # Working habits (humans only; zeros elsewhere).
    work_start = np.zeros(n, dtype=np.int16)
    work_len = np.zeros(n, dtype=np.int16)
    work_start[hs] = (np.clip(rng.normal(510, 50, n_h), 360, 720) // 5 * 5).astype(np.int16)
    work_len[hs] = rng.integers(480, 601, n_h)
    weekend = np.zeros(n, dtype=np.float32)
    weekend[hs] = rng.choice([0.03, 0.15, 0.5], size=n_h, p=[0.7, 0.25, 0.05])
    offhours = np.zeros(n, dtype=np.float32)
    offhours[hs] = rng.uniform(0.005, 0.04, n_h)

    # Rates and volumes.
    api_rate = np.zeros(n, dtype=np.float32)
    api_rate[hs] = rng.lognormal(np.log(14.0), 0.6, n_h)
    api_rate[ss] = np.clip(rng.lognormal(np.log(30.0), 1.0, n_s), 1.0, 900.0)
    api_rate[ag] = rng.lognormal(np.log(3.0), 0.6, n_a)  # tasks per owner-active hour
    auth_rate = np.zeros(n, dtype=np.float32)
    auth_rate[hs] = rng.lognormal(np.log(5.0), 0.5, n_h)
    auth_period = np.zeros(n, dtype=np.int32)
    auth_period[ss] = rng.choice([120, 300, 600, 900, 1800], size=n_s)
    steps = np.zeros(n, dtype=np.float32)
    steps[ag] = rng.uniform(2.0, 9.0, n_a)
    base_out = np.array([np.log(600.0), np.log(2000.0), np.log(1500.0)], dtype=np.float32)
    base_in = np.array([np.log(3000.0), np.log(8000.0), np.log(4000.0)], dtype=np.float32)
    out_mu = (base_out[kind] + rng.normal(0, 0.5, n)).astype(np.float32)
    in_mu = (base_in[kind] + rng.normal(0, 0.7, n)).astype(np.float32)
    vol_sigma = rng.uniform(0.4, 0.9, n).astype(np.float32)
    fail = np.empty(n, dtype=np.float32)
    fail[hs] = rng.beta(2, 60, n_h)
    fail[ss] = rng.beta(1.2, 400, n_s)
    fail[ag] = rng.beta(2, 80, n_a)
    mfa = np.zeros(n, dtype=np.float32)
    mfa[hs] = rng.choice([0.99, 0.85, 0.3], size=n_h, p=[0.7, 0.22, 0.08])
    mobile = np.zeros(n, dtype=np.float32)
    mobile[hs] = rng.uniform(0.01, 0.12, n_h)
    proto = np.full(n, PROTO_OAUTH, dtype=np.int8)
    proto[hs] = rng.choice([PROTO_SAML, PROTO_OIDC, PROTO_KERBEROS], size=n_h, p=[0.45, 0.4, 0.15])
    proto[ss] = rng.choice([PROTO_OAUTH, PROTO_KERBEROS], size=n_s, p=[0.8, 0.2])
    ceil_lo = cat.group_ceiling[group, 0]
    ceil_hi = cat.group_ceiling[group, 1]
    ceiling = (ceil_lo + np.floor(rng.random(n) * (ceil_hi - ceil_lo + 1))).astype(np.int8)
    n_fav = np.empty(n, dtype=np.uint8)
    n_fav[hs] = rng.integers(5, 15, n_h)
    n_fav[ss] = rng.integers(2, 7, n_s)
    n_fav[ag] = rng.integers(3, 10, n_a)

    # Agents: model, ownership, orchestration.
    model = np.full(n, -1, dtype=np.int16)
    owner = np.full(n, -1, dtype=np.int32)
    root = np.zeros(n, dtype=bool)
    team_size = np.zeros(n, dtype=np.uint8)
    agent_groups = cat.groups_of_kind(AGENT)
    orch_group = cat.group_id(AGENT, "orchestrator")
    if n_a:
        a_idx = idx[ag]
        kind_pos = group[ag] - agent_groups[0]
        width = max(len(m) for m in cat.kind_models)
        table = np.array([list(m) + [m[0]] * (width - len(m)) for m in cat.kind_models])
        lens = np.array([len(m) for m in cat.kind_models], dtype=np.uint64)
        pick = hash64(key, a_idx, 0x4D4F44) % lens[kind_pos]
        model[ag] = table[kind_pos, pick.astype(np.int64)]
        is_orch = group[ag] == orch_group
        root[ag] = is_orch | (rng.random(n_a) < 0.4)
        team_size[ag] = np.where(is_orch, rng.integers(2, 6, n_a), 0)
        roots_a = a_idx[root[ag]]
        # Root agents belong to a human (85%) or a scheduling service.
        by_service = rng.random(len(roots_a)) < 0.15
        if n_h == 0:
            by_service[:] = True
        if n_s == 0:
            by_service[:] = False
        if n_h or n_s:
            hum = rng.integers(0, max(n_h, 1), len(roots_a))
            svc = n_h + rng.integers(0, max(n_s, 1), len(roots_a))
            owner[roots_a] = np.where(by_service, svc, hum)
    agents = idx[ag]
    orchestrators = agents[group[ag] == orch_group].astype(np.int32)
    pooled = agents[~root[ag]].astype(np.int32)
    roots = agents[root[ag]].astype(np.int32)  # without humans or services: self-scheduled

    return Population(
        n=n,
        seed=seed,
        key=key,
        n_human=n_h,
        n_service=n_s,
        n_agent=n_a,
        kind=kind,
        group=group,
        team=team,
        geo=geo,
        asn=asn,
        prefix=prefix,
        env=env,
        work_start=work_start,
        work_len=work_len,
        weekend=weekend,
        offhours=offhours,
        api_rate=api_rate,
        auth_rate=auth_rate,
        auth_period=auth_period,
        steps=steps,
        out_mu=out_mu,
        in_mu=in_mu,
        vol_sigma=vol_sigma,
        fail=fail,
        mfa=mfa,
        mobile=mobile,
        proto=proto,
        ceiling=ceiling,
        n_fav=n_fav,
        model=model,
        owner=owner,
        root=root,
        team_size=team_size,
        orchestrators=orchestrators,
        pooled=pooled,
        roots=roots,
        n_teams=n_teams,
    )
