"""Labelled attack campaigns injected into the benign traffic at known times.

Each campaign targets one or more identities. Most scenarios *inject* events (the attacker's
sign-ins, the injected agent's bulk reads...); two *mutate* the victim's own traffic from a point
in time on (:class:`Mutation`: a silently swapped model digest, volumes that creep up). Every
event an attacker caused carries its campaign index in the batch column ``camp``, which only the
label book sees - the events themselves look like any other event of the same producer (same
severity rules, same id formats, same field set).

Scenarios (``SCENARIOS``):

1. ``stolen_credentials`` - sign-ins and API calls from a foreign hosting network; most victims
   signed in from home minutes earlier (impossible travel); a few failed attempts first.
2. ``prompt_injection_exfil`` - an agent reads poisoned content, then bulk-reads Confidential+
   resources and posts them to an external endpoint, stating injected rationales.
3. ``privilege_escalation`` - recon, denied then granted admin API calls never used before,
   then reads of Secret resources.
4. ``lateral_movement`` - an orchestrator delegates to agents it never used and reaches new
   services; those agents touch resources new to them.
5. ``credential_reuse`` - a step credential issued to agent A is used by agent B of the same
   chain, and later by A itself after it expired.
6. ``cloned_agent`` - the same agent uid active in two environments at the same time.
7. ``model_swap`` - an agent's model digest changes silently (same name and version); the
   rebuilt deployment also ships another tool manifest (every other campaign: another system
   prompt too).
8. ``slow_drift`` - bytes_out creeping up a few percent per day; planned only for windows of at
   least ``drift_min_window_ms`` (a day by default), since it is invisible in shorter runs.

Added with population profiles (``NEW_SCENARIOS``; planned when asked for, which every profile
but ``default`` does):

9. ``task_exfil`` - within one task of 2-4 steps an agent calls its *usual* tools (valid
   credentials, usual model, usual hours) with 25-60x its usual bytes per call (``bytes_in``
   for reads, ``bytes_out`` for writes / sends); every other campaign each call also lists
   10-40 resources of its usual resource's block in ``resources[]`` (a sweep).
10. ``novel_counterparty`` - an agent or service performs a payment / mail / invite it normally
   performs, to a counterparty (``resources[]`` ``iban:`` / ``mail:`` / ``user:``) it never used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from pipeline.simulate.batches import API, AUTH, Batch
from pipeline.simulate.behaviours import CP_ATTACK_SLOT, Habits
from pipeline.simulate.catalogue import (
    AGENT,
    CONFIG_PROMPT,
    CONFIG_TOOLS,
    HUMAN,
    PROTO_NTLM,
    PROTO_OAUTH,
    ip_blocks,
    model_digest,
)
from pipeline.simulate.chains import Segments, delegate, expand
from pipeline.simulate.seeds import Array, rng_for

__all__ = [
    "ALL_SCENARIOS",
    "NEW_SCENARIOS",
    "SCENARIOS",
    "AttackPlan",
    "Campaign",
    "Mutation",
    "default_campaigns",
    "plan_attacks",
]

SCENARIOS: Final = (
    "stolen_credentials",
    "prompt_injection_exfil",
    "privilege_escalation",
    "lateral_movement",
    "credential_reuse",
    "cloned_agent",
    "model_swap",
    "slow_drift",
)
#: Scenarios added with population profiles: planned only when asked for (every profile but
#: ``default`` asks by default), so runs of the default profile keep their campaigns.
NEW_SCENARIOS: Final = ("task_exfil", "novel_counterparty")
ALL_SCENARIOS: Final = (*SCENARIOS, *NEW_SCENARIOS)
DAY_MS: Final = 86_400_000
_MIN: Final = 60_000
_CAMP_STREAM: Final = 0x43414D50
CAMPAIGN_TASK_BASE: Final = 1 << 40  # task serials of injected tasks (same uid format as benign)

# Operations attackers favour (service, operation).
_DATA_GRAB: Final = (
    ("crm", "contacts.export"),
    ("email", "messages.read"),
    ("s3", "GetObject"),
    ("kb", "pages.search"),
    ("github", "repos.get_content"),
    ("warehouse", "query.export"),
)
_INGEST: Final = (
    ("web", "fetch"),
    ("email", "messages.read"),
    ("tickets", "tickets.get"),
    ("kb", "pages.get"),
)
_EXFIL_READS: Final = (
    ("warehouse", "query.export"),
    ("crm", "contacts.export"),
    ("s3", "GetObject"),
    ("hr", "payroll.read"),
    ("vault", "secrets.read"),
    ("payments", "payouts.read"),
)
_RECON: Final = (
    ("iam", "ListRoles"),
    ("iam", "GetUser"),
    ("iam", "ListAttachedRolePolicies"),
    ("k8s", "pods.list"),
    ("vault", "secrets.list"),
)
_LOOT: Final = (("vault", "secrets.read"), ("k8s", "secrets.get"), ("s3", "GetObject"))
_LATERAL: Final = (
    ("hr", "workers.read"),
    ("vault", "secrets.list"),
    ("warehouse", "query.select"),
    ("payments", "charges.list"),
    ("crm", "accounts.read"),
    ("github", "search.code"),
    ("s3", "ListObjectsV2"),
)
_EXFIL_KINDS: Final = (
    "research",
    "support",
    "data-analyst",
    "sales-assistant",
    "finance-assistant",
    "coding",
)


@dataclass(frozen=True, slots=True)
class Campaign:
    """One planned attack: its scenario, the identities it involves and its time span."""

    index: int
    campaign_id: str
    scenario: str
    identities: tuple[int, ...]
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class Mutation:
    """Bend a victim's own events in ``[start_ms, end_ms)`` (and label them)."""

    camp: int
    ident: int
    start_ms: int
    end_ms: int
    model: int = -1  # replace the model (index into the run's model table)
    config: int = 0  # CONFIG_TOOLS / CONFIG_PROMPT bits: configuration the events now run with
    growth_per_day: float = 0.0  # multiply bytes_out by (1 + g) ** days since start


@dataclass(slots=True)
class AttackPlan:
    """Everything the run needs to inject: campaigns, injected events (time-sorted), mutations."""

    campaigns: list[Campaign] = field(default_factory=list)
    injected: Batch = field(default_factory=Batch.empty)
    mutations: list[Mutation] = field(default_factory=list)
    extra_models: list[tuple[str, str, str]] = field(default_factory=list)

    def apply_mutations(self, b: Batch) -> None:
        """Apply every mutation to a slice's events in place (labels included)."""
        if not self.mutations or not len(b):
            return
        victims = np.fromiter((m.ident for m in self.mutations), dtype=np.int64)
        hit = np.isin(b.ident, victims)
        if not hit.any():
            return
        for m in self.mutations:
            mask = hit & (b.ident == m.ident) & (b.time >= m.start_ms) & (b.time < m.end_ms)
            if not mask.any():
                continue
            b.camp[mask] = m.camp
            if m.model >= 0:
                b.model[mask & (b.model >= 0)] = m.model
            if m.config:
                b.cfg[mask & (b.model >= 0)] |= m.config
            if m.growth_per_day:
                days = (b.time[mask] - m.start_ms) / DAY_MS
                b.bytes_out[mask] = (b.bytes_out[mask] * (1.0 + m.growth_per_day) ** days).astype(
                    np.int64
                )


def default_campaigns(identities: int, duration_s: float) -> int:
    """Campaigns per scenario: a handful, growing slowly with population times duration.

    >>> default_campaigns(100, 3600), default_campaigns(10_000, 3600)
    (1, 4)
    >>> default_campaigns(1_000_000, 86400)
    15
    """
    scale = identities * max(duration_s, 1.0) / 3600.0 / 2000.0
    return int(min(25, max(1, round(1 + math.log2(1 + scale)))))


class _Planner:
    """Picks victims (each identity in at most one campaign) and builds campaign events."""

    def __init__(self, habits: Habits, start_ms: int, end_ms: int, seed: int) -> None:
        self.h = habits
        self.pop = habits.pop
        self.cat = habits.cat
        self.start = start_ms
        self.end = end_ms
        self.seed = seed
        self.taken = np.zeros(self.pop.n, dtype=bool)
        self.plan = AttackPlan()
        self.batches: list[Batch] = []
        self.next_task = CAMPAIGN_TASK_BASE
        self.last_idents: list[int] = []  # identities the last scenario call involved
        self.ops = {name: self.cat.op_id(*name) for name in self._op_names()}

    @staticmethod
    def _op_names() -> list[tuple[str, str]]:
        return [*_DATA_GRAB, *_INGEST, *_EXFIL_READS, *_RECON, *_LOOT, *_LATERAL, ("http", "post")]

    # ---- helpers ------------------------------------------------------------------------------
    def when(self, rng: np.random.Generator, lo: float = 0.1, hi: float = 0.7) -> int:
        span = self.end - self.start
        return int(self.start + span * rng.uniform(lo, hi))

    def fit(self, t: int, span_ms: int, share: float = 0.8) -> int:
        """``span_ms`` shortened so that it ends inside the window (short runs, late starts)."""
        return max(1_000, min(span_ms, int((self.end - t) * share)))

    def free(self, cands: Array) -> Array:
        return cands[~self.taken[cands]]

    def take(self, rng: np.random.Generator, cands: Array, k: int = 1) -> list[int]:
        cands = self.free(np.asarray(cands, dtype=np.int64))
        if len(cands) == 0:
            return []
        chosen = rng.choice(cands, size=min(k, len(cands)), replace=False)
        self.taken[chosen] = True
        return [int(c) for c in chosen]

    def humans_working(self, t: int) -> Array:
        factor, _ = self.pop.human_activity(t)
        return np.flatnonzero(factor >= 1.0)

    def roots_active(self, t: int, kinds: tuple[str, ...] | None = None) -> Array:
        """Root agents whose owner is active at ``t`` (fallback: all root agents)."""
        pop = self.pop
        roots = pop.roots.astype(np.int64)
        factor = pop.owner_activity(roots, np.full(len(roots), t, dtype=np.int64))
        if kinds is not None:
            wanted = np.isin(pop.group[roots], [self.cat.group_id(AGENT, k) for k in kinds])
            roots, factor = roots[wanted], factor[wanted]
        active = self.free(roots[factor >= 0.5])
        return active if len(active) else self.free(roots)

    def op_array(
        self, rng: np.random.Generator, names: tuple[tuple[str, str], ...], n: int
    ) -> Array:
        table = np.asarray([self.ops[name] for name in names], dtype=np.int16)
        return table[rng.integers(0, len(table), n)]

    def task_ids(self, k: int) -> Array:
        ids = self.next_task + np.arange(k, dtype=np.int64)
        self.next_task += k
        return ids

    def segment(
        self,
        agent: int,
        start: int,
        n: int,
        camp: int,
        *,
        env: int | None = None,
        deleg: int | None = None,
    ) -> Segments:
        pop = self.pop
        return Segments(
            task=self.task_ids(1),
            agent=np.array([agent], dtype=np.int64),
            deleg=np.array([pop.owner[agent] if deleg is None else deleg], dtype=np.int64),
            start=np.array([start], dtype=np.int64),
            n=np.array([n], dtype=np.int64),
            env=np.array([pop.env[agent] if env is None else env], dtype=np.int8),
            camp=np.array([camp], dtype=np.int32),
        )

    def spread(self, rng: np.random.Generator, t: int, n: int, span_ms: int) -> Array:
        return np.sort(t + rng.integers(0, max(span_ms, 1), n)).astype(np.int64)

    def add(self, scenario: str, idents: list[int], batches: list[Batch]) -> int:
        """Register a campaign; its index is already stamped into ``camp`` by the caller."""
        c = len(self.plan.campaigns)
        times = [b.time[b.camp == c] for b in batches if len(b)]
        all_t = np.concatenate(times) if times else np.zeros(0, dtype=np.int64)
        lo = int(all_t.min()) if len(all_t) else self.start
        hi = int(all_t.max()) if len(all_t) else self.end
        self.plan.campaigns.append(Campaign(c, f"cmp-{c + 1:04d}", scenario, tuple(idents), lo, hi))
        self.batches.extend(batches)
        return c

    # ---- 1. stolen credentials ----------------------------------------------------------------
    def stolen_credentials(self, c: int, rng: np.random.Generator) -> list[Batch] | None:
        pop, cat, h = self.pop, self.cat, self.h
        t = self.when(rng)
        human_victim = pop.n_human > 0 and (rng.random() < 0.8 or pop.n_service == 0)
        if human_victim:
            cands = self.humans_working(t)
            if len(self.free(cands)) == 0:
                cands = np.arange(pop.n_human)
        else:
            cands = np.arange(pop.n_human, pop.n_human + pop.n_service)
        first = self.take(rng, cands)
        if not first:
            return None
        victims = first
        extra = int(rng.binomial(2, 0.35))
        if extra and human_victim:  # a phishing wave hits the victim's teammates too
            v = first[0]
            mates = np.flatnonzero(
                (pop.group[: pop.n_human] == pop.group[v])
                & (pop.team[: pop.n_human] == pop.team[v])
            )
            victims = victims + self.take(rng, mates[mates != v], extra)
        homes = [int(pop.geo[v]) for v in victims]
        countries = {cat.geo_country[g] for g in homes}
        origins = [
            i for i, g in enumerate(cat.attack_geos.tolist()) if cat.geo_country[g] not in countries
        ]
        far = [  # far enough from every victim's home that the travel would be impossible
            i
            for i in origins
            if min(cat.geo_distance_km(int(cat.attack_geos[i]), g) for g in homes) > 3000
        ]
        o = int(rng.choice(far or origins))
        geo, asn = int(cat.attack_geos[o]), int(cat.attack_asn[o])
        base = int(ip_blocks(cat.asn_number[np.array([asn])], np.array([geo]))[0])
        attacker_ip = base | (int(rng.integers(0, 1 << 10)) << 8) | int(rng.integers(1, 255))
        out: list[Batch] = []
        for i, v in enumerate(victims):
            tv = t + i * self.fit(t, int(rng.integers(1 * _MIN, 15 * _MIN)), 0.3)
            one = np.array([v], dtype=np.int64)
            if pop.kind[v] == HUMAN:
                # The real user signs in at home minutes before: impossible travel (always for
                # the first victim, so every campaign has it; sometimes for teammates).
                if i == 0 or rng.random() < 0.5:
                    logon = h.auth_events(
                        one, np.array([tv - int(rng.integers(3, 20)) * _MIN]), rng, logon_only=True
                    )
                    logon.status[:] = 1
                    out.append(logon)
                n_fail = int(rng.integers(0, 4))
                times = tv + np.cumsum(rng.integers(4_000, 40_000, n_fail + 1))
                auth = h.auth_events(np.full(n_fail + 1, v), times, rng, logon_only=True)
                auth.status[:] = 2
                auth.status[-1] = 1
                legacy = rng.random() < 0.5  # legacy protocol (no MFA) or an accepted MFA push
                auth.proto[:] = PROTO_NTLM if legacy else pop.proto[v]
                auth.mfa[:] = 0 if legacy else 1
                auth.svc[:] = cat.auth_service["sso"]
                after = int(times[-1])
            else:
                auth = h.auth_events(one, np.array([tv]), rng, logon_only=True)
                auth.proto[:] = PROTO_OAUTH
                after = tv
            n_api = int(rng.integers(8, 41))
            span = self.fit(after, int(rng.integers(10, 45)) * _MIN)
            times = self.spread(rng, after + 20_000, n_api, span)
            who = np.full(n_api, v, dtype=np.int64)
            op = h.ops(who, rng)
            grab = rng.random(n_api) < 0.35
            op[grab] = self.op_array(rng, _DATA_GRAB, int(grab.sum()))
            api = h.api_events(who, times, rng, op=op)
            api.res[:] = h.resources(who, op, rng, min_rank=pop.ceiling[who])
            api.bytes_in[:] = api.bytes_in * rng.uniform(3, 20, n_api).astype(np.int64)
            parts = [auth, api]
            if pop.kind[v] == HUMAN and rng.random() < 0.5:
                bye = h.auth_events(one, np.array([int(times[-1]) + 30_000]), rng, logon_only=True)
                bye.activity[:] = 2
                bye.status[:] = 1
                bye.mfa[:] = -1
                bye.svc[:] = cat.auth_service["sso"]
                parts.append(bye)
            for b in parts:
                b.geo[:] = geo
                b.asn[:] = asn
                b.ip[:] = attacker_ip
                b.camp[:] = c
            out.extend(parts)
        self.last_idents = victims
        return out

    # ---- 2. prompt-injected agent exfiltrating --------------------------------------------------
    def prompt_injection_exfil(self, c: int, rng: np.random.Generator) -> list[Batch] | None:
        pop, cat, h = self.pop, self.cat, self.h
        t = self.when(rng)
        victim = self.take(rng, self.roots_active(t, _EXFIL_KINDS))
        if not victim:
            return None
        v = victim[0]
        n_bulk = int(rng.integers(15, 61))
        b = expand(h, self.segment(v, t, 1 + n_bulk, c), rng, gap_ms=1200.0)
        b.camp[(b.eclass == AUTH) | (b.step == 1)] = -1  # the poisoned read itself looks normal
        first = np.flatnonzero((b.eclass == API) & (b.step == 1))
        b.op[first] = self.op_array(rng, _INGEST, len(first))
        self._refresh(b, first, rng)
        bulk = np.flatnonzero((b.eclass == API) & (b.step >= 2))
        b.status[bulk] = 1
        send = bulk[(rng.random(len(bulk)) < 0.3) & (b.step[bulk] > 2)]
        read = np.setdiff1d(bulk, send)
        b.op[read] = self.op_array(rng, _EXFIL_READS, len(read))
        floor_rank = np.clip(np.maximum(2, pop.ceiling[b.ident[read]] + 1), 2, 5)
        self._refresh(b, read, rng, min_rank=floor_rank)
        b.bytes_in[read] = rng.lognormal(np.log(30e6), 1.0, len(read)).astype(np.int64)
        b.op[send] = self.ops[("http", "post")]
        self._refresh(b, send, rng)
        b.res[send] = cat.exfil_sinks[rng.integers(0, len(cat.exfil_sinks), len(send))]
        b.bytes_out[send] = rng.lognormal(np.log(60e6), 1.0, len(send)).astype(np.int64)
        start, count = cat.injected_why
        b.why[bulk] = start + rng.integers(0, count, len(bulk))
        self.last_idents = victim
        return [b]

    # ---- 3. privilege escalation --------------------------------------------------------------
    def privilege_escalation(self, c: int, rng: np.random.Generator) -> list[Batch] | None:
        pop, cat, h = self.pop, self.cat, self.h
        t = self.when(rng)
        u = rng.random()
        non_admin = ~cat.group_admin[pop.group]
        if u < 0.5 and pop.n_human:
            cands = self.humans_working(t)
            cands = cands[non_admin[cands]]
            if len(self.free(cands)) == 0:
                cands = np.flatnonzero(non_admin[: pop.n_human])
        elif u < 0.75 and pop.n_service:
            cands = pop.n_human + np.flatnonzero(
                non_admin[pop.n_human : pop.n_human + pop.n_service]
            )
        else:
            cands = self.roots_active(t)
        victim = self.take(rng, cands)
        if not victim:
            return None
        v = victim[0]
        n_recon, n_fail, n_ok, n_use = (
            int(rng.integers(a, b)) for a, b in ((2, 5), (2, 6), (1, 4), (3, 11))
        )
        ops = np.concatenate(
            [
                self.op_array(rng, _RECON, n_recon),
                rng.choice(cat.admin_ops(), n_fail + n_ok).astype(np.int16),
                self.op_array(rng, _LOOT, n_use),
            ]
        )
        n = len(ops)
        if pop.kind[v] == AGENT:
            b = expand(h, self.segment(v, t, n, c), rng, gap_ms=20_000.0)
            b.camp[b.eclass == AUTH] = -1
            rows = np.flatnonzero(b.eclass == API)
            start, count = cat.escalation_why
            b.why[rows] = start + rng.integers(0, count, n)
        else:
            times = self.spread(rng, t, n, self.fit(t, int(rng.integers(10, 30)) * _MIN))
            b = h.api_events(np.full(n, v, dtype=np.int64), times, rng, op=ops)
            b.camp[:] = c
            rows = np.arange(n)
        b.op[rows] = ops
        b.status[rows] = 1
        b.status[rows[n_recon : n_recon + n_fail]] = 2  # denied before the grant succeeds
        self._refresh(b, rows[: n - n_use], rng)
        self._refresh(b, rows[n - n_use :], rng, min_rank=np.full(n_use, 4))
        self.last_idents = victim
        return [b]

    # ---- 4. lateral movement ------------------------------------------------------------------
    def lateral_movement(self, c: int, rng: np.random.Generator) -> list[Batch] | None:
        pop, cat, h = self.pop, self.cat, self.h
        t = self.when(rng, 0.1, 0.6)
        orch = self.roots_active(t, ("orchestrator",))
        victim = self.take(rng, orch)
        if not victim:
            return None
        v = victim[0]
        agents = self.free(np.arange(pop.n_human + pop.n_service, pop.n, dtype=np.int64))
        slots = np.arange(int(pop.team_size[v]))
        team = pop.team_member(np.full(len(slots), v), slots)
        strangers = agents[~np.isin(agents, team) & (agents != v)]
        downstream = self.take(rng, strangers, int(rng.integers(2, 5)))
        if not downstream:
            self.taken[v] = False
            return None
        span = self.fit(t, int(rng.integers(20, 60)) * _MIN)
        n_tasks = int(rng.integers(2, 4))
        out: list[Batch] = []
        lat_start, lat_count = cat.lateral_why
        for j in range(n_tasks):
            ts = t + j * span // n_tasks + int(rng.integers(0, _MIN))
            b = expand(h, self.segment(v, ts, int(rng.integers(4, 9)), c), rng)
            api = np.flatnonzero(b.eclass == API)
            k = min(len(api) - 1, int(rng.integers(1, 3)))
            rows = api[1 : 1 + k]
            workers = np.asarray(
                [downstream[(j + i) % len(downstream)] for i in range(k)], dtype=np.int64
            )
            sub = delegate(h, b, rows, workers, rng, camp=c)
            own = api[1 + k :]
            wander = own[rng.random(len(own)) < 0.5]
            self._wander(b, wander, rng)
            b.why[wander] = lat_start + rng.integers(0, lat_count, len(wander))
            sb = expand(h, sub, rng)
            rows = np.flatnonzero((sb.eclass == API) & (rng.random(len(sb)) < 0.5))
            self._wander(sb, rows, rng)
            out.extend([b, sb])
        self.last_idents = [v, *downstream]
        return out

    def _wander(self, b: Batch, rows: Array, rng: np.random.Generator) -> None:
        """Calls to services the identity does not use, on sensitive resources."""
        b.op[rows] = self.op_array(rng, _LATERAL, len(rows))
        self._refresh(b, rows, rng, min_rank=np.full(len(rows), 2))

    # ---- 5. task credential reuse -------------------------------------------------------------
    def credential_reuse(self, c: int, rng: np.random.Generator) -> list[Batch] | None:
        pop, h = self.pop, self.h
        t = self.when(rng, 0.1, 0.5)
        orchs = self.roots_active(t, ("orchestrator",))
        rng.shuffle(orchs)
        for o in orchs.tolist()[:200]:
            slots = np.arange(int(pop.team_size[o]))
            members = [
                m
                for m in dict.fromkeys(pop.team_member(np.full(len(slots), o), slots).tolist())
                if m >= 0
            ]
            members = [m for m in members if not self.taken[m]]
            if len(members) >= 2:
                break
        else:
            return None
        self.taken[[o, *members[:2]]] = True
        a, b_agent = members[0], members[1]
        root = expand(h, self.segment(o, t, 4, -1), rng)
        rows = np.flatnonzero((root.eclass == API) & ((root.step == 2) | (root.step == 3)))
        sub = delegate(h, root, rows, np.array([a, b_agent], dtype=np.int64), rng)
        n_reuse = int(rng.integers(2, 6))
        sub.n[:] = [3, 2 + n_reuse]
        sb = expand(h, sub, rng)
        a_steps = np.flatnonzero((sb.eclass == API) & (sb.ident == a))
        b_steps = np.flatnonzero((sb.eclass == API) & (sb.ident == b_agent) & (sb.step > 2))
        stolen = a_steps[rng.integers(0, len(a_steps), len(b_steps))]
        sb.cred_to[b_steps] = a
        sb.cred_step[b_steps] = sb.cred_step[stolen]
        sb.cred_exp[b_steps] = sb.cred_exp[stolen]
        sb.camp[b_steps] = c
        # Later, A calls again with the credential of its last step, long expired.
        last = a_steps[-1]
        n_late = int(rng.integers(1, 5))
        expired = int(sb.cred_exp[last])
        # Minutes after expiry, but inside the window so the misuse is actually emitted.
        late_from = min(expired + int(rng.integers(5, 40)) * _MIN, self.end - 3 * _MIN)
        late_from = max(late_from, expired + 1_000)
        late_t = self.spread(
            rng, late_from, n_late, max(1_000, min(10 * _MIN, self.end - late_from - 1))
        )
        who = np.full(n_late, a, dtype=np.int64)
        late = expand(
            h,
            Segments(
                task=np.full(n_late, sb.task[last]),
                agent=who,
                deleg=np.full(n_late, o),
                start=late_t,
                n=np.ones(n_late, dtype=np.int64),
                env=pop.env[who],
                camp=np.full(n_late, c, dtype=np.int32),
            ),
            rng,
            sign_in=False,
        )
        late.step[:] = sb.step[last]
        late.cred_step[:] = sb.cred_step[last]
        late.cred_exp[:] = sb.cred_exp[last]
        self.last_idents = [b_agent, a]
        return [root, sb, late]

    # ---- 6. cloned agent ----------------------------------------------------------------------
    def cloned_agent(self, c: int, rng: np.random.Generator) -> list[Batch] | None:
        pop, cat, h = self.pop, self.cat, self.h
        t = self.when(rng, 0.1, 0.6)
        victim = self.take(rng, self.roots_active(t))
        if not victim:
            return None
        v = victim[0]
        span = self.fit(t, int(rng.integers(30, 90)) * _MIN)
        home_env = int(pop.env[v])
        other = int(rng.choice([e for e in range(len(cat.env_name)) if e != home_env]))
        out: list[Batch] = []
        for env, camp, k in (
            (home_env, -1, int(rng.integers(2, 5))),
            (other, c, int(rng.integers(2, 6))),
        ):
            for ts in self.spread(rng, t, k, span).tolist():
                steps = 1 + int(rng.poisson(max(float(pop.steps[v]) - 1.0, 0.0)))
                out.append(expand(h, self.segment(v, ts, steps, camp, env=env), rng))
        self.last_idents = victim
        return out

    # ---- 7. model swap ------------------------------------------------------------------------
    def model_swap(self, c: int, rng: np.random.Generator) -> list[Batch] | None:
        pop, cat, h = self.pop, self.cat, self.h
        t = self.when(rng, 0.2, 0.7)
        victim = self.take(rng, self.roots_active(t))
        if not victim:
            return None
        v = victim[0]
        base = int(pop.model[v])
        name, version = cat.model_name[base], cat.model_version[base]
        digest = model_digest(name, version, salt=f"#rebuilt-{self.seed}-{c}")
        variant = len(cat.model_name) + len(self.plan.extra_models)
        self.plan.extra_models.append((name, version, digest))
        # The attacker's rebuilt image brings its own tools (and, every other time, prompt).
        config = CONFIG_TOOLS | (CONFIG_PROMPT if c % 2 else 0)
        self.plan.mutations.append(Mutation(c, v, t, self.end, model=variant, config=config))
        out = []
        for ts in self.spread(rng, t, int(rng.integers(2, 4)), self.fit(t, 30 * _MIN)).tolist():
            steps = 1 + int(rng.poisson(max(float(pop.steps[v]) - 1.0, 0.0)))
            out.append(expand(h, self.segment(v, ts, steps, -1), rng))
        self.last_idents = victim
        return out  # labelled by the mutation, like the victim's benign traffic after t

    # ---- 8. slow drift ------------------------------------------------------------------------
    def slow_drift(self, c: int, rng: np.random.Generator) -> list[Batch] | None:
        pop = self.pop
        u = rng.random()
        if u < 0.5 and pop.n_service:
            cands = np.arange(pop.n_human, pop.n_human + pop.n_service)
        elif u < 0.75 and pop.n_human:
            cands = self.humans_working(self.when(rng))
        else:
            cands = pop.roots.astype(np.int64)
        victim = self.take(rng, cands)
        if not victim:
            return None
        t = self.when(rng, 0.02, 0.1)
        growth = float(rng.uniform(0.03, 0.06))
        self.plan.mutations.append(Mutation(c, victim[0], t, self.end, growth_per_day=growth))
        self.last_idents = victim
        return []

    # ---- 9. bulk exfiltration through the usual tools, inside one task ------------------------
    def usual_ops(self, v: int, rng: np.random.Generator, k: int = 400) -> tuple[Array, Array]:
        """The operations identity ``v`` habitually calls and how often (a sample of ``k``)."""
        ops, counts = np.unique(self.h.ops(np.full(k, v, dtype=np.int64), rng), return_counts=True)
        common = counts >= max(4, int(0.03 * k))
        return ops[common].astype(np.int16), counts[common]

    def task_exfil(self, c: int, rng: np.random.Generator) -> list[Batch] | None:
        pop, cat, h = self.pop, self.cat, self.h
        t = self.when(rng)
        cands = self.roots_active(t)
        # An agent with a real routine (the busier quarter): its usual tools are well known.
        busy = pop.api_rate[cands] * pop.steps[cands]
        cands = cands[busy >= np.quantile(busy, 0.75)] if len(cands) >= 4 else cands
        victim = self.take(rng, cands)
        if not victim:
            return None
        v = victim[0]
        ops, counts = self.usual_ops(v, rng)
        if not len(ops):
            self.taken[v] = False
            return None
        b = expand(h, self.segment(v, t, int(rng.integers(2, 5)), c), rng)
        b.camp[b.eclass == AUTH] = -1  # the task token itself is ordinary
        rows = np.flatnonzero(b.eclass == API)
        b.op[rows] = rng.choice(ops, size=len(rows), p=counts / counts.sum())
        b.status[rows] = 1
        self._refresh(b, rows, rng)
        op = b.op[rows]
        factor = rng.uniform(25.0, 60.0, len(rows))
        reads = np.asarray([cat.op_verb[o] == "r" for o in op.tolist()], dtype=bool)
        usual_in = np.exp(pop.in_mu[v] + cat.op_in_adj[op])
        usual_out = np.exp(pop.out_mu[v] + cat.op_out_adj[op])
        if c % 2:  # every other campaign: each call also sweeps 10-40 resources at once
            wide = rows[b.res[rows] >= 0]
            b.res_more[wide] = rng.integers(10, 41, len(wide))
        b.bytes_in[rows[reads]] = (usual_in * factor)[reads].astype(np.int64)
        b.bytes_out[rows[~reads]] = (usual_out * factor)[~reads].astype(np.int64)
        self.last_idents = victim
        return [b]

    # ---- 10. a write / send to a counterparty never used before -------------------------------
    def novel_counterparty(self, c: int, rng: np.random.Generator) -> list[Batch] | None:
        pop, h = self.pop, self.h
        t = self.when(rng)
        agents = self.roots_active(t)
        services = self.free(np.arange(pop.n_human, pop.n_human + pop.n_service, dtype=np.int64))
        pool = np.concatenate([agents, services])
        if not len(pool):
            return None
        cands = rng.permutation(pool)[:400]
        k = 200
        sample = h.ops(np.repeat(cands, k), rng)
        sends = (h.cp_kind[sample] >= 0).reshape(len(cands), k)
        share = sends.mean(axis=1)
        eligible = cands[share >= 0.02]
        if not len(eligible):
            return None
        is_agent = pop.kind[eligible] == AGENT
        prefer = eligible[is_agent] if is_agent.any() and rng.random() < 0.7 else eligible
        victim = self.take(rng, prefer)
        if not victim:
            return None
        v = victim[0]
        row = int(np.flatnonzero(cands == v)[0])
        own = sample[row * k : (row + 1) * k]
        own = own[h.cp_kind[own] >= 0]
        vals, counts = np.unique(own, return_counts=True)
        op = int(vals[np.argmax(counts)])
        cpty = int(h.counterparty_ids(v, int(h.cp_kind[op]), CP_ATTACK_SLOT + c)[0])
        n_send = int(rng.integers(1, 4))
        if pop.kind[v] == AGENT:
            b = expand(h, self.segment(v, t, n_send + int(rng.integers(1, 3)), c), rng)
            api = np.flatnonzero(b.eclass == API)
            rows = api[-n_send:]
            b.camp[:] = -1  # the rest of the task is the agent's ordinary work
        else:
            times = self.spread(rng, t, n_send, self.fit(t, int(rng.integers(1, 10)) * _MIN))
            b = h.api_events(np.full(n_send, v, dtype=np.int64), times, rng)
            rows = np.arange(n_send)
        b.op[rows] = op
        b.status[rows] = 1
        self._refresh(b, rows, rng)
        b.cpty[rows] = cpty
        b.camp[rows] = c
        self.last_idents = victim
        return [b]

    # ---- shared ---------------------------------------------------------------------------------
    def _refresh(
        self, b: Batch, rows: Array, rng: np.random.Generator, min_rank: Array | None = None
    ) -> None:
        """After changing the ops of ``rows``: recompute activity, service, resource, volumes."""
        cat = self.cat
        op = b.op[rows]
        who = b.ident[rows]
        b.activity[rows] = cat.op_activity[op]
        b.svc[rows] = cat.op_service[op]
        b.peer[rows] = -1
        b.res[rows] = self.h.resources(who, op, rng, min_rank=min_rank)
        b_in, b_out = self.h.volumes(who, op, b.status[rows], rng)
        b.bytes_in[rows] = b_in
        b.bytes_out[rows] = b_out
        if self.h.with_counterparties:
            b.cpty[rows] = self.h.counterparties(who, op, b.time[rows], rng)
        stated = rows[b.why[rows] >= 0]  # agents explain each call: keep the reason on topic
        b.why[stated] = self.h.rationale(b.op[stated], rng)

    def run(
        self, per_scenario: int, scenarios: tuple[str, ...], drift_min_window_ms: int
    ) -> AttackPlan:
        for s_idx, scenario in enumerate(ALL_SCENARIOS):
            if scenario not in scenarios:
                continue
            if scenario == "slow_drift" and self.end - self.start < drift_min_window_ms:
                continue
            for j in range(per_scenario):
                rng = rng_for(self.seed, _CAMP_STREAM, s_idx, j)
                c = len(self.plan.campaigns)
                self.last_idents = []
                batches = getattr(self, scenario)(c, rng)
                if batches is None:
                    continue
                self.add(scenario, self.last_idents, batches)
                if scenario in ("model_swap", "slow_drift"):
                    m = self.plan.mutations[-1]
                    camp = self.plan.campaigns[-1]
                    self.plan.campaigns[-1] = Campaign(
                        camp.index,
                        camp.campaign_id,
                        scenario,
                        camp.identities,
                        m.start_ms,
                        m.end_ms,
                    )
        injected = Batch.concat(self.batches)
        injected = injected.take((injected.time >= self.start) & (injected.time < self.end))
        self.plan.injected = injected.take(injected.time_order())
        return self.plan


def plan_attacks(
    habits: Habits,
    start_ms: int,
    end_ms: int,
    seed: int,
    *,
    per_scenario: int | None = None,
    scenarios: tuple[str, ...] = SCENARIOS,
    drift_min_window_ms: int = DAY_MS,
) -> AttackPlan:
    """Plan every campaign of a run over ``[start_ms, end_ms)`` (deterministic for a seed)."""
    unknown = set(scenarios) - set(ALL_SCENARIOS)
    if unknown:
        raise ValueError(f"unknown scenarios: {sorted(unknown)}")
    if per_scenario is None:
        per_scenario = default_campaigns(habits.pop.n, (end_ms - start_ms) / 1000.0)
    return _Planner(habits, start_ms, end_ms, seed).run(
        per_scenario, scenarios, drift_min_window_ms
    )
