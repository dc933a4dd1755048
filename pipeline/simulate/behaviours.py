"""Benign behaviour: what humans and services habitually do, one time slice at a time.

:class:`Habits` holds the vectorised pickers every generator shares (agents and attack scenarios
too): favourite operations and resources, volumes, failures, networks, rationales. Favourites are
recomputed from the seed each time (a hash of identity and favourite slot), never stored.

Peers look alike because a share of each identity's picks (``group_team_share``) is keyed by its
team (humans) or its family / kind (services, agents) instead of by the identity itself.

>>> from pipeline.simulate.profiles import build_population
>>> from pipeline.simulate.seeds import rng_for
>>> pop = build_population(300, seed=3)
>>> habits = Habits(pop)
>>> rng = rng_for(3, 0)
>>> ident = np.zeros(50, dtype=np.int64)  # the same human, 50 times
>>> ops = habits.ops(ident, rng)
>>> len(set(ops.tolist())) <= int(pop.n_fav[0]) * 2 + 3  # a small favourite set
True
>>> b = human_events(habits, 1_700_000_000_000, 60_000, rng)
>>> bool((b.ident < pop.n_human).all())
True
"""

from __future__ import annotations

from typing import Final

import numpy as np

from pipeline.simulate.batches import API, AUTH, Batch
from pipeline.simulate.catalogue import (
    PROTO_KERBEROS,
    PROTO_OAUTH,
    Catalogue,
    catalogue,
    ip_blocks,
)
from pipeline.simulate.population import Population
from pipeline.simulate.seeds import Array, hash64, mix64, unit, zipf_rank

__all__ = ["Habits", "human_events", "service_events"]

TEAM_FLAG: Final = 1 << 62  # favourites keyed by team / family, not by identity
_OPS_KEY: Final = 0x4F5053
_RES_KEY: Final = 0x524553
_HOST_KEY: Final = 0x484F5354
_PREFIX_KEY: Final = 0x50524546  # same key as population prefixes
RES_FAVOURITES: Final = 12  # favourite resources per identity and service
OP_EXPLORE: Final = 0.005  # share of calls to a tool outside the favourites (benign novelty)
RES_EXPLORE: Final = 0.02
_HOUR_MS: Final = 3_600_000
_DAY_MS: Final = 86_400_000
# Counterparties (profiles only): write/send operations name whom they pay, mail or invite.
COUNTERPARTY_OPS: Final = {
    ("payments", "refunds.create"): 0,  # iban
    ("email", "messages.send"): 1,  # mail
    ("tickets", "tickets.reply"): 1,
    ("slack", "admin.users.invite"): 2,  # user
    ("github", "orgs.add_member"): 2,
}
CP_SHIFT: Final = 58  # Batch.cpty = kind << CP_SHIFT | 58 hash bits
CP_CORE: Final = 0.85  # share of calls to the identity's (or team's) stable counterparties
CP_EXPLORE: Final = 0.01  # share of calls to a one-off new counterparty (benign novelty)
CP_ROLL_MS: Final = 7 * _DAY_MS  # one more counterparty joins the recent ones each week
CP_RECENT: Final = 8  # recent counterparties in use at a time
CP_ATTACK_SLOT: Final = 1 << 40  # slots only attack campaigns use (never benign)
_CP_KEY: Final = 0x43505459
_TRAVEL_KEY: Final = 0x54524156  # same key as Population.stop_geo
FLIGHT_KMH: Final = 800.0  # travellers are silent while flying between stops (plus an hour)


class Habits:
    """Vectorised habitual choices for arrays of identities (one row per event)."""

    def __init__(self, pop: Population, cat: Catalogue | None = None) -> None:
        self.pop = pop
        self.cat = cat or catalogue()
        self.delegate_op = self.cat.op_id("a2a", "tasks.delegate")
        self.traits = pop.traits  # None: the default world (no profile habits)
        self.cp_kind = np.full(len(self.cat.op_name), -1, dtype=np.int8)
        for name, k in COUNTERPARTY_OPS.items():
            self.cp_kind[self.cat.op_id(*name)] = k
        t = self.traits
        self.with_counterparties = t is not None and t.counterparties
        self.travel = t is not None and bool((t.travel_stop_ms > 0).any())

    # ---- tools and resources ----------------------------------------------------------------
    def _keys(self, ident: Array, rng: np.random.Generator) -> Array:
        """Per event: the identity itself, or (a share of the time) its team / family."""
        pop = self.pop
        g = pop.group[ident].astype(np.int64)
        team = rng.random(len(ident)) < self.cat.group_team_share[g]
        team_key = np.int64(TEAM_FLAG) | (g << 20) | pop.team[ident].astype(np.int64)
        return np.where(team, team_key, ident.astype(np.int64))

    def ops_for_groups(self, group: Array, u: Array) -> Array:
        """Operation drawn from each group's weighted tool mix with uniforms ``u``."""
        pos = np.searchsorted(self.cat.group_cdf, group.astype(np.float64) + u, side="right")
        return self.cat.group_op[np.minimum(pos, len(self.cat.group_op) - 1)]

    def ops(self, ident: Array, rng: np.random.Generator) -> Array:
        """Favourite operations: Zipf over the identity's own small set (drawn from its group)."""
        pop = self.pop
        n = len(ident)
        slot = zipf_rank(rng.random(n), pop.n_fav[ident])
        key = self._keys(ident, rng)
        u = unit(hash64(pop.key, key, slot, _OPS_KEY))
        group = pop.group[ident]
        op = self.ops_for_groups(group, u)
        explore = rng.random(n) < OP_EXPLORE
        if explore.any():
            op[explore] = self.ops_for_groups(group[explore], rng.random(int(explore.sum())))
        return op.astype(np.int16)

    def resources(
        self, ident: Array, op: Array, rng: np.random.Generator, *, min_rank: Array | None = None
    ) -> Array:
        """Favourite resources of the op's service, within the identity's sensitivity ceiling.

        ``min_rank`` (scenarios) forces resources at least that sensitive instead.
        """
        pop, cat = self.pop, self.cat
        n = len(ident)
        svc = cat.op_service[op].astype(np.int64)
        slot = zipf_rank(rng.random(n), RES_FAVOURITES)
        explore = rng.random(n) < RES_EXPLORE
        slot[explore] = RES_FAVOURITES + rng.integers(0, 1000, int(explore.sum()))
        key = self._keys(ident, rng)
        h = hash64(pop.key, key, svc, slot, _RES_KEY)
        pos = np.searchsorted(cat.svc_rank_cdf, svc + unit(h), side="right")
        rank = np.minimum(pos - svc * cat.res_count.shape[1], pop.ceiling[ident])
        if min_rank is not None:
            rank = np.maximum(min_rank, rank)
        eff = cat.eff_rank[svc, np.clip(rank, 0, cat.res_count.shape[1] - 1)]
        count = cat.res_count[svc, eff]
        res = cat.res_start[svc, eff] + zipf_rank(unit(mix64(h)), count)
        return np.where(count > 0, res, -1).astype(np.int32)

    # ---- counterparties (profiles) -----------------------------------------------------------
    def counterparties(
        self, ident: Array, op: Array, time: Array, rng: np.random.Generator
    ) -> Array:
        """``Batch.cpty`` of each call: whom a payment / mail / invite goes to (-1: not one).

        Mostly the identity's (or its team's) few stable counterparties; some of the time one
        of its recent ones (one more joins each week, the oldest drops out); rarely a one-off.
        """
        pop = self.pop
        out = np.full(len(ident), -1, dtype=np.int64)
        kind = np.where(op >= 0, self.cp_kind[np.maximum(op, 0)], -1).astype(np.int64)
        rows = np.flatnonzero(kind >= 0)
        if not len(rows):
            return out
        who = ident[rows].astype(np.int64)
        m = len(rows)
        key = self._keys(who, rng)
        n_core = 2 + (hash64(pop.key, who, _CP_KEY) % np.uint64(10)).astype(np.int64)
        u = rng.random(m)
        slot = zipf_rank(rng.random(m), n_core)
        recent = (u >= CP_CORE) & (u < 1.0 - CP_EXPLORE)
        week = (
            time[rows].astype(np.int64)
            + (hash64(pop.key, who, 1) % np.uint64(CP_ROLL_MS)).astype(np.int64)
        ) // CP_ROLL_MS
        slot[recent] = 1_000_000 + week[recent] - rng.integers(0, CP_RECENT, int(recent.sum()))
        key[recent] = who[recent]
        one_off = u >= 1.0 - CP_EXPLORE
        slot[one_off] = (1 << 32) + rng.integers(0, 1 << 30, int(one_off.sum()))
        out[rows] = self.counterparty_ids(key, kind[rows], slot)
        return out

    def counterparty_ids(self, key: Array | int, kind: Array | int, slot: Array | int) -> Array:
        """``Batch.cpty`` values for (identity or team key, kind, slot)."""
        h = hash64(self.pop.key, key, kind, slot, _CP_KEY) >> np.uint64(64 - CP_SHIFT)
        return (np.asarray(kind, dtype=np.int64) << CP_SHIFT) | h.astype(np.int64)

    # ---- travel (profiles) --------------------------------------------------------------------
    def stop_geo(self, ident: Array, k: Array) -> Array:
        """Where traveller ``ident`` is during its ``k``-th stop (see Population.stop_geo)."""
        return self.pop.stop_geo(ident, k)

    def _stops(self, ident: Array, time: Array) -> tuple[Array, Array, Array]:
        """Travellers among ``ident`` (mask), their stop index and time since it began."""
        t = self.traits
        assert t is not None
        stop = t.travel_stop_ms[ident]
        tr = stop > 0
        rel = time.astype(np.int64) - t.travel_phase_ms[ident]
        k = np.where(tr, rel // np.maximum(stop, 1), 0)
        return tr, k, rel - k * stop

    def in_flight(self, ident: Array, time: Array) -> Array:
        """Travellers on their way between two stops (no events then: plausible speeds)."""
        tr, k, since = self._stops(ident, time)
        out = np.zeros(len(ident), dtype=bool)
        rows = np.flatnonzero(tr)
        if not len(rows):
            return out
        i = ident[rows]
        a = self.stop_geo(i, k[rows] - 1)
        b = self.stop_geo(i, k[rows])
        cat = self.cat
        la1, lo1 = np.radians(cat.geo_lat[a]), np.radians(cat.geo_long[a])
        la2, lo2 = np.radians(cat.geo_lat[b]), np.radians(cat.geo_long[b])
        hv = np.sin((la2 - la1) / 2) ** 2 + np.cos(la1) * np.cos(la2) * np.sin((lo2 - lo1) / 2) ** 2
        km = 2 * 6371.0 * np.arcsin(np.sqrt(hv))
        flight = np.where(a != b, (km / FLIGHT_KMH + 1.0) * _HOUR_MS, 0.0)
        out[rows] = since[rows] < flight
        return out

    def _travel(
        self, ident: Array, time: Array, geo: Array, asn: Array, ip: Array, rng: np.random.Generator
    ) -> None:
        """Travellers away from home: the city they are in, a hotel / office ISP or roaming."""
        pop, cat = self.pop, self.cat
        tr, k, _since = self._stops(ident, time)
        rows = np.flatnonzero(tr)
        if not len(rows):
            return
        i = ident[rows]
        g = self.stop_geo(i, k[rows])
        away = g != pop.geo[i]
        rows, i, g, kk = rows[away], i[away], g[away], k[rows][away]
        if not len(rows):
            return
        h = hash64(pop.key, i, kk, _TRAVEL_KEY, 2)
        lo = cat.home_isp_ptr[g]
        span = np.maximum(cat.home_isp_ptr[g + 1] - lo, 1)
        fixed = cat.home_isp[lo + (h % span.astype(np.uint64)).astype(np.int64)]
        roaming = rng.random(len(rows)) < 0.3
        net = np.where(roaming, cat.geo_mobile[g], fixed).astype(np.int16)
        host = ((h >> np.uint64(20)) % np.uint64(1 << 18)).astype(np.uint32) | np.uint32(1)
        geo[rows] = g
        asn[rows] = net
        ip[rows] = ip_blocks(cat.asn_number[net], g) | host

    # ---- outcomes and volumes ---------------------------------------------------------------
    def failures(self, ident: Array, rng: np.random.Generator) -> Array:
        """OCSF status_id per event: 2 (Failure) with the identity's failure rate, else 1."""
        return np.where(rng.random(len(ident)) < self.pop.fail[ident], 2, 1).astype(np.int8)

    def volumes(
        self, ident: Array, op: Array, status: Array, rng: np.random.Generator
    ) -> tuple[Array, Array]:
        """Lognormal (bytes_in, bytes_out) around the identity's typical volumes."""
        pop, cat = self.pop, self.cat
        n = len(ident)
        z = rng.standard_normal((2, n))
        sigma = pop.vol_sigma[ident]
        valid = op >= 0
        opi = np.where(valid, op, 0)
        adj_in = np.where(valid, cat.op_in_adj[opi], 0.0)
        adj_out = np.where(valid, cat.op_out_adj[opi], 0.0)
        b_in = np.exp(pop.in_mu[ident] + adj_in + sigma * z[0])
        b_out = np.exp(pop.out_mu[ident] + adj_out + sigma * z[1])
        failed = status == 2
        b_in[failed] = 120 + rng.integers(0, 400, int(failed.sum()))  # an error body
        return (
            np.clip(b_in, 40, 5e9).astype(np.int64),
            np.clip(b_out, 40, 5e9).astype(np.int64),
        )

    def rationale(self, op: Array, rng: np.random.Generator) -> Array:
        """A benign stated reason for each (agent) call."""
        cat = self.cat
        start = cat.op_why_start[op]
        count = cat.op_why_count[op]
        return (start + np.floor(rng.random(len(op)) * count)).astype(np.int16)

    # ---- networks ---------------------------------------------------------------------------
    def network(
        self, ident: Array, rng: np.random.Generator, time: Array | None = None
    ) -> tuple[Array, Array, Array]:
        """(geo, asn, ip) from home: a couple of stable hosts, sometimes a mobile network.

        Travellers (profiles; needs ``time``) connect from the city they are in instead.
        """
        pop, cat = self.pop, self.cat
        n = len(ident)
        geo = pop.geo[ident].copy()
        asn = pop.asn[ident].copy()
        human = ident < pop.n_human
        alt = (human & (rng.random(n) < 0.15)).astype(np.int64)
        host = (np.uint64(1) + hash64(pop.key, ident, alt, _HOST_KEY) % np.uint64(254)).astype(
            np.uint32
        )
        ip = pop.prefix[ident] | host
        mobile = human & (rng.random(n) < pop.mobile[ident])
        if mobile.any():
            g = geo[mobile]
            carrier = cat.geo_mobile[g]
            asn[mobile] = carrier
            m = int(mobile.sum())
            ip[mobile] = ip_blocks(cat.asn_number[carrier], g) | rng.integers(
                256, 1 << 18, m
            ).astype(np.uint32)
        if self.travel and time is not None:
            self._travel(ident, np.asarray(time), geo, asn, ip, rng)
        return geo, asn, ip

    def workload_network(self, ident: Array, env: Array) -> tuple[Array, Array, Array]:
        """(geo, asn, ip) of workloads running in ``env`` (a clone elsewhere gets another IP)."""
        pop, cat = self.pop, self.cat
        geo = cat.env_geo[env]
        asn = cat.env_asn[env]
        sub = hash64(pop.key, ident, _PREFIX_KEY, env) & np.uint64(0x3FF)
        host = np.uint64(1) + hash64(pop.key, ident, 0, _HOST_KEY) % np.uint64(254)
        ip = ip_blocks(cat.asn_number[asn], geo) | ((sub << np.uint64(8)) | host).astype(np.uint32)
        home = env == pop.env[ident]
        ip = np.where(home, pop.prefix[ident] | host.astype(np.uint32), ip)
        return geo, asn, ip.astype(np.uint32)

    # ---- event builders ---------------------------------------------------------------------
    def api_events(
        self, ident: Array, time: Array, rng: np.random.Generator, op: Array | None = None
    ) -> Batch:
        """API Activity of humans / services: favourite tool, resource, volumes, home network."""
        n = len(ident)
        if op is None:
            op = self.ops(ident, rng)
        res = self.resources(ident, op, rng)
        status = self.failures(ident, rng)
        b_in, b_out = self.volumes(ident, op, status, rng)
        geo, asn, ip = self.network(ident, rng, time)
        env = self.pop.env[ident]
        b = Batch.new(
            n,
            time=time,
            ident=ident,
            eclass=API,
            activity=self.cat.op_activity[op],
            status=status,
            svc=self.cat.op_service[op],
            op=op,
            res=res,
            bytes_in=b_in,
            bytes_out=b_out,
            geo=geo,
            asn=asn,
            ip=ip,
            env=env,
        )
        if self.with_counterparties:
            b.cpty[:] = self.counterparties(ident, op, np.asarray(b.time), rng)
        return b

    def sign_in_services(self, ident: Array, rng: np.random.Generator) -> Array:
        """What a sign-in is for: the identity provider, the VPN, or a favourite app."""
        cat = self.cat
        svc = cat.op_service[self.ops(ident, rng)].astype(np.int16)
        u = rng.random(len(ident))
        human = ident < self.pop.n_human
        svc[human & (u < 0.3)] = cat.auth_service["sso"]
        svc[human & (u >= 0.3) & (u < 0.4)] = cat.auth_service["vpn"]
        return svc

    def auth_events(
        self, ident: Array, time: Array, rng: np.random.Generator, *, logon_only: bool = False
    ) -> Batch:
        """Authentication events of humans and services with their habitual protocol and MFA."""
        pop = self.pop
        n = len(ident)
        proto = pop.proto[ident]
        kerberos = proto == PROTO_KERBEROS
        human = ident < pop.n_human
        activity = np.ones(n, dtype=np.int8)
        if not logon_only:
            u = rng.random(n)
            # Kerberos users request tickets; web SSO users mostly log on, sometimes off.
            k_act = np.select([u < 0.35, u < 0.55, u < 0.85], [1, 3, 4], 2)
            w_act = np.where(u < 0.85, 1, 2)
            activity = np.where(kerberos, k_act, w_act).astype(np.int8)
            activity[~human & kerberos] = np.where(u[~human & kerberos] < 0.3, 3, 4)
            activity[~human & ~kerberos] = 1
        status = self.failures(ident, rng)
        status[activity == 2] = 1
        mfa = np.full(n, -1, dtype=np.int8)
        logon = activity == 1
        mfa[logon] = (rng.random(int(logon.sum())) < pop.mfa[ident[logon]]).astype(np.int8)
        geo, asn, ip = self.network(ident, rng, time)
        return Batch.new(
            n,
            time=time,
            ident=ident,
            eclass=AUTH,
            activity=activity,
            status=status,
            svc=self.sign_in_services(ident, rng),
            geo=geo,
            asn=asn,
            ip=ip,
            mfa=mfa,
            proto=proto,
            env=pop.env[ident],
        )


def _poisson_events(
    ident: Array, lam: Array, t0: int, dt_ms: int, rng: np.random.Generator
) -> tuple[Array, Array]:
    """Identities repeated by Poisson counts, with uniform times inside the slice."""
    k = rng.poisson(lam)
    who = np.repeat(ident, k)
    return who, t0 + rng.integers(0, dt_ms, len(who))


def human_events(habits: Habits, t0: int, dt_ms: int, rng: np.random.Generator) -> Batch:
    """Humans during ``[t0, t0 + dt_ms)``: sign-ins (a burst as the day starts) and API calls.

    Candidate events arrive at each human's peak rate and are kept with the probability given
    by their activity at their own time (thinning), so working hours are exact to the minute
    whatever the slice length.
    """
    pop = habits.pop
    nh = pop.n_human
    if nh == 0:
        return Batch.empty()
    humans = np.arange(nh, dtype=np.int64)
    hours = dt_ms / _HOUR_MS
    who, when = _poisson_events(humans, pop.api_rate[:nh] * hours, t0, dt_ms, rng)
    factor, _ = pop.activity_at(who, when)
    keep = rng.random(len(who)) < factor
    if habits.travel:
        keep &= ~habits.in_flight(who, when)
    api = habits.api_events(who[keep], when[keep], rng)
    # Sign-ins peak (x4) in the first half-hour of the working day.
    who, when = _poisson_events(humans, pop.auth_rate[:nh] * hours * 4.0, t0, dt_ms, rng)
    factor, first = pop.activity_at(who, when)
    keep = rng.random(len(who)) < factor * np.where(first, 1.0, 0.25)
    if habits.travel:
        keep &= ~habits.in_flight(who, when)
    auth = habits.auth_events(who[keep], when[keep], rng)
    return Batch.concat([auth, api])


def service_events(habits: Habits, t0: int, dt_ms: int, rng: np.random.Generator) -> Batch:
    """Services around the clock: steady Poisson API calls and periodic token refreshes."""
    pop = habits.pop
    lo, hi = pop.n_human, pop.n_human + pop.n_service
    if hi == lo:
        return Batch.empty()
    services = np.arange(lo, hi, dtype=np.int64)
    who, when = _poisson_events(services, pop.api_rate[lo:hi] * (dt_ms / _HOUR_MS), t0, dt_ms, rng)
    api = habits.api_events(who, when, rng)
    # Token refresh every `auth_period` seconds at a per-service phase: clockwork regularity.
    period = pop.auth_period[lo:hi].astype(np.int64) * 1000
    phase = (hash64(pop.key, services, 0x50484153) % period.astype(np.uint64)).astype(np.int64)
    first_k = -((phase - t0) // period)  # ceil((t0 - phase) / period)
    last_k = -((phase - (t0 + dt_ms)) // period)
    count = np.maximum(last_k - first_k, 0)
    traits = pop.traits
    jobs = Batch.empty()
    if traits is not None and traits.batch_period_ms[lo:hi].any():
        batch = traits.batch_period_ms[lo:hi] > 0
        count[batch] = 0  # batch services sign in when a job starts instead
        jobs = _batch_jobs(habits, services[batch], t0, dt_ms, rng)
    who = np.repeat(services, count)
    k = np.repeat(first_k, count) + (
        np.arange(len(who)) - np.repeat(np.cumsum(count) - count, count)
    )
    when = np.repeat(phase, count) + k * np.repeat(period, count)
    auth = habits.auth_events(who, when, rng)
    auth.proto[:] = np.where(pop.proto[who] == PROTO_KERBEROS, PROTO_KERBEROS, PROTO_OAUTH)
    return Batch.concat([auth, api, jobs])


def _batch_jobs(
    habits: Habits, jobs: Array, t0: int, dt_ms: int, rng: np.random.Generator
) -> Batch:
    """Scheduled batch jobs (profiles) overlapping the slice: a token, then a burst of calls."""
    pop = habits.pop
    traits = pop.traits
    assert traits is not None
    period = traits.batch_period_ms[jobs]
    phase = traits.batch_phase_ms[jobs]
    length = np.maximum(traits.batch_len_ms[jobs], 1)
    calls = traits.batch_calls[jobs].astype(np.float64)
    k = (t0 - phase) // period
    parts: list[Batch] = []
    for kk in (k - 1, k, k + 1):
        start = phase + kk * period
        a = np.maximum(t0, start)
        b = np.minimum(t0 + dt_ms, start + length)
        ov = b > a
        n = rng.poisson(calls[ov] * (b - a)[ov] / length[ov])
        who = np.repeat(jobs[ov], n)
        when = np.repeat(a[ov], n) + np.floor(rng.random(len(who)) * np.repeat((b - a)[ov], n))
        if len(who):
            parts.append(habits.api_events(who, when.astype(np.int64), rng))
        begins = (start >= t0) & (start < t0 + dt_ms)
        if begins.any():
            auth = habits.auth_events(jobs[begins], start[begins], rng)
            auth.proto[:] = np.where(
                pop.proto[jobs[begins]] == PROTO_KERBEROS, PROTO_KERBEROS, PROTO_OAUTH
            )
            parts.append(auth)
    return Batch.concat(parts)
